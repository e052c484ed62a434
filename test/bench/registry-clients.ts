/**
 * The clients the registry benches drive, the same for Berth and for distribution and for any
 * storage behind them: curl for monolithic push and pull, a keep-alive Node client for chunks,
 * wrk for manifest GETs, crane for a small image; and the blob they send and the peak RSS they
 * read.
 */
import { createHash, randomFill } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { randomLayerTar } from '../support/images.ts';
import { run } from '../support/processes.ts';
import { findTool } from '../support/tools.ts';

export const chunkBytes = 5 * 1024 * 1024;

/** The random blob both registries are sent, on disk. */
export interface BlobFile {
  readonly path: string;
  readonly digest: string;
  readonly size: number;
}

export async function makeBlob(directory: string, mebibytes: number): Promise<BlobFile> {
  const path = join(directory, 'blob.bin');
  const handle = await open(path, 'w');
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(16 * 1024 * 1024);
  for (let written = 0; written < mebibytes * 1024 * 1024; written += chunk.length) {
    await new Promise<void>((resolve, reject) =>
      randomFill(chunk, (error) => (error ? reject(error) : resolve())),
    );
    hash.update(chunk);
    await handle.write(chunk);
  }
  await handle.close();
  return { path, digest: `sha256:${hash.digest('hex')}`, size: (await stat(path)).size };
}

/** VmHWM: the most resident memory the process has had since it started or since resetPeakRss. */
export async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /VmHWM:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) / 1024 : NaN;
}

/** Starts VmHWM again from the current RSS (proc(5), clear_refs "5"), so a phase has its own peak. */
export async function resetPeakRss(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, '5');
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

/** POST, then one PUT carrying the whole blob (what containerd and oras do); MB/s. */
export async function monolithicPush(
  base: string,
  repository: string,
  blob: BlobFile,
): Promise<number> {
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

/** One GET of the blob into /dev/null; MB/s. */
export async function pull(
  base: string,
  repository: string,
  blob: { digest: string; size: number },
): Promise<number> {
  const started = performance.now();
  await curl(['-o', '/dev/null', `${base}/v2/${repository}/blobs/${blob.digest}`]);
  return blob.size / 1e6 / ((performance.now() - started) / 1000);
}

/** POST, PATCH 5 MiB chunks with Content-Range over one keep-alive connection, then PUT; MB/s. */
export async function chunkedPush(
  base: string,
  repository: string,
  blob: BlobFile,
): Promise<number> {
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

/** wrk, 2 threads, 32 connections, for `seconds` against one manifest; `headers` as `Name: value`. */
export async function manifestLoad(
  base: string,
  path: string,
  seconds: number,
  headers: readonly string[] = [],
): Promise<{ rps: number; p99ms: number }> {
  const output = (
    await run(
      'wrk',
      [
        '-t2',
        '-c32',
        `-d${seconds}s`,
        '--latency',
        '-H',
        'Accept: application/vnd.oci.image.manifest.v1+json',
        ...headers.flatMap((header) => ['-H', header]),
        `${base}${path}`,
      ],
      { timeoutMs: (seconds + 30) * 1000 },
    )
  ).stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]);
  const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(output);
  const scale = { us: 0.001, ms: 1, s: 1000 } as const;
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  if (non2xx) throw new Error(`manifest GET answered ${non2xx[1]} errors`);
  return { rps, p99ms: p99 ? Number(p99[1]) * scale[p99[2] as keyof typeof scale] : NaN };
}

/** Pushes a one-layer image with crane; its manifest's paths by tag and by digest. */
export async function pushSmallImage(
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
