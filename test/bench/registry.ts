/**
 * Berth beside CNCF distribution (Debian's docker-registry), same machine, same run, same
 * clients. Prints, for each: 1 GiB monolithic push, 1 GiB pull, 1 GiB chunked push (5 MiB
 * chunks), manifest GET requests/s with 32 connections and p99, and peak RSS during the push.
 *
 *   npm run bench                 # 1 GiB blobs, storage on tmpfs and on disk, 5 rounds
 *   BENCH_BLOB_MIB=256 BENCH_STORAGE=memory BENCH_ROUNDS=3 npm run bench
 *
 * Each round measures both registries, each from fresh storage, the one going first swapping
 * every round; the report gives every round's figures and the median of the per-round ratios.
 *
 * On tmpfs (/dev/shm) the figures are the registries' own; on disk both are bounded by the
 * disk's write speed (about 300 MB/s on the project's machines). Berth runs from dist/, as
 * deployed; `npm run bench` builds it first.
 *
 * Clients: curl for monolithic push and pull, a keep-alive Node client for chunks, wrk for
 * manifest GETs. Not a test: it asserts nothing, it measures.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { temporaryDirectory } from '../support/processes.ts';
import { startBerth, startDistribution, type RegistryProcess } from '../support/registries.ts';
import { findTool } from '../support/tools.ts';
import {
  chunkedPush,
  makeBlob,
  manifestLoad,
  monolithicPush,
  peakRss,
  pull,
  pushSmallImage,
  type BlobFile,
} from './registry-clients.ts';
import {
  comparisonTable,
  machineLine,
  orderOfRound,
  roundsFromEnvironment,
  type Scenario,
} from './rounds.ts';

const blobMiB = Number(process.env.BENCH_BLOB_MIB ?? 1024);
const manifestSeconds = Number(process.env.BENCH_MANIFEST_SECONDS ?? 10);

interface Figures {
  pushMBps: number;
  pullMBps: number;
  chunkedPushMBps: number;
  manifestRps: number;
  manifestP99ms: number;
  peakRssMB: number;
}

async function measure(registry: RegistryProcess, blob: BlobFile, work: string): Promise<Figures> {
  const pid = registry.daemon.child.pid as number;
  const pushMBps = await monolithicPush(registry.url, 'bench/mono', blob);
  const peakRssMB = await peakRss(pid);
  const pullMBps = await pull(registry.url, 'bench/mono', blob);
  const chunkedPushMBps = await chunkedPush(registry.url, 'bench/chunked', blob);
  const manifest = await pushSmallImage(registry.host, work);
  const { rps, p99ms } = await manifestLoad(registry.url, manifest.byTag, manifestSeconds);
  return { pushMBps, pullMBps, chunkedPushMBps, manifestRps: rps, manifestP99ms: p99ms, peakRssMB };
}

type Side = 'berth' | 'distribution';

const scenarios: Scenario<Figures>[] = [
  {
    name: `${blobMiB} MiB monolithic push`,
    unit: 'MB/s',
    figure: (f) => f.pushMBps,
    higherIsBetter: true,
  },
  { name: `${blobMiB} MiB pull`, unit: 'MB/s', figure: (f) => f.pullMBps, higherIsBetter: true },
  {
    name: `${blobMiB} MiB chunked push (5 MiB chunks)`,
    unit: 'MB/s',
    figure: (f) => f.chunkedPushMBps,
    higherIsBetter: true,
  },
  {
    name: 'manifest GET, 32 connections',
    unit: 'req/s',
    figure: (f) => f.manifestRps,
    higherIsBetter: true,
  },
  { name: 'manifest GET p99', unit: 'ms', figure: (f) => f.manifestP99ms, higherIsBetter: false },
  {
    name: 'peak RSS after the push',
    unit: 'MB',
    figure: (f) => f.peakRssMB,
    higherIsBetter: false,
    absolute: true,
  },
];

async function measureOnce(
  side: Side,
  parent: string,
  blob: BlobFile,
  work: string,
): Promise<Figures> {
  const storage = await mkdtemp(join(parent, `berth-bench-${side}-`));
  const registry =
    side === 'berth'
      ? await startBerth(storage, { extraArgs: ['--log-level', 'warn'], built: true })
      : await startDistribution(storage, work);
  try {
    return await measure(registry, blob, work);
  } finally {
    await registry.stop();
    await rm(storage, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  for (const tool of ['curl', 'wrk', 'docker-registry']) {
    if (!findTool(tool)) throw new Error(`${tool} is missing: run test/tools/install.sh`);
  }
  const rounds = roundsFromEnvironment(5);
  const work = await temporaryDirectory('bench');
  try {
    const machine = await machineLine();
    process.stdout.write(`bench: ${machine}\nbench: writing a ${blobMiB} MiB random blob\n`);
    const blob = await makeBlob(work.path, blobMiB);
    const media =
      (process.env.BENCH_STORAGE ?? 'both') === 'both'
        ? ['memory', 'disk']
        : [process.env.BENCH_STORAGE as string];
    const report: string[] = [`${blobMiB} MiB blob, ${rounds} alternating rounds, ${machine}`];
    for (const medium of media) {
      const parent = medium === 'memory' ? '/dev/shm' : tmpdir();
      const results: { berth: Figures; distribution: Figures }[] = [];
      for (let round = 0; round < rounds; round += 1) {
        const figures: Partial<Record<Side, Figures>> = {};
        for (const side of orderOfRound<Side>(round, ['berth', 'distribution'])) {
          process.stdout.write(`bench: ${parent}, round ${round + 1}/${rounds}: ${side}\n`);
          figures[side] = await measureOnce(side, parent, blob, work.path);
        }
        results.push(figures as { berth: Figures; distribution: Figures });
      }
      report.push(
        '',
        `storage on ${medium === 'memory' ? 'tmpfs' : 'disk'} (${parent})`,
        '',
        ...comparisonTable(scenarios, results),
      );
    }
    process.stdout.write(`\n${report.join('\n')}\n`);
  } finally {
    await work.remove();
  }
}

await main();
