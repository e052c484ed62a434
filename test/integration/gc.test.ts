import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CollectorLease } from '../../src/registry/gc/lease.ts';
import { berthCli } from '../support/cli.ts';
import {
  berthGc,
  gcStorages,
  type GcStorage,
  gcContent,
  type GcContent,
  deleteTag,
  metricValue,
  pushLooseBlob,
  referencedThroughApi,
  storedBlobs,
  writeGcConfig,
} from '../support/gc.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { s3Tool, startS3Server, type S3Server } from '../support/s3.ts';
import { describeWithTools } from '../support/tools.ts';

/** Garbage collection on filesystem and S3 storage, with crane and oras against real processes. */
describeWithTools(['crane', 'oras', s3Tool], 'garbage collection', (tools) => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let s3: S3Server;
  beforeAll(async () => {
    work = await temporaryDirectory('gc');
    s3 = await startS3Server();
  });
  afterAll(async () => {
    await s3?.stop();
    await work?.remove();
  });

  const crane = (...args: string[]) => run(tools.crane as string, [...args, '--insecure']);
  const drivers = gcStorages(() => s3);

  const start = async (setup: GcStorage, gc: Record<string, unknown>): Promise<RegistryProcess> => {
    const config = await writeGcConfig(work.path, setup.storage, gc);
    return startBerth(undefined, {
      extraArgs: ['--config', config, '--log-level', 'warn'],
      env: setup.env,
    });
  };
  const check = async (setup: GcStorage): Promise<string> => {
    const config = await writeGcConfig(work.path, setup.storage, {});
    const result = await run(
      process.execPath,
      [berthCli(), 'check', '--config', config, '--verify-content'],
      { env: setup.env },
    );
    return result.stdout;
  };
  const content = (): GcContent =>
    gcContent({ crane: tools.crane as string, oras: tools.oras as string }, work.path);
  const push = (reference: string, bytes = 48 * 1024): Promise<string> =>
    content().push(reference, bytes);

  for (const [name, makeSetup] of Object.entries(drivers)) {
    it(`removes exactly the unreferenced set on ${name}, as its dry run predicted`, async () => {
      const setup = await makeSetup();
      const registry = await start(setup, {});
      const host = registry.host;
      const firstWrite = Date.now();
      try {
        const kept = await push(`${host}/team/app:v1`);
        const dropped = await push(`${host}/team/app:old`);
        const droppedManifest = JSON.parse(
          (await crane('manifest', `${host}/team/app@${dropped}`)).stdout,
        ) as { config: { digest: string }; layers: { digest: string }[] };
        await deleteTag(registry.url, 'team/app', 'old');
        const [amd, arm] = await content().pushIndexOfUntaggedChildren(registry, 'team/multi');
        // A referrer (untagged, its subject tagged) and a blob no manifest names.
        await content().attachSbom(`${host}/team/app:v1`);
        const loose = await pushLooseBlob(registry.url, 'team/app', randomBytes(5000));

        const gcConfig = await writeGcConfig(work.path, setup.storage, {
          gracePeriod: '3s',
          untagged: 'delete',
        });
        // Inside the grace period nothing goes: one that covers every write of this test (the
        // pushes above take more than 3 s on a loaded machine).
        const covering = await writeGcConfig(work.path, setup.storage, {
          gracePeriod: `${Math.ceil((Date.now() - firstWrite) / 1000) + 30}s`,
          untagged: 'delete',
        });
        expect(await berthGc(covering, { dryRun: true, env: setup.env })).toEqual([]);
        await sleep(3500);
        const predicted = await berthGc(gcConfig, { dryRun: true, env: setup.env });
        const removed = await berthGc(gcConfig, { env: setup.env });
        expect(removed).toEqual(predicted);
        const expected = [
          `manifest team/app@${dropped}`,
          `link team/app ${loose}`,
          `link team/app ${droppedManifest.config.digest}`,
          ...droppedManifest.layers.map((layer) => `link team/app ${layer.digest}`),
        ];
        // Every expected link and manifest went, and the blobs only they held.
        for (const line of expected) expect(removed).toContain(line);
        const removedBlobs = removed.filter((line) => line.startsWith('blob '));
        expect(removedBlobs.map((line) => line.split(' ')[1]).sort()).toEqual(
          [
            dropped,
            loose,
            droppedManifest.config.digest,
            ...droppedManifest.layers.map((l) => l.digest),
          ].sort(),
        );
        expect(removed.filter((line) => line.startsWith('manifest '))).toEqual([
          `manifest team/app@${dropped}`,
        ]);
        // Referenced content is all still there and pulls.
        expect((await crane('digest', `${host}/team/app:v1`)).stdout.trim()).toBe(kept);
        await crane('pull', `${host}/team/app:v1`, `${work.path}/${name}-v1.tar`);
        await crane('pull', `${host}/team/multi@${amd}`, `${work.path}/${name}-amd.tar`);
        await crane('pull', `${host}/team/multi@${arm}`, `${work.path}/${name}-arm.tar`);
        const referrers = (await (
          await fetch(`${registry.url}/v2/team/app/referrers/${kept}`)
        ).json()) as { manifests: unknown[] };
        expect(referrers.manifests).toHaveLength(1);
        expect(await check(setup)).toMatch(/; 0 problems/);
        expect(await storedBlobs(setup.driver)).toEqual(await referencedThroughApi(registry.url));
      } finally {
        await registry.stop();
      }
    }, 120_000);
  }

  it('lets one collector in at a time across processes sharing storage', async () => {
    const setup = await drivers.filesystem!();
    // Exactly one of many contenders takes a free lease.
    const contenders = Array.from({ length: 6 }, () => new CollectorLease(setup.driver, 4000));
    const taken = await Promise.all(contenders.map((lease) => lease.acquire()));
    expect(taken.filter(Boolean)).toHaveLength(1);
    const holder = contenders[taken.indexOf(true)] as CollectorLease;

    const gc = { interval: '300ms', gracePeriod: '1s' };
    const first = await start(setup, gc);
    const second = await start(setup, gc);
    try {
      const runs = (registry: RegistryProcess, result: string) =>
        metricValue(registry.url, `berth_registry_gc_runs_total{result="${result}"}`);
      await sleep(2000);
      // The lease is renewed past its 4 s: both registries keep finding it held.
      for (const registry of [first, second]) {
        expect(await runs(registry, 'skipped')).toBeGreaterThan(0);
        expect(await runs(registry, 'success')).toBe(0);
      }
      await sleep(3000);
      expect(await holder.held()).toBe(true);
      await holder.release();
      await sleep(3000);
      for (const registry of [first, second]) {
        expect(await runs(registry, 'success')).toBeGreaterThan(0);
        expect(await runs(registry, 'failure')).toBe(0);
        expect(
          await metricValue(registry.url, 'berth_registry_gc_last_success_timestamp_seconds'),
        ).toBeGreaterThan(0);
      }
    } finally {
      await first.stop();
      await second.stop();
    }
  }, 60_000);
});
