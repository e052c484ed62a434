import { createHash, randomBytes } from 'node:crypto';
import { checkConsistency } from '../../src/registry/service/consistency.ts';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import { errorCode, rawRequest, type RawResponse } from '../support/http.ts';
import { temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { imageManifest } from '../support/manifests.ts';

/**
 * Deleting content that a manifest of the repository still needs (a config or layer blob, or
 * a manifest an index lists) is refused against a real `berth registry`, also while a push that
 * would need it races the delete, so no manifest ever points at missing content.
 */
const ociManifest = 'application/vnd.oci.image.manifest.v1+json';
const ociIndex = 'application/vnd.oci.image.index.v1+json';

const sha256 = (data: Buffer | string) =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('deleting referenced content', () => {
  let registry: RegistryProcess;
  let storage: Awaited<ReturnType<typeof temporaryDirectory>>;

  const send = (method: string, path: string, options?: Parameters<typeof rawRequest>[3]) =>
    rawRequest(registry.host, method, path, options);

  async function pushBlob(repository: string, data: Buffer): Promise<string> {
    const digest = sha256(data);
    const response = await send('POST', `/v2/${repository}/blobs/uploads/?digest=${digest}`, {
      body: data,
      headers: { 'Content-Length': data.length },
    });
    expect(response.status).toBe(201);
    return digest;
  }

  const putManifest = (repository: string, reference: string, body: Buffer, type = ociManifest) =>
    send('PUT', `/v2/${repository}/manifests/${reference}`, {
      body,
      headers: { 'Content-Type': type, 'Content-Length': body.length },
    });

  /** Pushes a config and one layer, and a manifest of them under `tag`. */
  async function pushImage(repository: string, tag: string) {
    const config = Buffer.from(
      JSON.stringify({ os: 'linux', nonce: randomBytes(8).toString('hex') }),
    );
    const layer = randomBytes(2048);
    await pushBlob(repository, config);
    await pushBlob(repository, layer);
    const manifest = imageManifest(config, [layer]);
    expect((await putManifest(repository, tag, manifest)).status).toBe(201);
    return {
      config: sha256(config),
      layer: sha256(layer),
      manifest: sha256(manifest),
      bytes: manifest,
    };
  }

  function expectRefusal(response: RawResponse, dependent: string, allow: string): void {
    expect({
      status: response.status,
      code: errorCode(response),
      allow: response.headers.allow,
    }).toEqual({ status: 405, code: 'UNSUPPORTED', allow });
    expect(JSON.parse(response.body.toString())).toMatchObject({
      errors: [{ message: expect.stringContaining(`referenced by manifest ${dependent}`) }],
    });
  }

  async function expectConsistent(): Promise<void> {
    const report = await checkConsistency(new FilesystemDriver(storage.path), {
      verifyContent: true,
    });
    expect(report.problems).toEqual([]);
  }

  beforeAll(async () => {
    storage = await temporaryDirectory('delete-references');
    registry = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
  });

  afterAll(async () => {
    await registry?.stop();
    await storage?.remove();
  });

  it('refuses to delete a layer or config a manifest uses, and allows it once the manifest is gone', async () => {
    const image = await pushImage('refs/app', 'v1');
    for (const blob of [image.layer, image.config]) {
      expectRefusal(
        await send('DELETE', `/v2/refs/app/blobs/${blob}`),
        image.manifest,
        'GET, HEAD',
      );
      expect((await send('GET', `/v2/refs/app/blobs/${blob}`)).status).toBe(200);
    }
    expect((await send('GET', '/v2/refs/app/manifests/v1')).status).toBe(200);
    await expectConsistent();

    expect((await send('DELETE', `/v2/refs/app/manifests/${image.manifest}`)).status).toBe(202);
    for (const blob of [image.layer, image.config]) {
      expect((await send('DELETE', `/v2/refs/app/blobs/${blob}`)).status).toBe(202);
      expect((await send('GET', `/v2/refs/app/blobs/${blob}`)).status).toBe(404);
    }
    await expectConsistent();
  });

  it('counts only manifests of the same repository', async () => {
    const image = await pushImage('refs/one', 'v1');
    // The same layer in another repository, used by nothing there.
    expect(
      (await send('POST', `/v2/refs/other/blobs/uploads/?mount=${image.layer}&from=refs/one`))
        .status,
    ).toBe(201);
    expect((await send('DELETE', `/v2/refs/other/blobs/${image.layer}`)).status).toBe(202);
    expectRefusal(
      await send('DELETE', `/v2/refs/one/blobs/${image.layer}`),
      image.manifest,
      'GET, HEAD',
    );
    await expectConsistent();
  });

  it('refuses to delete a manifest an index lists, and allows it once the index is gone', async () => {
    const child = await pushImage('refs/multi', 'amd64');
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: ociIndex,
        manifests: [
          {
            mediaType: ociManifest,
            digest: child.manifest,
            size: child.bytes.length,
            platform: { os: 'linux', architecture: 'amd64' },
          },
        ],
      }),
    );
    expect((await putManifest('refs/multi', 'latest', index, ociIndex)).status).toBe(201);
    expectRefusal(
      await send('DELETE', `/v2/refs/multi/manifests/${child.manifest}`),
      sha256(index),
      'GET, HEAD, PUT',
    );
    // Deleting a tag never breaks a reference.
    expect((await send('DELETE', '/v2/refs/multi/manifests/amd64')).status).toBe(202);
    expect((await send('GET', `/v2/refs/multi/manifests/${child.manifest}`)).status).toBe(200);
    await expectConsistent();

    expect((await send('DELETE', `/v2/refs/multi/manifests/${sha256(index)}`)).status).toBe(202);
    expect((await send('DELETE', `/v2/refs/multi/manifests/${child.manifest}`)).status).toBe(202);
    await expectConsistent();
  });

  it('never leaves a manifest without its blob when a delete races a push that needs it', async () => {
    const outcomes = new Map<string, number>();
    for (let round = 0; round < 60; round += 1) {
      const config = Buffer.from(
        JSON.stringify({ os: 'linux', round, nonce: randomBytes(4).toString('hex') }),
      );
      const layer = randomBytes(1024);
      await pushBlob('refs/race', config);
      await pushBlob('refs/race', layer);
      const manifest = imageManifest(config, [layer]);
      // Deletes go out first and after a short stagger, so either can win.
      const [deleted, put] = await Promise.all([
        send('DELETE', `/v2/refs/race/blobs/${sha256(layer)}`),
        new Promise<RawResponse>((resolve) =>
          setTimeout(() => resolve(putManifest('refs/race', `r${round}`, manifest)), round % 4),
        ),
      ]);
      const outcome = `delete ${deleted.status}, put ${put.status}`;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      // One of them happened first: a manifest that was stored still has its layer.
      expect(['delete 202, put 400', 'delete 405, put 201']).toContain(outcome);
    }
    await expectConsistent();
  });
});
