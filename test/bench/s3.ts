/**
 * Berth beside CNCF distribution 2.8 (Debian's docker-registry), both on the S3 driver and on the
 * same S3 server (versitygw, posix backend) in the same run, with the same clients. For each:
 * 1 GiB monolithic push, 1 GiB pull, 1 GiB chunked push (5 MiB chunks), peak RSS of the replica
 * during the pushes, and manifest GET requests/s with 32 connections against one replica and
 * against three replicas on the one bucket behind a round-robin balancer.
 *
 *   npm run bench:s3                                   # 1 GiB blobs, S3 data on tmpfs, 5 rounds
 *   BENCH_ROUNDS=3 BENCH_S3_STORAGE=disk npm run bench:s3
 *
 * Each round measures both registries, each on a fresh bucket, the one going first swapping every
 * round; the report gives every round's figures and the median of the per-round ratios. The S3
 * server, the registries and the clients share the machine's cores, as they would share a node.
 * versitygw runs with --keep-alive (AWS S3 keeps connections open; versitygw by default closes
 * each after one answer, which would make every S3 request of either registry a new connection).
 *
 * Clients: curl for monolithic push and pull, a keep-alive Node client for chunks, wrk for
 * manifest GETs. The three-replica figures go through HAProxy, round robin per request (haproxy.ts;
 * the tests' Node balancer would cap both sides at its own speed). Not a test: it asserts
 * nothing, it measures.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { temporaryDirectory } from '../support/processes.ts';
import type { RegistryProcess } from '../support/registries.ts';
import {
  s3Tool,
  startBerthOnS3,
  startDistributionOnS3,
  startS3Server,
  type S3Server,
} from '../support/s3.ts';
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
import { startHaproxy } from './haproxy.ts';
import {
  comparisonTable,
  machineLine,
  orderOfRound,
  roundsFromEnvironment,
  type Scenario,
} from './rounds.ts';

const blobMiB = Number(process.env.BENCH_BLOB_MIB ?? 1024);
const manifestSeconds = Number(process.env.BENCH_MANIFEST_SECONDS ?? 10);
const storageMedium = process.env.BENCH_S3_STORAGE ?? 'memory';

interface Figures {
  pushMBps: number;
  pullMBps: number;
  chunkedPushMBps: number;
  /** VmHWM after the two pushes: the bound is on a replica during a 1 GiB push. */
  pushPeakRssMB: number;
  /** VmHWM after the pull and the manifest loads as well. */
  peakRssMB: number;
  manifestRps: number;
  manifestP99ms: number;
  manifestRps3: number;
  manifestP99ms3: number;
  /** By digest, as containerd fetches a manifest once it has resolved the tag. */
  manifestByDigestRps: number;
  manifestByDigestRps3: number;
  /** The largest peak RSS among the three replicas, after their manifest load. */
  peakRssMB3: number;
}

type Side = 'berth' | 'distribution';

/** One replica of `side` on `bucket`; `index` keeps distribution's config files apart. */
async function startReplica(
  side: Side,
  server: S3Server,
  bucket: string,
  work: string,
  index: number,
): Promise<RegistryProcess> {
  if (side === 'berth')
    return startBerthOnS3(server, bucket, { built: true, extraArgs: ['--log-level', 'warn'] });
  const configDir = await mkdtemp(join(work, `distribution-${index}-`));
  return startDistributionOnS3(server, bucket, configDir);
}

async function measureOnce(
  side: Side,
  server: S3Server,
  blob: BlobFile,
  work: string,
): Promise<Figures> {
  const bucket = await server.createBucket();
  const replicas: RegistryProcess[] = [];
  try {
    const single = await startReplica(side, server, bucket, work, 0);
    replicas.push(single);
    const pid = single.daemon.child.pid as number;
    const pushMBps = await monolithicPush(single.url, 'bench/mono', blob);
    const chunkedPushMBps = await chunkedPush(single.url, 'bench/chunked', blob);
    const pushPeakRssMB = await peakRss(pid);
    const pullMBps = await pull(single.url, 'bench/mono', blob);
    const manifest = await pushSmallImage(single.host, work);
    const one = await manifestLoad(single.url, manifest.byTag, manifestSeconds);
    const oneByDigest = await manifestLoad(single.url, manifest.byDigest, manifestSeconds);
    const peakRssMB = await peakRss(pid);

    for (let index = 1; index < 3; index += 1)
      replicas.push(await startReplica(side, server, bucket, work, index));
    const balancer = await startHaproxy(
      replicas.map((replica) => replica.host),
      work,
    );
    let three: { rps: number; p99ms: number };
    let threeByDigest: { rps: number; p99ms: number };
    try {
      three = await manifestLoad(balancer.url, manifest.byTag, manifestSeconds);
      threeByDigest = await manifestLoad(balancer.url, manifest.byDigest, manifestSeconds);
    } finally {
      await balancer.stop();
    }
    const peaks = await Promise.all(
      replicas.map((replica) => peakRss(replica.daemon.child.pid as number)),
    );
    return {
      pushMBps,
      pullMBps,
      chunkedPushMBps,
      pushPeakRssMB,
      peakRssMB,
      manifestRps: one.rps,
      manifestP99ms: one.p99ms,
      manifestRps3: three.rps,
      manifestP99ms3: three.p99ms,
      manifestByDigestRps: oneByDigest.rps,
      manifestByDigestRps3: threeByDigest.rps,
      peakRssMB3: Math.max(...peaks),
    };
  } finally {
    for (const replica of replicas) await replica.stop();
    await server.removeBucket(bucket);
  }
}

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
    name: `peak RSS of the replica during the ${blobMiB} MiB pushes`,
    unit: 'MB',
    figure: (f) => f.pushPeakRssMB,
    higherIsBetter: false,
    absolute: true,
  },
  {
    name: 'peak RSS of the replica after its pull and manifest loads too',
    unit: 'MB',
    figure: (f) => f.peakRssMB,
    higherIsBetter: false,
    absolute: true,
  },
  {
    name: 'manifest GET by tag, 32 connections, 1 replica',
    unit: 'req/s',
    figure: (f) => f.manifestRps,
    higherIsBetter: true,
  },
  {
    name: 'manifest GET p99, 1 replica',
    unit: 'ms',
    figure: (f) => f.manifestP99ms,
    higherIsBetter: false,
  },
  {
    name: 'manifest GET by tag, 32 connections, 3 replicas round-robin',
    unit: 'req/s',
    figure: (f) => f.manifestRps3,
    higherIsBetter: true,
  },
  {
    name: 'manifest GET p99, 3 replicas',
    unit: 'ms',
    figure: (f) => f.manifestP99ms3,
    higherIsBetter: false,
  },
  {
    name: 'manifest GET by digest, 32 connections, 1 replica',
    unit: 'req/s',
    figure: (f) => f.manifestByDigestRps,
    higherIsBetter: true,
  },
  {
    name: 'manifest GET by digest, 32 connections, 3 replicas round-robin',
    unit: 'req/s',
    figure: (f) => f.manifestByDigestRps3,
    higherIsBetter: true,
  },
  {
    name: 'largest peak RSS of the 3 replicas',
    unit: 'MB',
    figure: (f) => f.peakRssMB3,
    higherIsBetter: false,
    absolute: true,
  },
];

async function main(): Promise<void> {
  for (const tool of ['curl', 'wrk', 'haproxy', 'docker-registry', 'crane', s3Tool]) {
    if (!findTool(tool)) throw new Error(`${tool} is missing: run test/tools/install.sh`);
  }
  const rounds = roundsFromEnvironment(5);
  const parent = storageMedium === 'memory' ? '/dev/shm' : tmpdir();
  const work = await temporaryDirectory('bench-s3');
  const server = await startS3Server({ parent, keepAlive: true });
  try {
    const machine = await machineLine();
    process.stdout.write(`bench: ${machine}\nbench: writing a ${blobMiB} MiB random blob\n`);
    const blob = await makeBlob(work.path, blobMiB);
    const results: { berth: Figures; distribution: Figures }[] = [];
    for (let round = 0; round < rounds; round += 1) {
      const figures: Partial<Record<Side, Figures>> = {};
      for (const side of orderOfRound<Side>(round, ['berth', 'distribution'])) {
        process.stdout.write(`bench: round ${round + 1}/${rounds}: ${side}\n`);
        figures[side] = await measureOnce(side, server, blob, work.path);
        process.stdout.write(`bench: ${side} ${JSON.stringify(figures[side])}\n`);
      }
      results.push(figures as { berth: Figures; distribution: Figures });
    }
    const report = [
      `${blobMiB} MiB blob, ${rounds} alternating rounds, ${s3Tool} with its data on ${storageMedium === 'memory' ? 'tmpfs' : 'disk'} (${parent}), ${machine}`,
      '',
      ...comparisonTable(scenarios, results),
    ];
    process.stdout.write(`\n${report.join('\n')}\n`);
  } finally {
    await server.stop();
    await work.remove();
  }
}

await main();
