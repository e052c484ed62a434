import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomLayerTar } from './images.ts';
import { Daemon, freePort, run, waitFor } from './processes.ts';
import { findTool } from './tools.ts';

const ociIndex = 'application/vnd.oci.image.index.v1+json';
const ociManifest = 'application/vnd.oci.image.manifest.v1+json';
const ociConfig = 'application/vnd.oci.image.config.v1+json';
const ociLayer = 'application/vnd.oci.image.layer.v1.tar';

/** A CNCF distribution (Debian's docker-registry) standing in for a public registry. */
export interface UpstreamRegistry {
  readonly url: string;
  /** What a client sends to it: Basic auth when it has a login, nothing otherwise. */
  readonly headers: Record<string, string>;
  readonly login: { username: string; password: string } | undefined;
  stop(): Promise<void>;
}

/**
 * Starts docker-registry on loopback with filesystem storage under `directory`; with `login`,
 * behind htpasswd (bcrypt, from `htpasswd -Bbn`), which answers Basic challenges.
 */
export async function startUpstreamRegistry(
  directory: string,
  login?: { username: string; password: string },
): Promise<UpstreamRegistry> {
  const binary = findTool('docker-registry');
  if (!binary) throw new Error('docker-registry is not installed; apt-get install docker-registry');
  await mkdir(join(directory, 'data'), { recursive: true });
  const auth: string[] = [];
  if (login) {
    const htpasswd = findTool('htpasswd');
    if (!htpasswd) throw new Error('htpasswd is not installed; apt-get install apache2-utils');
    const entry = await run(htpasswd, ['-Bbn', login.username, login.password]);
    await writeFile(join(directory, 'htpasswd'), entry.stdout);
    auth.push('auth:', `  htpasswd: {realm: upstream, path: ${join(directory, 'htpasswd')}}`);
  }
  const port = await freePort();
  const config = join(directory, 'config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log: {level: error, accesslog: {disabled: true}}',
      'storage:',
      `  filesystem: {rootdirectory: ${join(directory, 'data')}}`,
      '  delete: {enabled: true}',
      ...auth,
      `http: {addr: "127.0.0.1:${port}", secret: upstream-test}`,
      '',
    ].join('\n'),
  );
  const daemon = new Daemon(binary, ['serve', config]);
  const url = `http://127.0.0.1:${port}`;
  const headers: Record<string, string> = login
    ? {
        Authorization: `Basic ${Buffer.from(`${login.username}:${login.password}`).toString('base64')}`,
      }
    : {};
  try {
    await waitFor(
      async () => {
        if (!daemon.running) throw new Error(`docker-registry exited: ${daemon.output}`);
        return (await fetch(`${url}/v2/`, { headers })).ok;
      },
      30_000,
      'docker-registry',
    );
  } catch (error) {
    await daemon.stop('SIGKILL');
    throw error;
  }
  return {
    url,
    headers,
    login,
    stop: async () => {
      await daemon.stop();
    },
  };
}

export function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Pushes one blob with a monolithic upload; returns its digest. */
export async function pushBlob(
  upstream: UpstreamRegistry,
  repository: string,
  bytes: Buffer,
): Promise<string> {
  const digest = digestOf(bytes);
  const started = await fetch(`${upstream.url}/v2/${repository}/blobs/uploads/`, {
    method: 'POST',
    headers: upstream.headers,
  });
  if (started.status !== 202) throw new Error(`upload start: ${started.status}`);
  const location = new URL(started.headers.get('location') as string, upstream.url);
  location.searchParams.set('digest', digest);
  const answer = await fetch(location, {
    method: 'PUT',
    headers: { ...upstream.headers, 'Content-Type': 'application/octet-stream' },
    body: bytes,
  });
  if (answer.status !== 201) throw new Error(`blob push: ${answer.status} ${await answer.text()}`);
  return digest;
}

async function pushManifest(
  upstream: UpstreamRegistry,
  repository: string,
  reference: string,
  mediaType: string,
  document: unknown,
): Promise<{ digest: string; size: number }> {
  const bytes = Buffer.from(JSON.stringify(document));
  const answer = await fetch(`${upstream.url}/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    headers: { ...upstream.headers, 'Content-Type': mediaType },
    body: bytes,
  });
  if (answer.status !== 201)
    throw new Error(`manifest push: ${answer.status} ${await answer.text()}`);
  return { digest: digestOf(bytes), size: bytes.length };
}

export interface PlatformImage {
  readonly architecture: string;
  readonly manifest: string;
  readonly config: string;
  readonly layer: string;
  readonly layerBytes: number;
  readonly manifestBytes: number;
}

export interface MultiArchImage {
  readonly index: string;
  readonly platforms: readonly PlatformImage[];
  /** Every blob of every platform: configs and layers. */
  readonly blobs: readonly string[];
}

/**
 * Pushes one platform's image, by digest or under `tag`: one uncompressed tar layer of `bytes`
 * random bytes and a config whose diff_ids name it, so containerd can unpack it. `scratch` holds
 * the tar.
 */
export async function pushPlatformImage(
  upstream: UpstreamRegistry,
  repository: string,
  architecture: string,
  bytes: number,
  scratch: string,
  tag?: string,
): Promise<PlatformImage> {
  const name = `${architecture}-${randomBytes(6).toString('hex')}`;
  const layer = await readFile(await randomLayerTar(scratch, name, bytes));
  const layerDigest = await pushBlob(upstream, repository, layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture,
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: [layerDigest] },
    }),
  );
  const configDigest = await pushBlob(upstream, repository, config);
  const document = {
    schemaVersion: 2,
    mediaType: ociManifest,
    config: { mediaType: ociConfig, digest: configDigest, size: config.length },
    layers: [{ mediaType: ociLayer, digest: layerDigest, size: layer.length }],
  };
  const digest = digestOf(Buffer.from(JSON.stringify(document)));
  const manifest = await pushManifest(upstream, repository, tag ?? digest, ociManifest, document);
  return {
    architecture,
    manifest: manifest.digest,
    config: configDigest,
    layer: layerDigest,
    layerBytes: layer.length,
    manifestBytes: manifest.size,
  };
}

/**
 * Pushes a multi-architecture image: an OCI index of a linux/amd64 and a linux/arm64 image
 * (pushPlatformImage), with layers of `amd64Bytes` and `arm64Bytes`.
 */
export async function pushMultiArchImage(
  upstream: UpstreamRegistry,
  repository: string,
  tag: string,
  sizes: { amd64Bytes: number; arm64Bytes: number },
  scratch: string,
): Promise<MultiArchImage> {
  const platforms = [
    await pushPlatformImage(upstream, repository, 'amd64', sizes.amd64Bytes, scratch),
    await pushPlatformImage(upstream, repository, 'arm64', sizes.arm64Bytes, scratch),
  ];
  const index = await pushManifest(upstream, repository, tag, ociIndex, {
    schemaVersion: 2,
    mediaType: ociIndex,
    manifests: platforms.map((platform) => ({
      mediaType: ociManifest,
      digest: platform.manifest,
      size: platform.manifestBytes,
      platform: { architecture: platform.architecture, os: 'linux' },
    })),
  });
  return {
    index: index.digest,
    platforms,
    blobs: platforms.flatMap((platform) => [platform.config, platform.layer]),
  };
}
