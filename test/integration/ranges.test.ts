import { createHash, randomBytes } from 'node:crypto';
import { errorCode, rawRequest } from '../support/http.ts';
import { temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';

/**
 * Range requests on blobs and Content-Range on upload chunks, against a real `berth registry`,
 * answered as RFC 9110 says: a satisfiable single range is 206, an unsatisfiable range set is
 * 416 with `Content-Range: bytes *\/<size>`, and a Range that is not a valid byte range set (or
 * is on a HEAD, or fails its If-Range) is ignored for the whole blob.
 */
const sha256 = (data: Buffer | string) =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('ranges', () => {
  let registry: RegistryProcess;
  let storage: Awaited<ReturnType<typeof temporaryDirectory>>;
  const blob = randomBytes(100);
  const digest = sha256(blob);
  const empty = Buffer.alloc(0);

  const send = (method: string, path: string, options?: Parameters<typeof rawRequest>[3]) =>
    rawRequest(registry.host, method, path, options);

  async function pushBlob(data: Buffer): Promise<void> {
    const response = await send('POST', `/v2/ranges/app/blobs/uploads/?digest=${sha256(data)}`, {
      body: data,
      headers: { 'Content-Length': data.length },
    });
    expect(response.status).toBe(201);
  }

  beforeAll(async () => {
    storage = await temporaryDirectory('ranges');
    registry = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
    await pushBlob(blob);
    await pushBlob(empty);
  });

  afterAll(async () => {
    await registry?.stop();
    await storage?.remove();
  });

  async function get(range: string, extra: Record<string, string> = {}, of = digest) {
    const response = await send('GET', `/v2/ranges/app/blobs/${of}`, {
      headers: { Range: range, ...extra },
    });
    return {
      status: response.status,
      contentRange: response.headers['content-range'],
      length: Number(response.headers['content-length']),
      body: response.body,
      code: errorCode(response),
    };
  }

  it.each([
    ['bytes=10-19', 10, 19],
    ['bytes=90-', 90, 99],
    ['bytes=99-', 99, 99],
    ['bytes=0-1000', 0, 99],
    ['bytes=-10', 90, 99],
    ['bytes=-1000', 0, 99],
    ['BYTES=5-9', 5, 9],
    ['bytes=5-9, 200-300', 5, 9],
    ['bytes=, 5-9', 5, 9],
  ])('serves %p as 206 %p-%p', async (range, start, end) => {
    const answer = await get(range);
    expect({ status: answer.status, contentRange: answer.contentRange }).toEqual({
      status: 206,
      contentRange: `bytes ${start}-${end}/100`,
    });
    expect(answer.body.equals(blob.subarray(start, end + 1))).toBe(true);
    expect(answer.length).toBe(end - start + 1);
  });

  it.each([
    'bytes=100-',
    'bytes=101-',
    'bytes=150-',
    'bytes=99999999999999999999-',
    'bytes=100-200',
    'bytes=-0',
    'bytes=150-160, 200-',
  ])('refuses %p with 416 and the size', async (range) => {
    const answer = await get(range);
    expect({ status: answer.status, contentRange: answer.contentRange, code: answer.code }).toEqual(
      { status: 416, contentRange: 'bytes */100', code: 'RANGE_INVALID' },
    );
  });

  it.each([
    'bytes=5-3',
    'bytes=150-100',
    'bytes=abc',
    'bytes=1-2-3',
    'bytes=-',
    'bytes=',
    'bytes 0-5',
    '0-5',
    'items=0-5',
    'garbage',
    'bytes=0-1, 5-6',
    'bytes=0-1, 9-3',
  ])('answers %p with the whole blob', async (range) => {
    const answer = await get(range);
    expect({ status: answer.status, contentRange: answer.contentRange }).toEqual({
      status: 200,
      contentRange: undefined,
    });
    expect(answer.body.equals(blob)).toBe(true);
  });

  it('ignores Range on HEAD, and when If-Range names another validator', async () => {
    const head = await send('HEAD', `/v2/ranges/app/blobs/${digest}`, {
      headers: { Range: 'bytes=150-' },
    });
    expect({ status: head.status, length: head.headers['content-length'] }).toEqual({
      status: 200,
      length: '100',
    });
    const stale = await get('bytes=10-19', { 'If-Range': '"sha256:other"' });
    expect({ status: stale.status, length: stale.length }).toEqual({ status: 200, length: 100 });
    const dated = await get('bytes=10-19', { 'If-Range': 'Wed, 21 Oct 2015 07:28:00 GMT' });
    expect(dated.status).toBe(200);
    const current = await get('bytes=10-19', { 'If-Range': `"${digest}"` });
    expect({ status: current.status, contentRange: current.contentRange }).toEqual({
      status: 206,
      contentRange: 'bytes 10-19/100',
    });
  });

  it('answers an empty blob: no byte range is satisfiable, a suffix is the whole', async () => {
    const from = await get('bytes=0-', {}, sha256(empty));
    expect({ status: from.status, contentRange: from.contentRange }).toEqual({
      status: 416,
      contentRange: 'bytes */0',
    });
    const suffix = await get('bytes=-5', {}, sha256(empty));
    expect({ status: suffix.status, length: suffix.length }).toEqual({ status: 200, length: 0 });
  });

  it.each(['5-3', 'garbage', '0-', '-5', '0-99999999999999999999', '0-9/5'])(
    'refuses the chunk Content-Range %p with 416 and stores nothing',
    async (contentRange) => {
      const started = await send('POST', '/v2/ranges/app/blobs/uploads/');
      const location = started.headers.location as string;
      const chunk = await send('PATCH', location, {
        body: randomBytes(10),
        headers: { 'Content-Range': contentRange, 'Content-Length': 10 },
      });
      expect({ status: chunk.status, code: errorCode(chunk) }).toEqual({
        status: 416,
        code: 'RANGE_INVALID',
      });
      const status = await send('GET', location);
      expect(status.headers.range).toBe('0-0');
      expect((await send('DELETE', location)).status).toBe(204);
    },
  );
});
