import { createHash, randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkConsistency } from '../../src/registry/service/consistency.ts';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import { temporaryDirectory } from '../support/processes.ts';
import { startBerth } from '../support/registries.ts';

/**
 * `kill -9` in the middle of many concurrent pushes. Everything the registry acknowledged must
 * be served after a restart, storage must hold no broken link, and abandoned uploads must be
 * removed once past their grace period.
 */
function digestOf(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

interface Acknowledged {
  blobs: Map<string, string>;
  manifests: Map<string, string>;
}

async function pushImage(
  base: string,
  repository: string,
  tag: string,
  acknowledged: Acknowledged,
): Promise<void> {
  const layer = randomBytes(256 * 1024 + Math.floor(Math.random() * 1024 * 1024));
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', created: new Date().toISOString(), tag }),
  );
  // The layer goes up in two chunks, the config in one request.
  const start = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`POST ${start.status}`);
  const location = new URL(start.headers.get('location') as string, base).toString();
  const half = layer.length >> 1;
  const first = await fetch(location, {
    method: 'PATCH',
    body: layer.subarray(0, half),
    headers: { 'Content-Range': `0-${half - 1}`, 'Content-Type': 'application/octet-stream' },
  });
  if (first.status !== 202) throw new Error(`PATCH ${first.status}`);
  const done = await fetch(`${location}?digest=${digestOf(layer)}`, {
    method: 'PUT',
    body: layer.subarray(half),
  });
  if (done.status !== 201) throw new Error(`PUT ${done.status}`);
  acknowledged.blobs.set(`${repository}@${digestOf(layer)}`, digestOf(layer));

  const configPut = await fetch(
    `${base}/v2/${repository}/blobs/uploads/?digest=${digestOf(config)}`,
    { method: 'POST', body: config },
  );
  if (configPut.status !== 201) throw new Error(`config ${configPut.status}`);
  acknowledged.blobs.set(`${repository}@${digestOf(config)}`, digestOf(config));

  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: digestOf(config),
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: digestOf(layer),
          size: layer.length,
        },
      ],
    }),
  );
  const put = await fetch(`${base}/v2/${repository}/manifests/${tag}`, {
    method: 'PUT',
    body: manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  if (put.status !== 201) throw new Error(`manifest ${put.status}`);
  acknowledged.manifests.set(`${repository}:${tag}`, digestOf(manifest));
}

describe('crash safety', () => {
  it('a kill -9 during pushes loses nothing acknowledged and leaves no corrupt state', async () => {
    const storage = await temporaryDirectory('crash');
    const acknowledged: Acknowledged = { blobs: new Map(), manifests: new Map() };
    try {
      const first = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
      let running = true;
      const pushers = Array.from({ length: 8 }, async (_, worker) => {
        for (let round = 0; running; round += 1) {
          try {
            await pushImage(first.url, `crash/worker${worker}`, `r${round}`, acknowledged);
          } catch {
            return; // the server died under this push
          }
        }
      });
      // Let pushes pile up, then pull the plug while several are mid-body.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      await first.stop('SIGKILL');
      running = false;
      await Promise.all(pushers);
      expect(acknowledged.manifests.size).toBeGreaterThan(8);

      // Restart with a zero grace period, so every upload the crash abandoned is purged at start.
      const config = join(storage.path, '..', `${storage.path.split('/').pop()}-config.yaml`);
      await writeFile(config, 'uploads:\n  purgeAfter: 1ms\n');
      const second = await startBerth(storage.path, {
        extraArgs: ['--log-level', 'warn', '--config', config],
      });
      try {
        for (const [key, digest] of acknowledged.blobs) {
          const repository = key.slice(0, key.indexOf('@'));
          const response = await fetch(`${second.url}/v2/${repository}/blobs/${digest}`);
          expect(response.status).toBe(200);
          expect(digestOf(Buffer.from(await response.arrayBuffer()))).toBe(digest);
        }
        for (const [key, digest] of acknowledged.manifests) {
          const [repository, tag] = key.split(':') as [string, string];
          const response = await fetch(`${second.url}/v2/${repository}/manifests/${tag}`);
          expect({
            key,
            status: response.status,
            digest: response.headers.get('docker-content-digest'),
          }).toEqual({
            key,
            status: 200,
            digest,
          });
        }
        const report = await checkConsistency(new FilesystemDriver(storage.path), {
          verifyContent: true,
        });
        expect(report.problems).toEqual([]);
        for (let worker = 0; worker < 8; worker += 1) {
          const uploads = join(
            storage.path,
            `docker/registry/v2/repositories/crash/worker${worker}/_uploads`,
          );
          expect(await readdir(uploads).catch(() => [])).toEqual([]);
        }
      } finally {
        await second.stop();
      }
    } finally {
      await storage.remove();
    }
  });
});
