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
 * manifest GETs. The three-replica figure goes through test/support/round-robin.ts, a Node
 * balancer in this process, which caps what either side can reach there. Not a test: it asserts
 * nothing, it measures.
 */
import { createHash, randomFill } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, stat } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import type { RegistryProcess } from '../support/registries.ts';
import { startRoundRobinBalancer } from '../support/round-robin.ts';
import {
  s3Tool,
  startBerthOnS3,
  startDistributionOnS3,
  startS3Server,
  type S3Server,
} from '../support/s3.ts';
import { findTool } from '../support/tools.ts';
import { machineLine, median, orderOfRound, roundsFromEnvironment } from './rounds.ts';

const blobMiB = Number(process.env.BENCH_BLOB_MIB ?? 1024);
const chunkBytes = 5 * 1024 * 1024;
const manifestSeconds = Number(process.env.BENCH_MANIFEST_SECONDS ?? 10);
const storageMedium = process.env.BENCH_S3_STORAGE ?? 'memory';

interface Figures {
  pushMBps: number;
  pullMBps: number;
  chunkedPushMBps: number;
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

interface BlobFile {
  readonly path: string;
  readonly digest: string;
  readonly size: number;
}

async function makeBlob(directory: string): Promise<BlobFile> {
  const path = join(directory, 'blob.bin');
  const handle = await open(path, 'w');
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(16 * 1024 * 1024);
  for (let written = 0; written < blobMiB * 1024 * 1024; written += chunk.length) {
    await new Promise<void>((resolve, reject) =>
      randomFill(chunk, (error) => (error ? reject(error) : resolve())),
    );
    hash.update(chunk);
    await handle.write(chunk);
  }
  await handle.close();
  return { path, digest: `sha256:${hash.digest('hex')}`, size: (await stat(path)).size };
}

/** VmHWM: the most resident memory the process has had since it started. */
async function peakRss(registry: RegistryProcess): Promise<number> {
  const status = await readFile(`/proc/${registry.daemon.child.pid as number}/status`, 'utf8');
  const match = /VmHWM:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) / 1024 : NaN;
}

async function startUpload(base: string, repository: string): Promise<string> {
  const response = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  if (response.status !== 202) throw new Error(`POST upload: ${response.status}`);
  return new URL(response.headers.get('location') as string, base).toString();
}

function withDigest(location: string, digest: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}digest=${digest}`;
}

async function curl(args: string[]): Promise<string> {
  return (await run('curl', ['-sS', '--fail', ...args], { timeoutMs: 900_000 })).stdout;
}

/** POST, then one PUT carrying the whole blob (what containerd and oras do). */
async function monolithicPush(base: string, repository: string, blob: BlobFile): Promise<number> {
  const location = await startUpload(base, repository);
  const started = performance.now();
  await curl([
    '-X',
    'PUT',
    '-H',
    'Content-Type: application/octet-stream',
    '-T',
    blob.path,
    withDigest(location, blob.digest),
  ]);
  return blob.size / 1e6 / ((performance.now() - started) / 1000);
}

async function pull(base: string, repository: string, blob: BlobFile): Promise<number> {
  const started = performance.now();
  await curl(['-o', '/dev/null', `${base}/v2/${repository}/blobs/${blob.digest}`]);
  return blob.size / 1e6 / ((performance.now() - started) / 1000);
}

/** POST, PATCH 5 MiB chunks with Content-Range over one keep-alive connection, then PUT. */
async function chunkedPush(base: string, repository: string, blob: BlobFile): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let location = await startUpload(base, repository);
  const started = performance.now();
  for (let offset = 0; offset < blob.size; offset += chunkBytes) {
    const end = Math.min(offset + chunkBytes, blob.size) - 1;
    location = await new Promise<string>((resolve, reject) => {
      const req = request(
        location,
        {
          method: 'PATCH',
          agent,
          headers: {
            'Content-Type': 'application/octet-stream',
            'Content-Range': `${offset}-${end}`,
            'Content-Length': end - offset + 1,
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode !== 202) reject(new Error(`PATCH: ${res.statusCode}`));
            else resolve(new URL(res.headers.location as string, base).toString());
          });
        },
      );
      req.on('error', reject);
      createReadStream(blob.path, { start: offset, end, highWaterMark: 1024 * 1024 }).pipe(req);
    });
  }
  const done = await fetch(withDigest(location, blob.digest), { method: 'PUT' });
  if (done.status !== 201) throw new Error(`PUT: ${done.status} ${await done.text()}`);
  agent.destroy();
  return blob.size / 1e6 / ((performance.now() - started) / 1000);
}

/** wrk, 2 threads, 32 connections, against one manifest. */
async function manifestLoad(base: string, path: string): Promise<{ rps: number; p99ms: number }> {
  const output = (
    await run(
      'wrk',
      [
        '-t2',
        '-c32',
        `-d${manifestSeconds}s`,
        '--latency',
        '-H',
        'Accept: application/vnd.oci.image.manifest.v1+json',
        `${base}${path}`,
      ],
      { timeoutMs: (manifestSeconds + 30) * 1000 },
    )
  ).stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]);
  const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(output);
  const scale = { us: 0.001, ms: 1, s: 1000 } as const;
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  if (non2xx) throw new Error(`manifest GET answered ${non2xx[1]} errors`);
  return { rps, p99ms: p99 ? Number(p99[1]) * scale[p99[2] as keyof typeof scale] : NaN };
}

/** Pushes a one-layer image; its manifest's paths by tag and by digest. */
async function pushSmallImage(
  host: string,
  work: string,
): Promise<{ byTag: string; byDigest: string }> {
  const crane = findTool('crane');
  if (!crane) throw new Error('crane is missing: run test/tools/install.sh');
  const layer = await randomLayerTar(work, `small-${host.replace(/\W/g, '')}`, 64 * 1024);
  const reference = `${host}/bench/small:v1`;
  await run(crane, ['append', '--insecure', '-f', layer, '-t', reference]);
  const digest = (await run(crane, ['digest', '--insecure', reference])).stdout.trim();
  return { byTag: '/v2/bench/small/manifests/v1', byDigest: `/v2/bench/small/manifests/${digest}` };
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
    const pushMBps = await monolithicPush(single.url, 'bench/mono', blob);
    const pullMBps = await pull(single.url, 'bench/mono', blob);
    const chunkedPushMBps = await chunkedPush(single.url, 'bench/chunked', blob);
    const peakRssMB = await peakRss(single);
    const manifest = await pushSmallImage(single.host, work);
    const one = await manifestLoad(single.url, manifest.byTag);
    const oneByDigest = await manifestLoad(single.url, manifest.byDigest);

    for (let index = 1; index < 3; index += 1)
      replicas.push(await startReplica(side, server, bucket, work, index));
    const balancer = await startRoundRobinBalancer(replicas.map((replica) => replica.host));
    let three: { rps: number; p99ms: number };
    let threeByDigest: { rps: number; p99ms: number };
    try {
      three = await manifestLoad(balancer.url, manifest.byTag);
      threeByDigest = await manifestLoad(balancer.url, manifest.byDigest);
    } finally {
      await balancer.stop();
    }
    const peaks = await Promise.all(replicas.map(peakRss));
    return {
      pushMBps,
      pullMBps,
      chunkedPushMBps,
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

interface Scenario {
  readonly name: string;
  readonly unit: string;
  readonly figure: (figures: Figures) => number;
  readonly higherIsBetter: boolean;
  /** Judged on its own (a memory bound), not against distribution's figure. */
  readonly absolute?: true;
}

const scenarios: Scenario[] = [
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
    name: 'peak RSS of the replica during the pushes',
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

/** Berth's advantage in one round: above 1 when Berth did better. */
function ratio(scenario: Scenario, berth: Figures, distribution: Figures): number {
  const ours = scenario.figure(berth);
  const theirs = scenario.figure(distribution);
  return scenario.higherIsBetter ? ours / theirs : theirs / ours;
}

function table(rounds: { berth: Figures; distribution: Figures }[]): string[] {
  const lines = [
    `| measure | ${rounds.map((_, index) => `round ${index + 1} berth / distribution`).join(' | ')} | median berth | median distribution | median ratio |`,
    `| --- | ${rounds.map(() => '---').join(' | ')} | --- | --- | --- |`,
  ];
  for (const scenario of scenarios) {
    const cells = rounds.map(({ berth, distribution }) => {
      const pair = `${scenario.figure(berth).toFixed(1)} / ${scenario.figure(distribution).toFixed(1)}`;
      if (scenario.absolute) return pair;
      return `${pair} (${ratio(scenario, berth, distribution).toFixed(2)}x)`;
    });
    const berthMedian = median(rounds.map(({ berth }) => scenario.figure(berth)));
    const distributionMedian = median(
      rounds.map(({ distribution }) => scenario.figure(distribution)),
    );
    const ratioMedian = median(
      rounds.map(({ berth, distribution }) => ratio(scenario, berth, distribution)),
    );
    lines.push(
      `| ${scenario.name} (${scenario.unit}) | ${cells.join(' | ')} | ${berthMedian.toFixed(1)} | ${distributionMedian.toFixed(1)} | ${scenario.absolute ? '-' : `${ratioMedian.toFixed(2)}x`} |`,
    );
  }
  return lines;
}

async function main(): Promise<void> {
  for (const tool of ['curl', 'wrk', 'docker-registry', 'crane', s3Tool]) {
    if (!findTool(tool)) throw new Error(`${tool} is missing: run test/tools/install.sh`);
  }
  const rounds = roundsFromEnvironment(5);
  const parent = storageMedium === 'memory' ? '/dev/shm' : tmpdir();
  const work = await temporaryDirectory('bench-s3');
  const server = await startS3Server({ parent, keepAlive: true });
  try {
    const machine = await machineLine();
    process.stdout.write(`bench: ${machine}\nbench: writing a ${blobMiB} MiB random blob\n`);
    const blob = await makeBlob(work.path);
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
      ...table(results),
    ];
    process.stdout.write(`\n${report.join('\n')}\n`);
  } finally {
    await server.stop();
    await work.remove();
  }
}

await main();
