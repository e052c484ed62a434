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
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, startDistribution, type RegistryProcess } from '../support/registries.ts';
import { findTool } from '../support/tools.ts';
import { machineLine, median, orderOfRound, roundsFromEnvironment } from './rounds.ts';

const blobMiB = Number(process.env.BENCH_BLOB_MIB ?? 1024);
const chunkBytes = 5 * 1024 * 1024;
const manifestSeconds = Number(process.env.BENCH_MANIFEST_SECONDS ?? 10);

interface Figures {
  pushMBps: number;
  pullMBps: number;
  chunkedPushMBps: number;
  manifestRps: number;
  manifestP99ms: number;
  peakRssMB: number;
}

/** The random blob both registries are sent, on disk. */
interface BlobFile {
  readonly path: string;
  readonly digest: string;
  readonly size: number;
}

async function makeBlob(directory: string): Promise<BlobFile> {
  const path = join(directory, 'blob.bin');
  const handle = await open(path, 'w');
  const hash = createHash('sha256');
  const { randomFill } = await import('node:crypto');
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

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
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
  return (await run('curl', ['-sS', '--fail', ...args], { timeoutMs: 600_000 })).stdout;
}

/** POST, then one PUT carrying the whole blob (what containerd and oras do). */
async function monolithicPush(
  registry: RegistryProcess,
  repository: string,
  blob: BlobFile,
): Promise<number> {
  const location = await startUpload(registry.url, repository);
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

async function pull(
  registry: RegistryProcess,
  repository: string,
  blob: { digest: string; size: number },
): Promise<number> {
  const started = performance.now();
  await curl(['-o', '/dev/null', `${registry.url}/v2/${repository}/blobs/${blob.digest}`]);
  return blob.size / 1e6 / ((performance.now() - started) / 1000);
}

/** POST, PATCH 5 MiB chunks with Content-Range over one keep-alive connection, then PUT. */
async function chunkedPush(
  registry: RegistryProcess,
  repository: string,
  blob: BlobFile,
): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let location = await startUpload(registry.url, repository);
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
            else resolve(new URL(res.headers.location as string, registry.url).toString());
          });
        },
      );
      req.on('error', reject);
      createReadStream(blob.path, { start: offset, end, highWaterMark: 1024 * 1024 }).pipe(req);
    });
  }
  const done = await fetch(withDigest(location, blob.digest), { method: 'PUT' });
  if (done.status !== 201) throw new Error(`PUT: ${done.status}`);
  agent.destroy();
  return blob.size / 1e6 / ((performance.now() - started) / 1000);
}

/** wrk, 2 threads, 32 connections, against one manifest by tag. */
async function manifestLoad(
  registry: RegistryProcess,
  path: string,
): Promise<{ rps: number; p99ms: number }> {
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
        `${registry.url}${path}`,
      ],
      {
        timeoutMs: (manifestSeconds + 30) * 1000,
      },
    )
  ).stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]);
  const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(output);
  const scale = { us: 0.001, ms: 1, s: 1000 } as const;
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  if (non2xx) throw new Error(`manifest GET answered ${non2xx[1]} errors`);
  return { rps, p99ms: p99 ? Number(p99[1]) * scale[p99[2] as keyof typeof scale] : NaN };
}

async function pushSmallImage(registry: RegistryProcess, work: string): Promise<string> {
  const crane = findTool('crane');
  if (!crane) throw new Error('crane is missing: run test/tools/install.sh');
  const layer = await randomLayerTar(work, `small-${registry.host.replace(/\W/g, '')}`, 64 * 1024);
  await run(crane, ['append', '--insecure', '-f', layer, '-t', `${registry.host}/bench/small:v1`]);
  return '/v2/bench/small/manifests/v1';
}

async function measure(registry: RegistryProcess, blob: BlobFile, work: string): Promise<Figures> {
  const pid = registry.daemon.child.pid as number;
  const pushMBps = await monolithicPush(registry, 'bench/mono', blob);
  const peakRssMB = await peakRss(pid);
  const pullMBps = await pull(registry, 'bench/mono', blob);
  const chunkedPushMBps = await chunkedPush(registry, 'bench/chunked', blob);
  const manifest = await pushSmallImage(registry, work);
  const { rps, p99ms } = await manifestLoad(registry, manifest);
  return { pushMBps, pullMBps, chunkedPushMBps, manifestRps: rps, manifestP99ms: p99ms, peakRssMB };
}

type Side = 'berth' | 'distribution';

/** A scenario: its name, unit, how a round's figure is read, and whether higher is better. */
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

/** Berth's advantage in one round: above 1 when Berth did better. */
function ratio(scenario: Scenario, berth: Figures, distribution: Figures): number {
  const ours = scenario.figure(berth);
  const theirs = scenario.figure(distribution);
  return scenario.higherIsBetter ? ours / theirs : theirs / ours;
}

/** Per-round figures and the median ratio, one row per scenario. */
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
    const blob = await makeBlob(work.path);
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
        ...table(results),
      );
    }
    process.stdout.write(`\n${report.join('\n')}\n`);
  } finally {
    await work.remove();
  }
}

await main();
