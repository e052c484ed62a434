import { OciError } from '../errors.ts';
import { bareMediaType, parseByteRange, parseChunkRange, parsePageSize } from './headers.ts';

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
  it.each(['abc', '5-', '-5', '9-5'])('rejects %p with RANGE_INVALID', (header) => {
    expect(() => parseChunkRange(header)).toThrow(OciError);
  });
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
  it('ignores what it does not serve', () => {
    expect(parseByteRange('bytes=0-1,5-6', 100)).toBeUndefined();
    expect(parseByteRange('items=0-1', 100)).toBeUndefined();
  });
  it('refuses a start past the end with 416 and the size', () => {
    try {
      parseByteRange('bytes=100-', 100);
      throw new Error('expected a RANGE_INVALID');
    } catch (error) {
      expect((error as OciError).status).toBe(416);
      expect((error as OciError).headers['Content-Range']).toBe('bytes */100');
    }
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
