/**
 * The cost of one garbage collection: time and peak memory of `berth gc` (dry run, then the
 * real run) over a registry of 10,000 blobs and 1,000 manifests, on each driver (a filesystem
 * directory on disk, and S3 through versitygw on loopback).
 *
 *   npm run bench:gc
 *   BENCH_GC_MANIFESTS=200 npm run bench:gc     # a smaller registry, same shape
 *
 * Shape: 10 repositories of 100 image manifests each, every manifest a config and 8 layers of
 * its own (1 KiB each: the collector's cost is in listing, stats and reads, not in bytes). Half
 * the manifests are untagged and half of every repository's layer links are of untagged images,
 * so with gc.untagged: delete the run removes 500 manifests, 4,500 layer links and 5,000 blobs.
 * Storage is written directly through the driver, as Berth lays it out, then left past the
 * grace period. Peak memory is the process's maximum resident set (GNU time). Berth runs from
 * dist/, as deployed; `npm run bench:gc` builds it first. Not a test: it measures.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDigest } from '../../src/registry/reference.ts';
import type { StorageDriver } from '../../src/registry/storage/driver.ts';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import { paths } from '../../src/registry/storage/paths.ts';
import { berthCli } from '../support/cli.ts';
import { writeGcConfig } from '../support/gc.ts';
import { imageManifest, ociManifestType, sha256 } from '../support/manifests.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startS3Server } from '../support/s3.ts';
import { machineLine } from './rounds.ts';

const manifestCount = Number(process.env.BENCH_GC_MANIFESTS ?? 1000);
const repositories = 10;
const layersPerManifest = 8;
const blobBytes = 1024;
const concurrency = 16;

interface Run {
  seconds: number;
  peakMB: number;
  summary: string;
}

/** Writes the registry through `driver`; returns how many blobs it holds. */
async function populate(driver: StorageDriver): Promise<number> {
  const tasks: (() => Promise<void>)[] = [];
  let blobs = 0;
  for (let m = 0; m < manifestCount; m += 1) {
    const repository = `bench/repo-${m % repositories}`;
    const tagged = m % 2 === 0;
    tasks.push(async () => {
      const config = randomBytes(blobBytes);
      const layers = Array.from({ length: layersPerManifest }, () => randomBytes(blobBytes));
      for (const content of [config, ...layers]) {
        const digest = parseDigest(sha256(content));
        await driver.putContent(paths.blobData(digest), content);
        await driver.putContent(paths.layerLink(repository, digest), digest.value);
      }
      const manifest = imageManifest(config, layers);
      const digest = parseDigest(sha256(manifest));
      await driver.putContent(paths.blobData(digest), manifest);
      await driver.putContent(paths.revisionMediaType(repository, digest), ociManifestType);
      await driver.putContent(paths.revisionLink(repository, digest), digest.value);
      if (tagged) {
        const tag = `t${m}`;
        await driver.putContent(paths.tagIndexLink(repository, tag, digest), digest.value);
        await driver.putContent(paths.tagCurrentLink(repository, tag), digest.value);
      }
    });
    blobs += 2 + layersPerManifest;
  }
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < tasks.length) await (tasks[next++] as () => Promise<void>)();
    }),
  );
  return blobs;
}

async function collect(config: string, env: NodeJS.ProcessEnv, dryRun: boolean): Promise<Run> {
  const result = await run(
    '/usr/bin/time',
    [
      '-f',
      'BENCH %e %M',
      process.execPath,
      berthCli(true),
      'gc',
      '--config',
      config,
      ...(dryRun ? ['--dry-run'] : []),
    ],
    { env, timeoutMs: 3_600_000 },
  );
  const [seconds, kilobytes] = (/BENCH (\S+) (\d+)/.exec(result.stderr) ?? []).slice(1);
  const summary = result.stdout.trim().split('\n').at(-1) ?? '';
  return { seconds: Number(seconds), peakMB: Number(kilobytes) / 1024, summary };
}

async function bench(
  name: string,
  driver: StorageDriver,
  storage: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  directory: string,
): Promise<void> {
  const started = Date.now();
  const blobs = await populate(driver);
  const populated = (Date.now() - started) / 1000;
  await sleep(2000);
  const config = await writeGcConfig(directory, storage, { gracePeriod: '1s', untagged: 'delete' });
  const dry = await collect(config, env, true);
  const real = await collect(config, env, false);
  const again = await collect(config, env, false);
  console.log(
    `${name}: ${blobs} blobs, ${manifestCount} manifests (written in ${populated.toFixed(1)} s)`,
  );
  for (const [label, figures] of [
    ['dry run', dry],
    ['collection', real],
    ['collection, nothing left to remove', again],
  ] as const) {
    console.log(
      `  ${label}: ${figures.seconds.toFixed(2)} s, peak RSS ${figures.peakMB.toFixed(0)} MB — ${figures.summary}`,
    );
  }
}

const work = await temporaryDirectory('bench-gc');
const s3 = await startS3Server({ keepAlive: true });
try {
  console.log(await machineLine());
  const root = join(work.path, 'fs');
  await bench(
    'filesystem (disk)',
    new FilesystemDriver(root),
    { filesystem: { rootDirectory: root } },
    process.env,
    work.path,
  );
  const bucket = await s3.createBucket();
  await bench(
    'S3 (versitygw, loopback)',
    s3.driver(bucket),
    { s3: { bucket, endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true } },
    s3.env,
    work.path,
  );
} finally {
  await s3.stop();
  await work.remove();
}
