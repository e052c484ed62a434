import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { checkConsistency } from '../../src/registry/service/consistency.ts';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import {
  abandonUpload,
  errorCode,
  rawRequest,
  sendSlowly,
  type RawResponse,
} from '../support/http.ts';
import { temporaryDirectory, waitFor } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';

/**
 * Hostile and broken requests against a real `berth registry` process. Each gets the protocol's
 * own answer, and afterwards storage is checked: no partial blob, no link to missing content,
 * no manifest naming a blob its repository lacks.
 */
const ociManifest = 'application/vnd.oci.image.manifest.v1+json';

function digestOf(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

describe('bad input', () => {
  let registry: RegistryProcess;
  let storage: Awaited<ReturnType<typeof temporaryDirectory>>;
  let host: string;
  const config = Buffer.from(
    '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
  );

  const send = (method: string, path: string, options?: Parameters<typeof rawRequest>[3]) =>
    rawRequest(host, method, path, options);

  /** A chunk PATCH with Content-Range and an explicit Content-Length (maybe not the body's). */
  const patchChunk = (location: string, body: Buffer, range: string, length: number) =>
    send('PATCH', location, {
      body,
      headers: { 'Content-Range': range, 'Content-Length': length },
    });

  const putManifest = (path: string, body: Buffer | string) =>
    send('PUT', path, { body, headers: { 'Content-Type': ociManifest } });

  async function expectError(
    response: Promise<RawResponse>,
    status: number,
    code: string,
  ): Promise<void> {
    const answer = await response;
    expect({ status: answer.status, code: errorCode(answer) }).toEqual({ status, code });
  }

  async function pushBlob(repository: string, data: Buffer): Promise<string> {
    const digest = digestOf(data);
    const response = await send('POST', `/v2/${repository}/blobs/uploads/?digest=${digest}`, {
      body: data,
      headers: { 'Content-Length': data.length, 'Content-Type': 'application/octet-stream' },
    });
    expect(response.status).toBe(201);
    return digest;
  }

  async function startUpload(repository: string): Promise<string> {
    const response = await send('POST', `/v2/${repository}/blobs/uploads/`);
    expect(response.status).toBe(202);
    return response.headers.location as string;
  }

  async function uploadSize(location: string): Promise<number> {
    const response = await send('GET', location);
    expect(response.status).toBe(204);
    const [, end] = /^0-(\d+)$/.exec(response.headers.range as string) ?? [];
    return Number(end) === 0 ? 0 : Number(end) + 1;
  }

  function manifestFor(configDigest: string, layers: { digest: string; size: number }[]): Buffer {
    return Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: ociManifest,
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: configDigest,
          size: config.length,
        },
        layers: layers.map((layer) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          ...layer,
        })),
      }),
    );
  }

  beforeAll(async () => {
    storage = await temporaryDirectory('bad-input');
    registry = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
    host = registry.host;
  });

  afterAll(async () => {
    await registry?.stop();
    await storage?.remove();
  });

  describe('manifests', () => {
    it('refuses malformed JSON and schema violations with MANIFEST_INVALID', async () => {
      for (const body of [
        '{not json',
        '[]',
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}',
        '{"schemaVersion":1}',
      ]) {
        await expectError(putManifest('/v2/bad/manifests/v1', body), 400, 'MANIFEST_INVALID');
      }
    });

    it('refuses a manifest over 4 MiB with 413 before storing anything', async () => {
      const configDigest = await pushBlob('bad/large', config);
      const padding = 'x'.repeat(4 * 1024 * 1024);
      const manifest = JSON.stringify({
        schemaVersion: 2,
        mediaType: ociManifest,
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: configDigest,
          size: config.length,
        },
        layers: [],
        annotations: { padding },
      });
      await expectError(putManifest('/v2/bad/large/manifests/v1', manifest), 413, 'SIZE_INVALID');
      await expectError(send('GET', '/v2/bad/large/manifests/v1'), 404, 'MANIFEST_UNKNOWN');
    });

    it('answers 413 to an oversized manifest sent without a Content-Length', async () => {
      const body = Buffer.alloc(5 * 1024 * 1024, 0x20);
      await expectError(
        send('PUT', '/v2/bad/large/manifests/chunked', {
          body,
          headers: { 'Content-Type': ociManifest, 'Transfer-Encoding': 'chunked' },
        }),
        413,
        'SIZE_INVALID',
      );
    });

    it('refuses a manifest that names a missing blob with MANIFEST_BLOB_UNKNOWN', async () => {
      const configDigest = await pushBlob('bad/missing', config);
      const manifest = manifestFor(configDigest, [{ digest: digestOf('never pushed'), size: 12 }]);
      await expectError(
        putManifest('/v2/bad/missing/manifests/v1', manifest),
        400,
        'MANIFEST_BLOB_UNKNOWN',
      );
      await expectError(send('GET', '/v2/bad/missing/manifests/v1'), 404, 'MANIFEST_UNKNOWN');
    });

    it('refuses a blob that only another repository has (no cross-tenant reference)', async () => {
      const layer = randomBytes(100);
      const layerDigest = await pushBlob('bad/owner', layer);
      const configDigest = await pushBlob('bad/thief', config);
      const manifest = manifestFor(configDigest, [{ digest: layerDigest, size: layer.length }]);
      await expectError(
        putManifest('/v2/bad/thief/manifests/v1', manifest),
        400,
        'MANIFEST_BLOB_UNKNOWN',
      );
      await expectError(send('GET', `/v2/bad/thief/blobs/${layerDigest}`), 404, 'BLOB_UNKNOWN');
    });

    it('refuses a manifest pushed under a digest it does not have', async () => {
      const configDigest = await pushBlob('bad/digest', config);
      const manifest = manifestFor(configDigest, []);
      await expectError(
        putManifest(`/v2/bad/digest/manifests/${digestOf('something else')}`, manifest),
        400,
        'DIGEST_INVALID',
      );
    });

    it('refuses a mediaType that contradicts the Content-Type', async () => {
      const configDigest = await pushBlob('bad/type', config);
      const manifest = manifestFor(configDigest, []);
      await expectError(
        send('PUT', '/v2/bad/type/manifests/v1', {
          body: manifest,
          headers: { 'Content-Type': 'application/vnd.docker.distribution.manifest.v2+json' },
        }),
        400,
        'MANIFEST_INVALID',
      );
    });

    it('treats an invalid tag as unknown on read and invalid on write', async () => {
      await expectError(
        send('GET', '/v2/bad/type/manifests/.INVALID_MANIFEST_NAME'),
        404,
        'MANIFEST_UNKNOWN',
      );
      await expectError(
        putManifest(`/v2/bad/type/manifests/${'t'.repeat(129)}`, '{}'),
        400,
        'TAG_INVALID',
      );
    });
  });

  describe('digests and names', () => {
    it('refuses a wrong digest and leaves no blob behind', async () => {
      const data = randomBytes(1000);
      const wrong = digestOf('other content');
      await expectError(
        send('POST', `/v2/bad/blobs/blobs/uploads/?digest=${wrong}`, {
          body: data,
          headers: { 'Content-Length': data.length },
        }),
        400,
        'DIGEST_INVALID',
      );
      await expectError(send('GET', `/v2/bad/blobs/blobs/${wrong}`), 404, 'BLOB_UNKNOWN');
      await expectError(send('GET', `/v2/bad/blobs/blobs/${digestOf(data)}`), 404, 'BLOB_UNKNOWN');
    });

    it('refuses uppercase and malformed digests with DIGEST_INVALID', async () => {
      const upper = `sha256:${'A'.repeat(64)}`;
      await expectError(send('GET', `/v2/bad/blobs/blobs/${upper}`), 400, 'DIGEST_INVALID');
      await expectError(
        send('POST', `/v2/bad/blobs/blobs/uploads/?digest=${upper}`, { body: 'x' }),
        400,
        'DIGEST_INVALID',
      );
      await expectError(send('GET', '/v2/bad/blobs/blobs/sha256:abc'), 400, 'DIGEST_INVALID');
      await expectError(send('GET', '/v2/bad/blobs/blobs/md5:abcdef'), 400, 'DIGEST_INVALID');
    });

    it.each([
      ['a/../b', '/v2/a/../b/tags/list'],
      ['%2e%2e', '/v2/%2e%2e/tags/list'],
      ['uppercase', '/v2/Team/App/tags/list'],
      ['too long', `/v2/${'a/'.repeat(120)}a/tags/list`],
      ['empty component', '/v2/a//b/blobs/uploads/'],
    ])('refuses the name %s with NAME_INVALID', async (_label, path) => {
      const method = path.endsWith('uploads/') ? 'POST' : 'GET';
      await expectError(send(method, path), 400, 'NAME_INVALID');
    });
  });

  describe('chunked uploads', () => {
    it('refuses an out-of-order chunk with 416 and keeps what arrived', async () => {
      const location = await startUpload('bad/chunks');
      const first = randomBytes(100);
      expect((await patchChunk(location, first, '0-99', 100)).status).toBe(202);
      await expectError(patchChunk(location, randomBytes(50), '150-199', 50), 416, 'RANGE_INVALID');
      // Overlapping: starts inside what is already there.
      await expectError(patchChunk(location, randomBytes(50), '50-99', 50), 416, 'RANGE_INVALID');
      expect(await uploadSize(location)).toBe(100);
      const second = randomBytes(60);
      expect((await patchChunk(location, second, '100-159', 60)).status).toBe(202);
      const whole = Buffer.concat([first, second]);
      const done = await send('PUT', `${location}?digest=${digestOf(whole)}`);
      expect(done.status).toBe(201);
      expect(
        (await send('GET', `/v2/bad/chunks/blobs/${digestOf(whole)}`)).body.equals(whole),
      ).toBe(true);
    });

    it('refuses a chunk whose body disagrees with its Content-Range', async () => {
      const location = await startUpload('bad/lengths');
      // Longer than the range declares.
      await expectError(patchChunk(location, randomBytes(100), '0-49', 100), 416, 'RANGE_INVALID');
      // Shorter than the range declares (chunked encoding, so no Content-Length to catch it early).
      await expectError(
        send('PATCH', location, {
          body: randomBytes(30),
          headers: { 'Content-Range': '0-49', 'Transfer-Encoding': 'chunked' },
        }),
        400,
        'SIZE_INVALID',
      );
      expect(await uploadSize(location)).toBe(0);
    });

    it('cuts back a chunk whose client disconnects mid-body, and the upload can go on', async () => {
      const location = await startUpload('bad/disconnect');
      const first = randomBytes(1000);
      expect((await patchChunk(location, first, '0-999', 1000)).status).toBe(202);
      await abandonUpload(host, 'PATCH', location, 1024 * 1024, randomBytes(200 * 1024), {
        'Content-Range': `1000-${1000 + 1024 * 1024 - 1}`,
      });
      await waitFor(
        async () => (await uploadSize(location)) === 1000,
        5000,
        'the partial chunk to be cut back',
      );
      const rest = randomBytes(500);
      expect((await patchChunk(location, rest, '1000-1499', 500)).status).toBe(202);
      const whole = Buffer.concat([first, rest]);
      expect((await send('PUT', `${location}?digest=${digestOf(whole)}`)).status).toBe(201);
    });

    it('stores nothing for a monolithic upload whose client disconnects', async () => {
      const data = randomBytes(300 * 1024);
      const digest = digestOf(data);
      await abandonUpload(
        host,
        'POST',
        `/v2/bad/monolithic/blobs/uploads/?digest=${digest}`,
        data.length,
        data.subarray(0, 100 * 1024),
      );
      await expectError(send('GET', `/v2/bad/monolithic/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
      const uploads = join(storage.path, 'docker/registry/v2/repositories/bad/monolithic/_uploads');
      await waitFor(
        async () => (await readdir(uploads).catch(() => [])).length === 0,
        5000,
        'the abandoned session to go',
      );
    });

    it('refuses a PATCH while the closing PUT of the same upload is running', async () => {
      const location = await startUpload('bad/race');
      const data = randomBytes(2 * 1024 * 1024);
      const put = sendSlowly(
        host,
        'PUT',
        `${location}?digest=${digestOf(data)}`,
        data,
        1024 * 1024,
        300,
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
      await expectError(
        send('PATCH', location, { body: 'EVIL', headers: { 'Content-Length': 4 } }),
        400,
        'BLOB_UPLOAD_INVALID',
      );
      expect(await put).toBe(201);
      const blob = await send('GET', `/v2/bad/race/blobs/${digestOf(data)}`);
      expect(blob.body.equals(data)).toBe(true);
    });

    it('refuses an unknown upload id and a second writer on one upload', async () => {
      await expectError(
        send('PATCH', '/v2/bad/chunks/blobs/uploads/not-an-upload', { body: 'x' }),
        404,
        'BLOB_UPLOAD_UNKNOWN',
      );
      await expectError(
        send('GET', '/v2/bad/chunks/blobs/uploads/00000000-0000-4000-8000-000000000000'),
        404,
        'BLOB_UPLOAD_UNKNOWN',
      );
      await expectError(send('PUT', `${await startUpload('bad/chunks')}`), 400, 'DIGEST_INVALID');
    });
  });

  it('leaves storage consistent after all of it', async () => {
    const report = await checkConsistency(new FilesystemDriver(storage.path), {
      verifyContent: true,
    });
    expect(report.problems).toEqual([]);
    expect(report.repositories).toBeGreaterThan(5);
  });
});
