/**
 * Berth beside CNCF distribution (Debian's docker-registry), same machine, same run, same
 * clients. Prints, for each: 1 GiB monolithic push, 1 GiB pull, 1 GiB chunked push (5 MiB
 * chunks), manifest GET requests/s with 32 connections and p99, and peak RSS during the push.
 *
 *   npm run bench                 # 1 GiB blobs, storage on tmpfs and on disk
 *   BENCH_BLOB_MIB=256 BENCH_STORAGE=memory npm run bench
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
import { cpus, tmpdir } from 'node:os';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, startDistribution, type RegistryProcess } from '../support/registries.ts';
import { findTool } from '../support/tools.ts';

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

async function makeBlob(
  directory: string,
): Promise<{ path: string; digest: string; size: number }> {
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
  blob: { path: string; digest: string; size: number },
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
  blob: { path: string; digest: string; size: number },
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

async function measure(
  registry: RegistryProcess,
  blob: { path: string; digest: string; size: number },
  work: string,
): Promise<Figures> {
  const pid = registry.daemon.child.pid as number;
  const pushMBps = await monolithicPush(registry, 'bench/mono', blob);
  const peakRssMB = await peakRss(pid);
  const pullMBps = await pull(registry, 'bench/mono', blob);
  const chunkedPushMBps = await chunkedPush(registry, 'bench/chunked', blob);
  const manifest = await pushSmallImage(registry, work);
  const { rps, p99ms } = await manifestLoad(registry, manifest);
  return { pushMBps, pullMBps, chunkedPushMBps, manifestRps: rps, manifestP99ms: p99ms, peakRssMB };
}

function row(
  name: string,
  berth: number,
  distribution: number,
  unit: string,
  higherIsBetter = true,
): string {
  const ratio = higherIsBetter ? berth / distribution : distribution / berth;
  return `| ${name} | ${berth.toFixed(1)} ${unit} | ${distribution.toFixed(1)} ${unit} | ${ratio.toFixed(2)}x |`;
}

async function main(): Promise<void> {
  for (const tool of ['curl', 'wrk', 'docker-registry']) {
    if (!findTool(tool)) throw new Error(`${tool} is missing: run test/tools/install.sh`);
  }
  const work = await temporaryDirectory('bench');
  try {
    process.stdout.write(`bench: writing a ${blobMiB} MiB random blob\n`);
    const blob = await makeBlob(work.path);
    const media =
      (process.env.BENCH_STORAGE ?? 'both') === 'both'
        ? ['memory', 'disk']
        : [process.env.BENCH_STORAGE as string];
    const cpu =
      (await readFile('/proc/cpuinfo', 'utf8')).match(/model name\s*:\s*(.*)/)?.[1] ??
      'unknown CPU';
    const report: string[] = [
      `${blobMiB} MiB blob, ${cpu}, ${cpus().length} cores, Node ${process.version}`,
    ];
    for (const medium of media) {
      const parent = medium === 'memory' ? '/dev/shm' : tmpdir();
      const results: Record<string, Figures> = {};
      for (const name of ['distribution', 'berth'] as const) {
        const storage = await mkdtemp(join(parent, `berth-bench-${name}-`));
        const registry =
          name === 'berth'
            ? await startBerth(storage, { extraArgs: ['--log-level', 'warn'], built: true })
            : await startDistribution(storage, work.path);
        try {
          process.stdout.write(`bench: measuring ${name} with storage in ${parent}\n`);
          results[name] = await measure(registry, blob, work.path);
        } finally {
          await registry.stop();
          await rm(storage, { recursive: true, force: true });
        }
      }
      const berth = results.berth as Figures;
      const distribution = results.distribution as Figures;
      report.push(
        '',
        `storage on ${medium === 'memory' ? 'tmpfs' : 'disk'} (${parent})`,
        '',
        '| measure | berth | distribution | berth vs distribution |',
        '| --- | --- | --- | --- |',
        row(`${blobMiB} MiB monolithic push`, berth.pushMBps, distribution.pushMBps, 'MB/s'),
        row(`${blobMiB} MiB pull`, berth.pullMBps, distribution.pullMBps, 'MB/s'),
        row(
          `${blobMiB} MiB chunked push (5 MiB chunks)`,
          berth.chunkedPushMBps,
          distribution.chunkedPushMBps,
          'MB/s',
        ),
        row('manifest GET, 32 connections', berth.manifestRps, distribution.manifestRps, 'req/s'),
        row('manifest GET p99', berth.manifestP99ms, distribution.manifestP99ms, 'ms', false),
        row('peak RSS after the push', berth.peakRssMB, distribution.peakRssMB, 'MB', false),
      );
    }
    process.stdout.write(`\n${report.join('\n')}\n`);
  } finally {
    await work.remove();
  }
}

await main();
