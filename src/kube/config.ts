import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import type { RequestOptions } from 'node:https';
import { parse } from 'yaml';
import { z } from 'zod';
import { firstZodIssue } from '../util/zod-issues.ts';

/**
 * How to reach an API server and prove who we are: what `KubeClient` applies to every request.
 * Kubeconfigs with tokens, client certificates and CAs (inline or as files) and the in-cluster
 * ServiceAccount are read here, with no large dependency: importing @kubernetes/client-node
 * costs ~90 MB of resident memory, more than the whole operator otherwise uses. Kubeconfigs that
 * run an exec plugin or an auth-provider are handed to client-node's KubeConfig, loaded then.
 */
export interface ClusterConnection {
  readonly server: URL;
  /** Adds TLS settings and credentials to an https/http request. */
  applyTo(options: RequestOptions): Promise<void>;
}

const namedCluster = z.object({
  name: z.string(),
  cluster: z
    .object({
      server: z.string().min(1),
      'certificate-authority': z.string().optional(),
      'certificate-authority-data': z.string().optional(),
      'insecure-skip-tls-verify': z.boolean().optional(),
      'tls-server-name': z.string().optional(),
    })
    .passthrough(),
});
const namedUser = z.object({
  name: z.string(),
  user: z
    .object({
      token: z.string().optional(),
      tokenFile: z.string().optional(),
      'client-certificate': z.string().optional(),
      'client-certificate-data': z.string().optional(),
      'client-key': z.string().optional(),
      'client-key-data': z.string().optional(),
      username: z.string().optional(),
      password: z.string().optional(),
      exec: z.unknown().optional(),
      'auth-provider': z.unknown().optional(),
    })
    .passthrough()
    .nullish(),
});
type KubeconfigUser = NonNullable<z.infer<typeof namedUser>['user']>;

const kubeconfigSchema = z.object({
  clusters: z.array(namedCluster).default([]),
  users: z.array(namedUser).nullish(),
  contexts: z
    .array(
      z.object({
        name: z.string(),
        context: z.object({ cluster: z.string(), user: z.string().optional() }).passthrough(),
      }),
    )
    .default([]),
  'current-context': z.string().optional(),
});

/** A kubeconfig file, as kubectl reads it (current context only). */
export function connectionFromFile(file: string): ClusterConnection {
  const document = kubeconfigSchema.safeParse(parse(readFileSync(file, 'utf8')));
  if (!document.success)
    throw new Error(`kubeconfig ${file} is not valid: ${firstZodIssue(document.error)}`);
  const config = document.data;
  const context = config.contexts.find((entry) => entry.name === config['current-context']);
  if (!context) throw new Error(`kubeconfig ${file} has no current context`);
  const cluster = config.clusters.find((entry) => entry.name === context.context.cluster)?.cluster;
  if (!cluster) throw new Error(`kubeconfig ${file}: cluster ${context.context.cluster} not found`);
  const entry = context.context.user
    ? config.users?.find((candidate) => candidate.name === context.context.user)
    : { user: {} };
  if (!entry) throw new Error(`kubeconfig ${file}: user ${context.context.user} not found`);
  const user: KubeconfigUser = entry.user ?? {};
  if (user.exec || user['auth-provider']) return clientNodeConnection(file, cluster.server);

  const base = dirname(file);
  const read = (path: string | undefined, data: string | undefined): Buffer | undefined =>
    data
      ? Buffer.from(data, 'base64')
      : path
        ? readFileSync(isAbsolute(path) ? path : join(base, path))
        : undefined;
  const tls = {
    ca: read(cluster['certificate-authority'], cluster['certificate-authority-data']),
    cert: read(user['client-certificate'], user['client-certificate-data']),
    key: read(user['client-key'], user['client-key-data']),
    rejectUnauthorized: !cluster['insecure-skip-tls-verify'],
    servername: cluster['tls-server-name'],
  };
  const tokenFile = user.tokenFile;
  const token = user.token
    ? () => user.token
    : tokenFile
      ? rereadEveryMinute(isAbsolute(tokenFile) ? tokenFile : join(base, tokenFile))
      : undefined;
  const basic =
    user.username !== undefined
      ? `Basic ${Buffer.from(`${user.username}:${user.password ?? ''}`).toString('base64')}`
      : undefined;
  return staticConnection(new URL(cluster.server), tls, token, basic);
}

const serviceAccountDirectory = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * As kubectl finds its cluster: $KUBECONFIG when set (the first of its files that exists; files
 * are not merged), else ~/.kube/config, else the in-cluster ServiceAccount.
 */
export function defaultConnection(): ClusterConnection {
  const listed = process.env.KUBECONFIG?.split(delimiter).filter((path) => path.length > 0);
  if (listed && listed.length > 0) {
    const file = listed.find((path) => existsSync(path));
    if (!file) throw new Error(`$KUBECONFIG names no file that exists: ${listed.join(delimiter)}`);
    return connectionFromFile(file);
  }
  const home = join(homedir(), '.kube', 'config');
  if (existsSync(home)) return connectionFromFile(home);
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (!host || !port)
    throw new Error('no kubeconfig ($KUBECONFIG, ~/.kube/config) and not running in a pod');
  const server = new URL(`https://${host.includes(':') ? `[${host}]` : host}:${port}`);
  return staticConnection(
    server,
    { ca: readFileSync(join(serviceAccountDirectory, 'ca.crt')), rejectUnauthorized: true },
    // The kubelet refreshes the projected token well before it expires; read it again often.
    rereadEveryMinute(join(serviceAccountDirectory, 'token')),
    undefined,
  );
}

function staticConnection(
  server: URL,
  tls: {
    ca?: Buffer | undefined;
    cert?: Buffer | undefined;
    key?: Buffer | undefined;
    rejectUnauthorized: boolean;
    servername?: string | undefined;
  },
  token: (() => string | undefined) | undefined,
  basic: string | undefined,
): ClusterConnection {
  return {
    server,
    applyTo: async (options) => {
      if (tls.ca) options.ca = tls.ca;
      if (tls.cert) options.cert = tls.cert;
      if (tls.key) options.key = tls.key;
      if (tls.servername) options.servername = tls.servername;
      options.rejectUnauthorized = tls.rejectUnauthorized;
      const headers = (options.headers ??= {}) as Record<string, string>;
      const bearer = token?.();
      if (bearer) headers.Authorization = `Bearer ${bearer}`;
      else if (basic) headers.Authorization = basic;
    },
  };
}

function rereadEveryMinute(file: string): () => string {
  let value = '';
  let readAt = 0;
  return () => {
    if (Date.now() - readAt > 60_000) {
      value = readFileSync(file, 'utf8').trim();
      readAt = Date.now();
    }
    return value;
  };
}

/** Exec plugins and auth-providers: client-node knows them all; load it only for these. */
function clientNodeConnection(file: string, server: string): ClusterConnection {
  const loaded = import('@kubernetes/client-node').then(({ KubeConfig }) => {
    const config = new KubeConfig();
    config.loadFromFile(file);
    return config;
  });
  return {
    server: new URL(server),
    applyTo: async (options) => {
      await (await loaded).applyToHTTPSOptions(options);
    },
  };
}
