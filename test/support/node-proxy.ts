import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createCertificateAuthority, issueServingCertificate } from '../../src/tls/certificates.ts';
import { adminPassword, issueCredential } from './auth.ts';
import { berthCli } from './cli.ts';
import { Daemon, ExitedError, freePort, waitFor } from './processes.ts';

export interface TlsRegistry {
  /** `https://localhost:<port>`: the name its certificate carries. */
  readonly url: string;
  readonly port: number;
  readonly caFile: string;
  readonly ca: Buffer;
  readonly storage: string;
  credential(namespace: string): Promise<string>;
  /** A counter of `berth_registry_http_requests_total`, from its /metrics. */
  requests(route: string, method: string, status: string): Promise<number>;
  stop(): Promise<void>;
  /** Stops the process and starts it again on the same port and storage. */
  restart(): Promise<void>;
}

/** `berth registry` over HTTPS (its own CA, like the operator's) with token auth and a policy. */
export async function startTlsRegistry(
  directory: string,
  policy: unknown,
  options: { built?: boolean; cpus?: string } = {},
): Promise<TlsRegistry> {
  const ca = createCertificateAuthority('test CA', 86_400_000);
  const serving = issueServingCertificate(ca, 'localhost', ['localhost', '127.0.0.1'], 86_400_000);
  const files = {
    ca: join(directory, 'ca.crt'),
    cert: join(directory, 'tls.crt'),
    key: join(directory, 'tls.key'),
    policy: join(directory, 'policy.yaml'),
    password: join(directory, 'admin-password'),
  };
  await writeFile(files.ca, ca.certificatePem);
  await writeFile(files.cert, serving.certificatePem);
  await writeFile(files.key, serving.privateKeyPem, { mode: 0o600 });
  await writeFile(files.policy, stringify(policy));
  await writeFile(files.password, adminPassword, { mode: 0o600 });
  const storage = join(directory, 'data');
  const port = await freePort();
  const url = `https://localhost:${port}`;
  const caPem = Buffer.from(ca.certificatePem);
  const entry = berthCli(options.built);
  const start = async (): Promise<Daemon> => {
    const daemon = spawnNode(options.cpus, [
      entry,
      'registry',
      '--listen',
      `127.0.0.1:${port}`,
      '--storage-dir',
      storage,
      '--tls-cert',
      files.cert,
      '--tls-key',
      files.key,
      '--policy',
      files.policy,
      '--admin-password-file',
      files.password,
      '--log-level',
      'warn',
    ]);
    await waitFor(
      async () => {
        if (!daemon.running) throw new ExitedError(`the registry exited: ${daemon.output}`);
        return (await requestText(`${url}/readyz`, {}, caPem)).status === 200;
      },
      30_000,
      'the TLS registry',
    );
    return daemon;
  };
  let daemon = await start();
  return {
    url,
    port,
    caFile: files.ca,
    ca: caPem,
    storage,
    credential: (namespace) => issueCredential(storage, namespace),
    requests: async (route, method, status) => {
      const text = (await requestText(`${url}/metrics`, {}, caPem)).body;
      const line = text
        .split('\n')
        .find(
          (candidate) =>
            candidate.startsWith('berth_registry_http_requests_total{') &&
            candidate.includes(`route="${route}"`) &&
            candidate.includes(`method="${method}"`) &&
            candidate.includes(`status="${status}"`),
        );
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
    },
    stop: async () => void (await daemon.stop()),
    restart: async () => {
      await daemon.stop();
      daemon = await start();
    },
  };
}

export interface NodeProxyProcess {
  /** `localhost:<port>`, what kubelets put in image references. */
  readonly host: string;
  readonly url: string;
  readonly daemon: Daemon;
  /** A counter or gauge from the proxy's /metrics (labels matched as given). */
  metric(name: string, labels?: string): Promise<number>;
  stop(): Promise<void>;
}

/** `berth node-proxy` on a loopback port, in front of `upstream`. */
export async function startNodeProxyProcess(options: {
  upstream: string;
  /** `--tls-server-name`: the name to verify when `upstream` is an address. */
  tlsServerName?: string;
  caFile: string;
  cacheDirectory: string;
  cacheSize?: string;
  built?: boolean;
  cpus?: string;
}): Promise<NodeProxyProcess> {
  const port = await freePort();
  const entry = berthCli(options.built);
  const daemon = spawnNode(options.cpus, [
    entry,
    'node-proxy',
    '--listen',
    `127.0.0.1:${port}`,
    '--upstream',
    options.upstream,
    ...(options.tlsServerName ? ['--tls-server-name', options.tlsServerName] : []),
    '--ca-file',
    options.caFile,
    '--cache-dir',
    options.cacheDirectory,
    '--cache-size',
    options.cacheSize ?? '2Gi',
    '--log-level',
    'warn',
  ]);
  const url = `http://localhost:${port}`;
  await waitFor(
    async () => {
      if (!daemon.running) throw new ExitedError(`the node proxy exited: ${daemon.output}`);
      return (await requestText(`${url}/healthz`, {})).status === 200;
    },
    30_000,
    'the node proxy',
  );
  return {
    host: `localhost:${port}`,
    url,
    daemon,
    metric: async (name, labels) => {
      const text = (await requestText(`${url}/metrics`, {})).body;
      const prefix = labels ? `${name}{${labels}}` : `${name} `;
      const line = text.split('\n').find((candidate) => candidate.startsWith(prefix));
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
    },
    stop: async () => void (await daemon.stop()),
  };
}

/** Node with these arguments, pinned to `cpus` (taskset's list) when given, for benchmarks. */
function spawnNode(cpus: string | undefined, args: string[]): Daemon {
  return cpus
    ? new Daemon('taskset', ['-c', cpus, process.execPath, ...args])
    : new Daemon(process.execPath, args);
}

const manifestTypes = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(',');

export interface ProtocolPull {
  readonly manifestStatus: number;
  /** Digest → whether the bytes received hashed to it. */
  readonly blobs: Map<string, boolean>;
  readonly bytes: number;
}

/**
 * An image pull at the protocol level, as containerd does it: token from the realm the 401
 * names, the manifest, then every blob, streamed and hashed (never held in memory).
 */
export async function pullThrough(
  baseUrl: string,
  repository: string,
  tag: string,
  credential: { username: string; password: string } | undefined,
  ca?: Buffer,
): Promise<ProtocolPull> {
  const token = await tokenFor(baseUrl, repository, credential, ca);
  const auth: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
  const manifest = await requestText(
    `${baseUrl}/v2/${repository}/manifests/${tag}`,
    { ...auth, Accept: manifestTypes },
    ca,
  );
  const blobs = new Map<string, boolean>();
  if (manifest.status !== 200) return { manifestStatus: manifest.status, blobs, bytes: 0 };
  const parsed = JSON.parse(manifest.body) as {
    config: { digest: string };
    layers: { digest: string }[];
  };
  let bytes = 0;
  for (const digest of [parsed.config.digest, ...parsed.layers.map((layer) => layer.digest)]) {
    const result = await hashBlob(`${baseUrl}/v2/${repository}/blobs/${digest}`, auth, ca);
    blobs.set(digest, result.status === 200 && result.digest === digest);
    bytes += result.bytes;
  }
  return { manifestStatus: 200, blobs, bytes };
}

/** The token the registry's challenge asks for; undefined if it does not challenge. */
export async function tokenFor(
  baseUrl: string,
  repository: string,
  credential: { username: string; password: string } | undefined,
  ca?: Buffer,
): Promise<string | undefined> {
  const challenge = await requestText(`${baseUrl}/v2/`, {}, ca);
  const header = challenge.headers['www-authenticate'];
  if (challenge.status !== 401 || typeof header !== 'string') return undefined;
  const realm = /realm="([^"]+)"/.exec(header)?.[1] as string;
  const service = /service="([^"]+)"/.exec(header)?.[1] as string;
  const query = new URLSearchParams({ service, scope: `repository:${repository}:pull` });
  const headers: Record<string, string> = credential
    ? {
        Authorization: `Basic ${Buffer.from(`${credential.username}:${credential.password}`).toString('base64')}`,
      }
    : {};
  const response = await requestText(`${realm}?${query}`, headers, ca);
  return (JSON.parse(response.body) as { token?: string }).token;
}

/** GETs a blob, hashing it as it arrives; a cut connection is reported as status 0. */
export function hashBlob(
  url: string,
  headers: Record<string, string>,
  ca?: Buffer,
): Promise<{ status: number; digest: string; bytes: number }> {
  return new Promise((resolve) => {
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const request = send(url, { headers, ...(ca ? { ca } : {}) }, (response: IncomingMessage) => {
      const hash = createHash('sha256');
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          digest: `sha256:${hash.digest('hex')}`,
          bytes,
        }),
      );
      response.on('error', () => resolve({ status: 0, digest: '', bytes }));
      response.on('aborted', () => resolve({ status: 0, digest: '', bytes }));
    });
    request.on('error', () => resolve({ status: 0, digest: '', bytes: 0 }));
    request.end();
  });
}

/** A small request over http or https (with `ca`); the body as text. */
export function requestText(
  url: string,
  headers: Record<string, string>,
  ca?: Buffer,
): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const request = send(url, { headers, ...(ca ? { ca } : {}) }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end();
  });
}
