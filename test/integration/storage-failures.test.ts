import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { berthCli } from '../support/cli.ts';
import { errorCode, rawRequest, type RawResponse } from '../support/http.ts';
import { run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { imageManifest } from '../support/manifests.ts';

/**
 * A real `berth registry` on a small filesystem of the test's own (tmpfs): pushed until full,
 * then made read-only. Every refused write gets a clear OCI error, leaves no temporary file,
 * keeps storage consistent and reads served, and writes work again once the medium does, with
 * no restart.
 */
const ociManifest = 'application/vnd.oci.image.manifest.v1+json';
const sha256 = (data: Buffer | string) =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Mounting a filesystem needs root (the test machines run the suite as root). */
const asRoot = process.getuid?.() === 0;
if (!asRoot) {
  process.stderr.write(
    '\n*** SKIPPED "storage failures": needs root to mount a small tmpfs ***\n\n',
  );
}

(asRoot ? describe : describe.skip)('storage failures', () => {
  let parent: Awaited<ReturnType<typeof temporaryDirectory>>;
  let storage: string;
  let registry: RegistryProcess;
  let mounted = false;
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
  const layer = randomBytes(64 * 1024);
  let manifest: Buffer;

  const send = (method: string, path: string, options?: Parameters<typeof rawRequest>[3]) =>
    rawRequest(registry.host, method, path, options);

  const pushBlob = (data: Buffer) =>
    send('POST', `/v2/full/app/blobs/uploads/?digest=${sha256(data)}`, {
      body: data,
      headers: { 'Content-Length': data.length },
    });

  const putManifest = (tag: string, body: Buffer) =>
    send('PUT', `/v2/full/app/manifests/${tag}`, {
      body,
      headers: { 'Content-Type': ociManifest, 'Content-Length': body.length },
    });

  const manifestOf = (layers: Buffer[]) => imageManifest(config, layers);

  function expectError(response: RawResponse, status: number, body: unknown): void {
    expect({
      status: response.status,
      body: JSON.parse(response.body.toString()) as unknown,
    }).toEqual({
      status,
      body,
    });
  }

  const full = {
    errors: [
      {
        code: 'UNAVAILABLE',
        message: 'registry storage is full',
        detail: { reason: 'StorageFull' },
      },
    ],
  };
  const readOnly = {
    errors: [
      {
        code: 'UNAVAILABLE',
        message: 'registry storage is unavailable: StorageNotWritable',
        detail: { reason: 'StorageNotWritable' },
      },
    ],
  };

  async function mount(options: string): Promise<void> {
    // A remount races the registry's own short-lived writes (its probe) and is then EBUSY.
    await waitFor(
      async () => (await run('mount', ['-o', options, storage], { allowFailure: true })).code === 0,
      10_000,
      `mount -o ${options}`,
    );
  }

  /** Every file under the storage root, relative to it. */
  async function files(directory = storage): Promise<string[]> {
    const found: string[] = [];
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      const path = join(directory, entry.name);
      if (entry.isDirectory()) found.push(...(await files(path)));
      else found.push(relative(storage, path));
    }
    return found;
  }

  /** Nothing in the temporary directory, no upload but those named. */
  async function expectNoLeftovers(openUploads: string[] = []): Promise<void> {
    const all = await files();
    expect(all.filter((file) => file.startsWith('_berth/tmp/'))).toEqual([]);
    expect(
      all
        .filter((file) => file.includes('/_uploads/'))
        .map((file) => /\/_uploads\/([^/]+)\//.exec(file)?.[1])
        .filter((id) => !openUploads.includes(id as string)),
    ).toEqual([]);
  }

  async function expectCheckClean(): Promise<void> {
    const check = await run(
      process.execPath,
      [berthCli(), 'check', '--storage-dir', storage, '--verify-content'],
      { allowFailure: true },
    );
    expect({ code: check.code, stdout: check.stdout }).toEqual({
      code: 0,
      stdout: expect.stringContaining('; 0 problems'),
    });
  }

  async function storageErrors(reason: string): Promise<number> {
    const metrics = await (await fetch(`${registry.url}/metrics`)).text();
    return Number(
      new RegExp(`berth_registry_storage_errors_total\\{reason="${reason}"\\} (\\d+)`).exec(
        metrics,
      )?.[1] ?? 0,
    );
  }

  beforeAll(async () => {
    parent = await temporaryDirectory('storage-failures');
    storage = join(parent.path, 'storage');
    await mkdir(storage);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8m,mode=0755', 'tmpfs', storage]);
    mounted = true;
    registry = await startBerth(storage, { extraArgs: ['--log-level', 'warn'] });
    expect((await pushBlob(config)).status).toBe(201);
    expect((await pushBlob(layer)).status).toBe(201);
    manifest = manifestOf([layer]);
    expect((await putManifest('v1', manifest)).status).toBe(201);
  });

  afterAll(async () => {
    await registry?.stop();
    if (mounted) await run('umount', [storage], { allowFailure: true });
    await parent?.remove();
  });

  it('answers a full disk with 507, serves reads, leaves nothing behind, recovers with space', async () => {
    // A chunked upload in progress while the disk fills up.
    const started = await send('POST', '/v2/full/app/blobs/uploads/');
    expect(started.status).toBe(202);
    const location = started.headers.location as string;
    const uploadId = started.headers['docker-upload-uuid'] as string;

    // Fill it: big blobs until one does not fit, then smaller ones down to single pages.
    let firstRefusal: RawResponse | undefined;
    for (const size of [1024 * 1024, 64 * 1024, 4096, 1]) {
      for (let pushed = 0; pushed < 200; pushed += 1) {
        const response = await pushBlob(randomBytes(size));
        if (response.status === 201) continue;
        firstRefusal ??= response;
        expectError(response, 507, full);
        break;
      }
    }
    expect(firstRefusal).toBeDefined();

    // Every kind of write is refused the same way: a chunk, a manifest, a new tag.
    const chunk = await send('PATCH', location, {
      body: randomBytes(256 * 1024),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': 256 * 1024 },
    });
    expectError(chunk, 507, full);
    const status = await send('GET', location);
    expect({ status: status.status, range: status.headers.range }).toEqual({
      status: 204,
      range: '0-0',
    });
    expectError(await putManifest('v2', manifestOf([layer, config])), 507, full);
    expectError(await putManifest('v3', manifest), 507, full);

    // Reads go on, and the registry stays ready: past a probe period while full.
    await new Promise((resolve) => setTimeout(resolve, 6_000));
    expect((await fetch(`${registry.url}/readyz`)).status).toBe(200);
    const pulled = await send('GET', '/v2/full/app/manifests/v1');
    expect({ status: pulled.status, same: pulled.body.equals(manifest) }).toEqual({
      status: 200,
      same: true,
    });
    const blob = await send('GET', `/v2/full/app/blobs/${sha256(layer)}`);
    expect(blob.body.equals(layer)).toBe(true);
    expect(await storageErrors('StorageFull')).toBeGreaterThanOrEqual(4);

    await expectNoLeftovers([uploadId]);
    await expectCheckClean();
    expect((await send('DELETE', location)).status).toBe(204);
    await expectNoLeftovers();

    // Space returns: writes work again, no restart.
    await mount('remount,size=16m');
    const next = randomBytes(1024 * 1024);
    expect((await pushBlob(next)).status).toBe(201);
    expect((await putManifest('v2', manifestOf([layer, next]))).status).toBe(201);
    expect((await putManifest('v3', manifest)).status).toBe(201);
    await expectNoLeftovers();
    await expectCheckClean();
  });

  it('answers a read-only disk with 503 and stays unready until it is writable again', async () => {
    await mount('remount,ro');
    try {
      expectError(await pushBlob(randomBytes(1024)), 503, readOnly);
      expectError(await send('POST', '/v2/full/app/blobs/uploads/'), 503, readOnly);
      expectError(await putManifest('v4', manifest), 503, readOnly);
      expect(await storageErrors('StorageNotWritable')).toBeGreaterThanOrEqual(3);
      await waitFor(
        async () => (await fetch(`${registry.url}/readyz`)).status === 503,
        7_000,
        'not ready on read-only storage',
      );
      expect(await (await fetch(`${registry.url}/readyz`)).json()).toMatchObject({
        ready: false,
        reason: 'StorageNotWritable',
      });
      // Reads still work for whoever asks.
      const blob = await send('GET', `/v2/full/app/blobs/${sha256(layer)}`);
      expect(blob.body.equals(layer)).toBe(true);
      expect((await send('GET', '/v2/full/app/manifests/v1')).status).toBe(200);
    } finally {
      await mount('remount,rw');
    }
    await waitFor(
      async () => (await fetch(`${registry.url}/readyz`)).status === 200,
      7_000,
      'ready again once writable',
    );
    expect((await pushBlob(randomBytes(1024))).status).toBe(201);
    expect((await putManifest('v4', manifest)).status).toBe(201);
    await expectNoLeftovers();
    await expectCheckClean();
    expect(errorCode(await send('GET', '/v2/full/app/manifests/v5'))).toBe('MANIFEST_UNKNOWN');
  });
});
