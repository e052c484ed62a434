import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { listOrEmpty } from '../../src/registry/service/links.ts';
import type { StorageDriver } from '../../src/registry/storage/driver.ts';
import { paths } from '../../src/registry/storage/paths.ts';
import { berthCli } from './cli.ts';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import { randomLayerTar } from './images.ts';
import { run, temporaryDirectory, type RunResult } from './processes.ts';
import type { S3Server } from './s3.ts';

/** Writes a registry config file with `storage` and a `gc` section; returns its path. */
export async function writeGcConfig(
  directory: string,
  storage: Record<string, unknown>,
  gc: Record<string, unknown>,
): Promise<string> {
  const file = join(directory, `gc-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, JSON.stringify({ storage, gc, log: { requests: false } }));
  return file;
}

/** What `berth gc` printed it removed (or would): lines like `manifest repo@sha256:...`. */
export async function berthGc(
  configFile: string,
  options: { dryRun?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<string[]> {
  const result = await run(
    process.execPath,
    [berthCli(), 'gc', '--config', configFile, ...(options.dryRun ? ['--dry-run'] : [])],
    { env: options.env ?? process.env },
  );
  const prefix = options.dryRun ? 'would remove ' : 'removed ';
  return result.stdout
    .split('\n')
    .filter((line) => line.startsWith(prefix))
    .map((line) => line.slice(prefix.length))
    .sort();
}

/** Digests of every blob whose data is in storage, read past the registry. */
export async function storedBlobs(driver: StorageDriver): Promise<Set<string>> {
  const found = new Set<string>();
  for (const algorithm of await listOrEmpty(driver, paths.blobsRoot)) {
    for (const prefix of await listOrEmpty(driver, `${paths.blobsRoot}/${algorithm}`)) {
      for (const hex of await listOrEmpty(driver, `${paths.blobsRoot}/${algorithm}/${prefix}`)) {
        const info = await driver.stat(`${paths.blobsRoot}/${algorithm}/${prefix}/${hex}/data`);
        if (info && !info.isDirectory) found.add(`${algorithm}:${hex}`);
      }
    }
  }
  return found;
}

const accept = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

interface ManifestJson {
  config?: { digest: string };
  layers?: { digest: string }[];
  manifests?: { digest: string }[];
}

/**
 * Every digest the registry's API reaches from its tags, as a client sees it: tagged manifests,
 * children of indexes, referrers of those (through the referrers API), and their blobs.
 */
export async function referencedThroughApi(url: string): Promise<Set<string>> {
  const reached = new Set<string>();
  const catalog = (await (await fetch(`${url}/v2/_catalog?n=10000`)).json()) as {
    repositories: string[];
  };
  for (const repository of catalog.repositories) {
    const listed = await fetch(`${url}/v2/${repository}/tags/list?n=10000`);
    const tags = listed.ok ? ((await listed.json()) as { tags: string[] | null }).tags : [];
    const pending = [...(tags ?? [])];
    const seen = new Set<string>();
    while (pending.length > 0) {
      const reference = pending.pop() as string;
      const response = await fetch(`${url}/v2/${repository}/manifests/${reference}`, {
        headers: { accept },
      });
      if (!response.ok) throw new Error(`${repository}:${reference}: ${response.status}`);
      const digest = response.headers.get('docker-content-digest') as string;
      const manifest = (await response.json()) as ManifestJson;
      if (seen.has(digest)) continue;
      seen.add(digest);
      reached.add(digest);
      if (manifest.config) reached.add(manifest.config.digest);
      for (const layer of manifest.layers ?? []) reached.add(layer.digest);
      for (const child of manifest.manifests ?? []) pending.push(child.digest);
      const referrers = (await (
        await fetch(`${url}/v2/${repository}/referrers/${digest}`)
      ).json()) as ManifestJson;
      for (const referrer of referrers.manifests ?? []) pending.push(referrer.digest);
    }
  }
  return reached;
}

/** Pushes a blob in one POST (no manifest names it); returns its digest. */
export async function pushLooseBlob(
  url: string,
  repository: string,
  data: Buffer,
): Promise<string> {
  const { createHash } = await import('node:crypto');
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const response = await fetch(`${url}/v2/${repository}/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: new Uint8Array(data),
  });
  if (response.status !== 201) throw new Error(`blob push: ${response.status}`);
  return digest;
}

/** Deletes a tag through the API. */
export async function deleteTag(url: string, repository: string, tag: string): Promise<void> {
  const response = await fetch(`${url}/v2/${repository}/manifests/${tag}`, { method: 'DELETE' });
  if (response.status !== 202) throw new Error(`delete ${repository}:${tag}: ${response.status}`);
}

/** A counter's value from a Prometheus text page (0 when absent). */
export async function metricValue(url: string, series: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** A fresh, empty storage for one test: its config section, a driver on it, and the env. */
export interface GcStorage {
  readonly storage: Record<string, unknown>;
  readonly driver: StorageDriver;
  readonly env: NodeJS.ProcessEnv;
}

/** Makers of fresh storage on each driver: a temporary directory, a new bucket on `s3`. */
export function gcStorages(
  s3: () => S3Server,
): Record<'filesystem' | 's3', () => Promise<GcStorage>> {
  return {
    filesystem: async () => {
      const root = (await temporaryDirectory('gc-fs')).path;
      return {
        storage: { filesystem: { rootDirectory: root } },
        driver: new FilesystemDriver(root),
        env: process.env,
      };
    },
    s3: async () => {
      const server = s3();
      const bucket = await server.createBucket();
      return {
        storage: {
          s3: { bucket, endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true },
        },
        driver: server.driver(bucket),
        env: server.env,
      };
    },
  };
}

/** crane and oras driven against a plain-HTTP registry, the way the GC tests build content. */
export interface GcContent {
  crane(...args: string[]): Promise<RunResult>;
  /** Pushes a one-layer image of `bytes` random bytes as `reference`; returns its digest. */
  push(reference: string, bytes?: number): Promise<string>;
  /**
   * Pushes `<repository>:amd` and `:arm`, an index of both as `:both`, then deletes the two
   * child tags: the children stay referenced only through the index. Returns their digests.
   */
  pushIndexOfUntaggedChildren(
    registry: { host: string; url: string },
    repository: string,
  ): Promise<[string, string]>;
  /** Attaches a fresh SBOM to `subject` with `oras attach`; returns the referrer's digest. */
  attachSbom(subject: string): Promise<string>;
}

export function gcContent(
  tools: { crane: string; oras: string },
  workDirectory: string,
): GcContent {
  const crane = (...args: string[]) => run(tools.crane, [...args, '--insecure']);
  const push = async (reference: string, bytes = 32 * 1024): Promise<string> => {
    const layer = await randomLayerTar(workDirectory, `l${randomBytes(6).toString('hex')}`, bytes);
    await crane('append', '-f', layer, '-t', reference);
    return (await crane('digest', reference)).stdout.trim();
  };
  return {
    crane,
    push,
    async pushIndexOfUntaggedChildren({ host, url }, repository) {
      const amd = await push(`${host}/${repository}:amd`);
      const arm = await push(`${host}/${repository}:arm`);
      await crane(
        'index',
        'append',
        '-m',
        `${host}/${repository}@${amd}`,
        '-m',
        `${host}/${repository}@${arm}`,
        '-t',
        `${host}/${repository}:both`,
      );
      await deleteTag(url, repository, 'amd');
      await deleteTag(url, repository, 'arm');
      return [amd, arm];
    },
    async attachSbom(subject) {
      const directory = join(workDirectory, `sbom-${randomBytes(4).toString('hex')}`);
      await mkdir(directory);
      await writeFile(join(directory, 'sbom.json'), randomBytes(16).toString('hex'));
      const attached = await run(
        tools.oras,
        [
          'attach',
          '--plain-http',
          '--artifact-type',
          'application/vnd.berth.test.sbom',
          subject,
          'sbom.json:application/json',
          '--format',
          'go-template={{.digest}}',
        ],
        { cwd: directory },
      );
      return attached.stdout.trim();
    },
  };
}
