import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CountingProxy } from '../support/counting-proxy.ts';
import { run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { startBerth, startDistribution, type RegistryProcess } from '../support/registries.ts';
import { findTool } from '../support/tools.ts';

const ociManifest = 'application/vnd.oci.image.manifest.v1+json';
const prefix = 'mirror.test';
const tagTTLSeconds = 3;

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function pushBlob(url: string, repository: string, bytes: Buffer): Promise<string> {
  const digest = digestOf(bytes);
  const started = await fetch(`${url}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  const location = new URL(started.headers.get('location') as string, url);
  location.searchParams.set('digest', digest);
  const answer = await fetch(location, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/octet-stream' },
    body: bytes,
  });
  if (answer.status !== 201) throw new Error(`blob push: ${answer.status} ${await answer.text()}`);
  return digest;
}

/** Pushes an image of one gzip layer straight to the upstream; returns its digests. */
async function pushImage(
  url: string,
  repository: string,
  tag: string,
  layer: Buffer,
): Promise<{ manifest: string; layer: string }> {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }),
  );
  const configDigest = await pushBlob(url, repository, config);
  const layerDigest = await pushBlob(url, repository, layer);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: ociManifest,
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: layerDigest,
          size: layer.length,
        },
      ],
    }),
  );
  const answer = await fetch(`${url}/v2/${repository}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'Content-Type': ociManifest },
    body: manifest,
  });
  if (answer.status !== 201)
    throw new Error(`manifest push: ${answer.status} ${await answer.text()}`);
  return { manifest: digestOf(manifest), layer: layerDigest };
}

function randomLayer(bytes: number): Buffer {
  return gzipSync(randomBytes(bytes), { level: 1 });
}

const blobRequests = /^GET \/v2\/.*\/blobs\//;

/**
 * `berth registry` as a pull-through mirror of a real distribution on loopback, behind a proxy
 * that counts upstream requests, slows bodies, answers 429 or stops.
 */
describe('pull-through mirrors', () => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let upstream: RegistryProcess;
  let proxy: CountingProxy;
  let berth: RegistryProcess;
  const crane = (...args: string[]) =>
    run(findTool('crane') as string, [...args, '--insecure'], { timeoutMs: 60_000 });

  beforeAll(async () => {
    work = await temporaryDirectory('mirror');
    await mkdir(join(work.path, 'upstream'));
    upstream = await startDistribution(join(work.path, 'upstream'), work.path);
    proxy = new CountingProxy(upstream.url);
    await proxy.start();
    const config = join(work.path, 'berth.yaml');
    await writeFile(
      config,
      [
        `mirrors:`,
        `  - url: ${proxy.url}`,
        `    prefix: ${prefix}`,
        `    tagTTL: ${tagTTLSeconds}s`,
        'log: {requests: false}',
        '',
      ].join('\n'),
    );
    berth = await startBerth(join(work.path, 'berth'), { extraArgs: ['--config', config] });
  }, 60_000);

  afterAll(async () => {
    await berth?.stop();
    await proxy?.stop();
    await upstream?.stop();
    await work?.remove();
  });

  it('streams a cold layer to the client while storing it, and serves the second pull from storage', async () => {
    const layer = randomLayer(32 * 1024 * 1024);
    const image = await pushImage(upstream.url, 'library/big', '1', layer);
    proxy.bytesPerSecond = 16 * 1024 * 1024;
    try {
      const manifest = await crane('manifest', `${berth.host}/${prefix}/library/big:1`);
      expect(digestOf(Buffer.from(manifest.stdout))).toBe(image.manifest);

      const started = performance.now();
      const answer = await fetch(`${berth.url}/v2/${prefix}/library/big/blobs/${image.layer}`);
      const reader = (answer.body as ReadableStream<Uint8Array>).getReader();
      const hash = createHash('sha256');
      let first = await reader.read();
      const firstByte = performance.now() - started;
      while (!first.done) {
        hash.update(first.value);
        first = await reader.read();
      }
      const whole = performance.now() - started;
      expect(answer.status).toBe(200);
      expect(`sha256:${hash.digest('hex')}`).toBe(image.layer);
      // About 2 s at the proxy's rate; the first byte comes after the first upstream chunk.
      expect(whole).toBeGreaterThan(1500);
      expect(firstByte).toBeLessThan(whole / 4);
      console.log(
        `cold layer of ${layer.length} bytes: first byte ${firstByte.toFixed(0)} ms, whole ${whole.toFixed(0)} ms`,
      );
    } finally {
      proxy.bytesPerSecond = 0;
    }
    const blobsBefore = proxy.count(blobRequests);
    await crane(
      'pull',
      '--format',
      'oci',
      `${berth.host}/${prefix}/library/big:1`,
      join(work.path, 'pull-1'),
    );
    const afterFirstPull = proxy.count(blobRequests);
    expect(afterFirstPull - blobsBefore).toBe(1); // only the config blob was still missing
    await crane(
      'pull',
      '--format',
      'oci',
      `${berth.host}/${prefix}/library/big:1`,
      join(work.path, 'pull-2'),
    );
    expect(proxy.count(blobRequests)).toBe(afterFirstPull);
  }, 120_000);

  it('makes one upstream fetch for 20 concurrent cold pulls of one blob', async () => {
    const image = await pushImage(
      upstream.url,
      'library/shared',
      '1',
      randomLayer(8 * 1024 * 1024),
    );
    proxy.bytesPerSecond = 16 * 1024 * 1024;
    try {
      const bodies = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const answer = await fetch(
            `${berth.url}/v2/${prefix}/library/shared/blobs/${image.layer}`,
          );
          return {
            status: answer.status,
            digest: digestOf(Buffer.from(await answer.arrayBuffer())),
          };
        }),
      );
      expect(bodies).toEqual(
        Array.from({ length: 20 }, () => ({ status: 200, digest: image.layer })),
      );
    } finally {
      proxy.bytesPerSecond = 0;
    }
    expect(proxy.count(new RegExp(`^GET /v2/library/shared/blobs/${image.layer}$`))).toBe(1);
  }, 60_000);

  it('sees a tag moved upstream after its TTL and not before; a cached digest never asks upstream', async () => {
    const first = await pushImage(upstream.url, 'library/moving', 'v', randomLayer(1024));
    const digestOfTag = async () =>
      (await crane('digest', `${berth.host}/${prefix}/library/moving:v`)).stdout.trim();
    expect(await digestOfTag()).toBe(first.manifest);
    const second = await pushImage(upstream.url, 'library/moving', 'v', randomLayer(1024));
    expect(await digestOfTag()).toBe(first.manifest);
    await waitFor(
      async () => (await digestOfTag()) === second.manifest,
      (tagTTLSeconds + 10) * 1000,
      'the moved tag',
    );

    const byDigest = new RegExp(`/v2/library/moving/manifests/${first.manifest}$`);
    const before = proxy.count(byDigest);
    await crane('manifest', `${berth.host}/${prefix}/library/moving@${first.manifest}`);
    expect(proxy.count(byDigest)).toBe(before);
  }, 60_000);

  it('serves what is cached while upstream is stopped or rate-limits, and fails clearly for the rest', async () => {
    const cached = await pushImage(upstream.url, 'library/kept', '1', randomLayer(4096));
    await pushImage(upstream.url, 'library/never', '1', randomLayer(4096));
    await crane(
      'pull',
      '--format',
      'oci',
      `${berth.host}/${prefix}/library/kept:1`,
      join(work.path, 'kept'),
    );
    // Past the TTL, so the tag would be checked upstream.
    await new Promise((resolve) => setTimeout(resolve, tagTTLSeconds * 1000 + 200));
    await proxy.stop();
    try {
      for (const reference of [`library/kept:1`, `library/kept@${cached.manifest}`]) {
        await crane(
          'pull',
          '--format',
          'oci',
          `${berth.host}/${prefix}/${reference}`,
          join(work.path, `down-${reference.length}`),
        );
      }
      const missing = await fetch(`${berth.url}/v2/${prefix}/library/never/manifests/1`);
      expect(missing.status).toBe(503);
      const body = (await missing.json()) as { errors: { code: string; message: string }[] };
      expect(body.errors[0]?.code).toBe('UNAVAILABLE');
      expect(body.errors[0]?.message).toContain(`upstream ${proxy.url}`);
      expect(body.errors[0]?.message).toContain('cannot be reached');
    } finally {
      await proxy.start();
    }
    const askedBefore = proxy.count(/\/v2\/library\/kept\/manifests\/1$/);
    proxy.rateLimited = true;
    try {
      // The whole image, tag and blobs, while every upstream request would get a 429.
      await crane(
        'pull',
        '--format',
        'oci',
        `${berth.host}/${prefix}/library/kept:1`,
        join(work.path, 'limited'),
      );
      // The tag was past its TTL: Berth asked upstream, got 429, and served what it had.
      expect(proxy.count(/\/v2\/library\/kept\/manifests\/1$/)).toBeGreaterThan(askedBefore);
      const limited = await fetch(`${berth.url}/v2/${prefix}/library/never/manifests/1`);
      expect(limited.status).toBe(429);
      expect(((await limited.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe(
        'TOOMANYREQUESTS',
      );
    } finally {
      proxy.rateLimited = false;
    }
    const metrics = await (await fetch(`${berth.url}/metrics`)).text();
    expect(metrics).toMatch(
      /berth_registry_mirror_upstream_errors_total\{mirror="mirror.test",problem="unreachable"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /berth_registry_mirror_requests_total\{mirror="mirror.test",kind="manifest",outcome="stale"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /berth_registry_mirror_cached_bytes_total\{mirror="mirror.test"\} [1-9]/,
    );
  }, 90_000);

  it("takes containerd's ns parameter and refuses pushes to a mirrored prefix", async () => {
    const image = await pushImage(upstream.url, 'library/ns', '1', randomLayer(1024));
    const viaNs = await fetch(`${berth.url}/v2/library/ns/manifests/1?ns=${prefix}`, {
      headers: { Accept: ociManifest },
    });
    expect(viaNs.status).toBe(200);
    expect(viaNs.headers.get('docker-content-digest')).toBe(image.manifest);
    const push = await fetch(`${berth.url}/v2/${prefix}/library/ns/blobs/uploads/`, {
      method: 'POST',
    });
    expect(push.status).toBe(403);
    const body = (await push.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]?.code).toBe('DENIED');
    expect(body.errors[0]?.message).toContain('pull-through mirror');
  }, 30_000);
});
