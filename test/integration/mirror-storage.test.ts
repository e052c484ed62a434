import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import { CountingProxy } from '../support/counting-proxy.ts';
import { storedBlobs } from '../support/gc.ts';
import { run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { findTool } from '../support/tools.ts';
import {
  digestOf,
  pushPlatformImage,
  startUpstreamRegistry,
  type UpstreamRegistry,
} from '../support/upstream-registry.ts';

const prefix = 'up.test';

/**
 * Mirrored content is stored through the registry's own services, so garbage collection and
 * full storage treat it like pushed content: an untagged mirrored manifest and its blobs are
 * collected (and fetched again on the next pull); on a full disk a mirror still serves its pulls,
 * keeping nothing, as a push would be refused.
 */
describe('pull-through mirrors: garbage collection and full storage', () => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let upstream: UpstreamRegistry;
  let proxy: CountingProxy;
  const crane = (...args: string[]) =>
    run(findTool('crane') as string, [...args, '--insecure'], { timeoutMs: 60_000 });

  beforeAll(async () => {
    work = await temporaryDirectory('mirror-storage');
    upstream = await startUpstreamRegistry(join(work.path, 'upstream'));
    proxy = new CountingProxy(upstream.url);
    await proxy.start();
  }, 60_000);

  afterAll(async () => {
    await proxy?.stop();
    await upstream?.stop();
    await work?.remove();
  });

  async function berthWith(
    name: string,
    extra: string[],
    storage = join(work.path, name),
  ): Promise<RegistryProcess> {
    const config = join(work.path, `${name}.yaml`);
    await writeFile(
      config,
      [
        'mirrors:',
        `  - {url: "${proxy.url}", prefix: ${prefix}, tagTTL: 1s}`,
        ...extra,
        'log: {requests: false}',
        '',
      ].join('\n'),
    );
    return startBerth(storage, { extraArgs: ['--config', config] });
  }

  const upstreamGets = (path: string) =>
    proxy.matching(new RegExp(`^GET /v2/${path}$`)).filter((exchange) => exchange.status === 200)
      .length;

  it('collects an untagged mirrored manifest and its blobs; the next pull fetches them again', async () => {
    const berth = await berthWith('gc', [
      'gc: {interval: 500ms, gracePeriod: 1s, untagged: delete}',
    ]);
    try {
      const storage = new FilesystemDriver(join(work.path, 'gc'));
      const first = await pushPlatformImage(
        upstream,
        'library/moving',
        'amd64',
        64 * 1024,
        work.path,
        'v',
      );
      const reference = `${berth.host}/${prefix}/library/moving:v`;
      await crane('pull', '--format', 'oci', reference, join(work.path, 'gc-first'));
      const second = await pushPlatformImage(
        upstream,
        'library/moving',
        'amd64',
        64 * 1024,
        work.path,
        'v',
      );
      await waitFor(
        async () => (await crane('digest', reference)).stdout.trim() === second.manifest,
        20_000,
        'the moved tag',
      );
      await crane('pull', '--format', 'oci', reference, join(work.path, 'gc-second'));
      // The first image is untagged in the mirror now: collected like a pushed one.
      await waitFor(
        async () => {
          const blobs = await storedBlobs(storage);
          return !blobs.has(first.layer) && !blobs.has(first.manifest);
        },
        30_000,
        'the untagged mirrored image collected',
      );
      const kept = await storedBlobs(storage);
      for (const digest of [second.manifest, second.config, second.layer])
        expect(kept.has(digest)).toBe(true);

      const before = upstreamGets(`library/moving/blobs/${first.layer}`);
      await crane(
        'pull',
        '--format',
        'oci',
        `${berth.host}/${prefix}/library/moving@${first.manifest}`,
        join(work.path, 'gc-again'),
      );
      expect(upstreamGets(`library/moving/blobs/${first.layer}`)).toBe(before + 1);
      expect(upstreamGets(`library/moving/manifests/${first.manifest}`)).toBe(1);
    } finally {
      await berth.stop();
    }
  }, 120_000);

  // Mounting a filesystem needs root (the test machines run the suite as root).
  (process.getuid?.() === 0 ? it : it.skip)(
    'on a full disk serves mirrored pulls without keeping them, and keeps what fits again',
    async () => {
      const storage = join(work.path, 'full');
      await mkdir(storage);
      await run('mount', ['-t', 'tmpfs', '-o', 'size=8m,mode=0755', 'tmpfs', storage]);
      let berth: RegistryProcess | undefined;
      try {
        berth = await berthWith('full', [], storage);
        const driver = new FilesystemDriver(storage);
        const big = await pushPlatformImage(
          upstream,
          'library/big',
          'amd64',
          12 * 1024 * 1024,
          work.path,
          '1',
        );
        for (const round of [1, 2]) {
          await crane(
            'pull',
            '--format',
            'oci',
            `${berth.host}/${prefix}/library/big:1`,
            join(work.path, `big-${round}`),
          );
          // Served from upstream each time: the disk had no room for it.
          expect(upstreamGets(`library/big/blobs/${big.layer}`)).toBe(round);
        }
        // Pulls that waited on a fill storage refused fetch it themselves instead of failing.
        const concurrent = await Promise.all(
          Array.from({ length: 4 }, async () => {
            const answer = await fetch(`${berth?.url}/v2/${prefix}/library/big/blobs/${big.layer}`);
            const bytes = Buffer.from(await answer.arrayBuffer());
            return { status: answer.status, digest: digestOf(bytes) };
          }),
        );
        expect(concurrent).toEqual(
          Array.from({ length: 4 }, () => ({ status: 200, digest: big.layer })),
        );
        expect((await storedBlobs(driver)).has(big.layer)).toBe(false);
        const metrics = await (await fetch(`${berth.url}/metrics`)).text();
        expect(metrics).toMatch(
          /berth_registry_mirror_requests_total\{mirror="up.test",kind="blob",outcome="uncached"\} [2-9]/,
        );
        // The refused fills left nothing behind: a small image is kept and served from storage.
        const small = await pushPlatformImage(
          upstream,
          'library/small',
          'amd64',
          256 * 1024,
          work.path,
          '1',
        );
        for (const round of [1, 2]) {
          await crane(
            'pull',
            '--format',
            'oci',
            `${berth.host}/${prefix}/library/small:1`,
            join(work.path, `small-${round}`),
          );
        }
        expect(upstreamGets(`library/small/blobs/${small.layer}`)).toBe(1);
        expect((await storedBlobs(driver)).has(small.layer)).toBe(true);
      } finally {
        await berth?.stop();
        await run('umount', [storage], { allowFailure: true });
      }
    },
    120_000,
  );
});
