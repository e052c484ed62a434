import { OciError } from '../errors.ts';
import {
  bareMediaType,
  parseByteRange,
  parseChunkRange,
  parsePageSize,
  rangeApplies,
} from './headers.ts';

describe('parseChunkRange', () => {
  it('reads start-end without a unit, as the spec writes it', () => {
    expect(parseChunkRange('0-99')).toEqual({ start: 0, length: 100 });
    expect(parseChunkRange('100-100')).toEqual({ start: 100, length: 1 });
  });
  it('tolerates a bytes unit', () => {
    expect(parseChunkRange('bytes=5-9')).toEqual({ start: 5, length: 5 });
  });
  it('is absent when the header is', () => {
    expect(parseChunkRange(undefined)).toBeUndefined();
  });
  it('reads a total the range fits in', () => {
    expect(parseChunkRange('0-9/10')).toEqual({ start: 0, length: 10 });
    expect(parseChunkRange('bytes 0-9/*')).toEqual({ start: 0, length: 10 });
  });
  it.each(['abc', '5-', '-5', '9-5', '0-9/5', '0-99999999999999999999', '0-1,2-3'])(
    'rejects %p with RANGE_INVALID',
    (header) => {
      expect(() => parseChunkRange(header)).toThrow(OciError);
    },
  );
});

describe('parseByteRange', () => {
  it('serves bytes=N- to the end (containerd resume)', () => {
    expect(parseByteRange('bytes=10-', 100)).toEqual({ start: 10, end: 99 });
  });
  it('clips an end past the blob', () => {
    expect(parseByteRange('bytes=0-1000', 100)).toEqual({ start: 0, end: 99 });
  });
  it('serves a suffix', () => {
    expect(parseByteRange('bytes=-10', 100)).toEqual({ start: 90, end: 99 });
  });
  it('reads the unit in any case, and skips empty list elements', () => {
    expect(parseByteRange('Bytes=1-2', 100)).toEqual({ start: 1, end: 2 });
    expect(parseByteRange('bytes=, 1-2 ,', 100)).toEqual({ start: 1, end: 2 });
  });
  it('serves the one satisfiable range of several', () => {
    expect(parseByteRange('bytes=1-2, 500-', 100)).toEqual({ start: 1, end: 2 });
  });
  it.each(['bytes=0-1,5-6', 'items=0-1', 'bytes=5-3', 'bytes=0-1,9-3', 'bytes=x', 'bytes=', '0-5'])(
    'ignores %p: the whole blob',
    (header) => {
      expect(parseByteRange(header, 100)).toBeUndefined();
    },
  );
  it('answers a suffix of an empty blob with the whole of it', () => {
    expect(parseByteRange('bytes=-5', 0)).toBeUndefined();
  });
  it.each([
    ['bytes=100-', 100],
    ['bytes=101-', 100],
    ['bytes=150-200', 100],
    ['bytes=-0', 100],
    ['bytes=200-, 300-400', 100],
    ['bytes=0-', 0],
  ])('refuses %p of %p bytes with 416 and the size', (header, size) => {
    try {
      parseByteRange(header, size);
      throw new Error('expected a RANGE_INVALID');
    } catch (error) {
      expect((error as OciError).status).toBe(416);
      expect((error as OciError).headers['Content-Range']).toBe(`bytes */${size}`);
    }
  });
});

describe('rangeApplies', () => {
  it('applies to GET only, and only with a matching If-Range', () => {
    expect(rangeApplies('GET', undefined, '"sha256:a"')).toBe(true);
    expect(rangeApplies('HEAD', undefined, '"sha256:a"')).toBe(false);
    expect(rangeApplies('GET', '"sha256:a"', '"sha256:a"')).toBe(true);
    expect(rangeApplies('GET', '"sha256:b"', '"sha256:a"')).toBe(false);
    expect(rangeApplies('GET', 'Wed, 21 Oct 2015 07:28:00 GMT', '"sha256:a"')).toBe(false);
  });
});

describe('bareMediaType and parsePageSize', () => {
  it('strips parameters', () => {
    expect(bareMediaType('application/vnd.oci.image.manifest.v1+json; charset=utf-8')).toBe(
      'application/vnd.oci.image.manifest.v1+json',
    );
  });
  it('bounds n and rejects junk', () => {
    expect(parsePageSize('5', 100)).toBe(5);
    expect(parsePageSize('5000', 1000)).toBe(1000);
    expect(() => parsePageSize('-1', 100)).toThrow(OciError);
    expect(() => parsePageSize('x', 100)).toThrow(OciError);
  });
});
