import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRegistryConfig } from '../../config/registry.ts';
import { createLogger } from '../../observability/logger.ts';
import { MetricsRegistry } from '../../observability/metrics.ts';
import { createRegistryServices } from '../services.ts';
import { StorageUnavailableError, type StorageDriver } from '../storage/driver.ts';
import { FilesystemDriver } from '../storage/filesystem/driver.ts';
import { createRegistryApp } from './app.ts';

type DriverMethod =
  | 'stat'
  | 'getContent'
  | 'putContent'
  | 'createContent'
  | 'reader'
  | 'pipeTo'
  | 'writer'
  | 'list'
  | 'move'
  | 'delete';

/**
 * A filesystem driver whose methods can be made to fail: each fault names a method and what it
 * throws, so a test reaches an error path no well-behaved disk takes.
 */
function faultyDriver(inner: StorageDriver, faults: Map<DriverMethod, () => Error>): StorageDriver {
  const fail =
    <A extends unknown[], R>(method: DriverMethod, call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const fault = faults.get(method);
      if (fault) throw fault();
      return call(...args);
    };
  return {
    name: 'faulty',
    stat: fail('stat', (path) => inner.stat(path)),
    getContent: fail('getContent', (path) => inner.getContent(path)),
    putContent: fail('putContent', (path, content) => inner.putContent(path, content)),
    createContent: fail('createContent', (path, content) => inner.createContent(path, content)),
    reader: fail('reader', (path, range) => inner.reader(path, range)),
    pipeTo: fail('pipeTo', (path, destination, options) =>
      inner.pipeTo(path, destination, options),
    ),
    writer: fail('writer', (path) => inner.writer(path)),
    list: fail('list', (path) => inner.list(path)),
    move: fail('move', (source, destination) => inner.move(source, destination)),
    delete: fail('delete', (path) => inner.delete(path)),
    probe: () => inner.probe(),
  };
}

const layer = Buffer.from('a layer');
const layerDigest = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
const configDigest = `sha256:${createHash('sha256').update(config).digest('hex')}`;
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: configDigest,
      size: config.length,
    },
    layers: [
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: layerDigest,
        size: layer.length,
      },
    ],
  }),
);

describe('the registry app over failing storage', () => {
  const faults = new Map<DriverMethod, () => Error>();
  let root: string;
  let server: Server;
  let base: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'berth-faults-'));
    const driver = faultyDriver(new FilesystemDriver(root), faults);
    const registryConfig = parseRegistryConfig(
      { storage: { filesystem: { rootDirectory: root } } },
      'test',
    );
    const app = createRegistryApp({
      services: createRegistryServices(driver, registryConfig),
      logger: createLogger('silent', 'test'),
      metrics: new MetricsRegistry(),
      logRequests: false,
      readiness: () => ({ ready: true }),
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    for (const [digest, body] of [
      [layerDigest, layer],
      [configDigest, config],
    ] as const) {
      const pushed = await fetch(`${base}/v2/app/blobs/uploads/?digest=${digest}`, {
        method: 'POST',
        body,
      });
      expect(pushed.status).toBe(201);
    }
    const tagged = await fetch(`${base}/v2/app/manifests/v1`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      body: manifest,
    });
    expect(tagged.status).toBe(201);
  });

  afterEach(() => faults.clear());

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(root, { recursive: true, force: true });
  });

  async function expectError(
    response: Response,
    status: number,
    code: string,
    detail?: unknown,
  ): Promise<void> {
    expect(response.status).toBe(status);
    expect(response.headers.get('Docker-Distribution-API-Version')).toBe('registry/2.0');
    const body = (await response.json()) as { errors: { code: string; detail?: unknown }[] };
    expect(body.errors).toHaveLength(1);
    expect(body.errors[0]?.code).toBe(code);
    if (detail !== undefined) expect(body.errors[0]?.detail).toEqual(detail);
  }

  const diskError = () => new Error(`EIO: i/o error, open '${root}/secret/path'`);

  it.each<[string, DriverMethod, string, RequestInit]>([
    // v1 is cached since its push; a tag never read goes to storage.
    ['a tag read', 'getContent', '/v2/app/manifests/never-pushed', {}],
    ['a tag listing', 'list', '/v2/app/tags/list', {}],
    ['a blob stat', 'stat', `/v2/app/blobs/${layerDigest}`, {}],
    ['a blob read', 'pipeTo', `/v2/app/blobs/${layerDigest}`, {}],
    ['an upload session start', 'putContent', '/v2/app/blobs/uploads/', { method: 'POST' }],
    [
      'a monolithic upload',
      'writer',
      `/v2/app/blobs/uploads/?digest=${layerDigest}`,
      { method: 'POST', body: layer },
    ],
    ['a referrers listing', 'list', `/v2/app/referrers/${layerDigest}`, {}],
    ['a tag delete', 'delete', '/v2/app/manifests/v1', { method: 'DELETE' }],
  ])(
    'answers UNKNOWN (500) when storage throws during %s, naming no server path',
    async (_what, method, path, init) => {
      faults.set(method, diskError);
      const response = await fetch(`${base}${path}`, init);
      const text = await response.clone().text();
      expect(text).not.toContain(root);
      await expectError(response, 500, 'UNKNOWN');
    },
  );

  it.each<[string, 'StorageFull' | 'StorageNotWritable', number]>([
    ['full storage', 'StorageFull', 507],
    ['storage that refuses writes', 'StorageNotWritable', 503],
  ])('answers UNAVAILABLE for %s, with the reason', async (_what, reason, status) => {
    faults.set('writer', () => new StorageUnavailableError(reason, `${root} refused`));
    const response = await fetch(`${base}/v2/app/blobs/uploads/?digest=${layerDigest}`, {
      method: 'POST',
      body: layer,
    });
    await expectError(response, status, 'UNAVAILABLE', { reason });
  });

  it('answers a refused tag write with UNAVAILABLE and leaves the tag as it was', async () => {
    faults.set('putContent', () => new StorageUnavailableError('StorageFull', 'full'));
    faults.set('createContent', () => new StorageUnavailableError('StorageFull', 'full'));
    faults.set('move', () => new StorageUnavailableError('StorageFull', 'full'));
    const response = await fetch(`${base}/v2/app/manifests/v2`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      body: manifest,
    });
    await expectError(response, 507, 'UNAVAILABLE', { reason: 'StorageFull' });
    faults.clear();
    expect((await fetch(`${base}/v2/app/manifests/v1`, { method: 'HEAD' })).status).toBe(200);
  });

  it.each<[string, string, RequestInit, number, string]>([
    ['a blob that is not there', `/v2/app/blobs/sha256:${'1'.repeat(64)}`, {}, 404, 'BLOB_UNKNOWN'],
    ['a tag that is not there', '/v2/app/manifests/nope', {}, 404, 'MANIFEST_UNKNOWN'],
    ['a repository that is not there', '/v2/nope/tags/list', {}, 404, 'NAME_UNKNOWN'],
    ['an upload that is not there', '/v2/app/blobs/uploads/nope', {}, 404, 'BLOB_UPLOAD_UNKNOWN'],
    ['a path that is no endpoint', '/v2/app', {}, 404, 'NAME_UNKNOWN'],
    [
      'a method the endpoint does not serve',
      '/v2/app/tags/list',
      { method: 'PUT' },
      405,
      'UNSUPPORTED',
    ],
    ['an invalid repository name', '/v2/App/tags/list', {}, 400, 'NAME_INVALID'],
    ['a repeated query parameter', '/v2/app/tags/list?last=a&last=b', {}, 400, 'UNSUPPORTED'],
    ['a bad digest', '/v2/app/blobs/sha256:short', {}, 400, 'DIGEST_INVALID'],
    ['a bad page size', '/v2/app/tags/list?n=-1', {}, 400, 'PAGINATION_NUMBER_INVALID'],
  ])('answers %s with its OCI error', async (_what, path, init, status, code) => {
    await expectError(await fetch(`${base}${path}`, init), status, code);
  });

  it('answers an oversized manifest 413 SIZE_INVALID', async () => {
    const response = await fetch(`${base}/v2/app/manifests/big`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      body: Buffer.alloc(4 * 1024 * 1024 + 1, 0x20),
    });
    await expectError(response, 413, 'SIZE_INVALID');
  });
});
