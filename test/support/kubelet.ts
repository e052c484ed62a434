import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { ControlPlane } from './control-plane.ts';
import { Daemon, ExitedError, freePort, waitFor } from './processes.ts';

const cli = join(resolve(fileURLToPath(new URL('../..', import.meta.url))), 'src', 'cli.ts');

interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; items?: { key: string; path: string }[] };
  persistentVolumeClaim?: { claimName: string };
  emptyDir?: object;
}

interface Container {
  args: string[];
  volumeMounts: { name: string; mountPath: string }[];
  readinessProbe?: { httpGet?: { scheme?: string } };
}

interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  containers: Container[];
  volumes: Volume[];
}

interface Deployment {
  metadata: { name: string; namespace: string; generation: number };
  spec: { replicas: number; template: { spec: PodSpec } };
}

export interface RunningPod {
  /** host:port the registry listens on. */
  readonly host: string;
  /** `https` when the Deployment's probes say so. */
  readonly scheme: 'http' | 'https';
  readonly daemon: Daemon;
  stop(): Promise<void>;
}

/**
 * Plays the kubelet for a Deployment Berth rendered: mounts its ConfigMaps and Secrets as files
 * under `root` (every mount path moved under it, in arguments and in mounted files alike), runs
 * its container's arguments with `berth` from this checkout, and reports the Deployment ready.
 * The only other change is the listen address: a free loopback port instead of 0.0.0.0:5000.
 */
export async function runDeployment(
  cluster: ControlPlane,
  namespace: string,
  name: string,
  root: string,
  options: { port?: number } = {},
): Promise<RunningPod> {
  const deployment = JSON.parse(
    (await cluster.kubectl(['get', 'deployment', name, '-n', namespace, '-o', 'json'])).stdout,
  ) as Deployment;
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  if (!container) throw new Error('the Deployment has no container');
  const relocate = await mountVolumes(cluster, namespace, pod, container, root);

  const port = options.port ?? (await freePort());
  const args = container.args.map(relocate);
  const configIndex = args.indexOf('--config');
  if (configIndex >= 0) {
    const configFile = args[configIndex + 1] as string;
    const text = await readFile(configFile, 'utf8');
    await writeFile(configFile, text.replace(/listen: .*/, `listen: 127.0.0.1:${port}`));
  }
  const env = pod.automountServiceAccountToken
    ? {
        ...process.env,
        KUBECONFIG: await serviceAccountKubeconfig(
          cluster,
          namespace,
          pod.serviceAccountName ?? 'default',
          root,
        ),
      }
    : process.env;
  const daemon = new Daemon(process.execPath, [cli, ...args, '--log-level', 'warn'], env);
  const host = `127.0.0.1:${port}`;
  const scheme = container.readinessProbe?.httpGet?.scheme === 'HTTPS' ? 'https' : 'http';
  await waitFor(
    async () => {
      if (!daemon.running) throw new ExitedError(`the registry pod exited: ${daemon.output}`);
      // Like the kubelet's probes: HTTPS without verifying the certificate.
      return (await probe(`${scheme}://${host}/readyz`)) === 200;
    },
    30_000,
    'the registry pod',
  );
  await markDeploymentReady(
    cluster,
    namespace,
    name,
    deployment.metadata.generation,
    deployment.spec.replicas,
  );
  return { host, scheme, daemon, stop: async () => void (await daemon.stop()) };
}

export interface RunningNodeProxy {
  /** `localhost:<port>`: the node endpoint pods pull from. */
  readonly host: string;
  readonly daemon: Daemon;
  stop(): Promise<void>;
}

/**
 * Plays the kubelet on one node for the node-proxy DaemonSet Berth rendered: mounts its volumes
 * under `root` and runs its arguments as they are, except `--upstream`, which names the registry
 * Service by its cluster DNS name; this machine has no cluster DNS, so the harness points it at
 * `upstream` instead (a name the registry's certificate also carries).
 */
export async function runDaemonSet(
  cluster: ControlPlane,
  namespace: string,
  name: string,
  root: string,
  upstream: string,
): Promise<RunningNodeProxy> {
  const daemonSet = JSON.parse(
    (await cluster.kubectl(['get', 'daemonset', name, '-n', namespace, '-o', 'json'])).stdout,
  ) as { spec: { template: { spec: PodSpec } } };
  const pod = daemonSet.spec.template.spec;
  const container = pod.containers[0];
  if (!container) throw new Error('the DaemonSet has no container');
  const relocate = await mountVolumes(cluster, namespace, pod, container, root);
  const args = container.args.map(relocate);
  args[args.indexOf('--upstream') + 1] = upstream;
  const listen = args[args.indexOf('--listen') + 1] as string;
  const daemon = new Daemon(process.execPath, [cli, ...args, '--log-level', 'warn']);
  await waitFor(
    async () => {
      if (!daemon.running) throw new ExitedError(`the node proxy exited: ${daemon.output}`);
      return (await probe(`http://${listen}/readyz`)) === 200;
    },
    30_000,
    'the node proxy',
  );
  return {
    host: `localhost:${listen.slice(listen.lastIndexOf(':') + 1)}`,
    daemon,
    stop: async () => void (await daemon.stop()),
  };
}

/**
 * Mounts a pod's ConfigMaps, Secrets and emptyDirs as files under `root`, as the kubelet mounts
 * them at their paths, and returns the function that moves a mount path under `root` (for
 * arguments and mounted files alike).
 */
async function mountVolumes(
  cluster: ControlPlane,
  namespace: string,
  pod: PodSpec,
  container: Container,
  root: string,
): Promise<(text: string) => string> {
  const mounts = new Map(container.volumeMounts.map((mount) => [mount.name, mount.mountPath]));
  // One pass, longest mount first, only where a path starts: a root under /tmp must not be
  // relocated again by the /tmp mount.
  const alternatives = [...mounts.values()]
    .sort((a, b) => b.length - a.length)
    .map((path) => path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const pattern = new RegExp(`(^|[\\s"'=:])(${alternatives.join('|')})(?=/|$|[\\s"'])`, 'gm');
  const relocate = (text: string) =>
    text.replace(pattern, (_match, before: string, path: string) => `${before}${root}${path}`);

  for (const volume of pod.volumes) {
    const mountPath = mounts.get(volume.name);
    if (!mountPath) continue;
    const directory = `${root}${mountPath}`;
    await mkdir(directory, { recursive: true });
    if (volume.configMap) {
      const configMap = JSON.parse(
        (
          await cluster.kubectl([
            'get',
            'configmap',
            volume.configMap.name,
            '-n',
            namespace,
            '-o',
            'json',
          ])
        ).stdout,
      ) as { data: Record<string, string> };
      for (const [key, value] of Object.entries(configMap.data))
        await writeFile(join(directory, key), relocate(value));
    }
    if (volume.secret) {
      const secret = JSON.parse(
        (
          await cluster.kubectl([
            'get',
            'secret',
            volume.secret.secretName,
            '-n',
            namespace,
            '-o',
            'json',
          ])
        ).stdout,
      ) as {
        data: Record<string, string>;
      };
      const items =
        volume.secret.items ?? Object.keys(secret.data).map((key) => ({ key, path: key }));
      for (const { key, path } of items) {
        await mkdir(dirname(join(directory, path)), { recursive: true });
        await writeFile(join(directory, path), Buffer.from(secret.data[key] ?? '', 'base64'), {
          mode: 0o400,
        });
      }
    }
  }
  return relocate;
}

/**
 * What the kubelet's projected token volume gives a pod, as a kubeconfig: the API server, its CA
 * and a token of the pod's ServiceAccount, so the process has exactly that account's RBAC.
 */
async function serviceAccountKubeconfig(
  cluster: ControlPlane,
  namespace: string,
  serviceAccount: string,
  root: string,
): Promise<string> {
  const token = (
    await cluster.kubectl(['create', 'token', serviceAccount, '-n', namespace, '--duration=2h'])
  ).stdout.trim();
  const admin = parseYaml(await readFile(cluster.kubeconfig, 'utf8')) as {
    clusters: { name: string }[];
  };
  const file = join(root, 'serviceaccount.kubeconfig');
  await writeFile(
    file,
    stringifyYaml({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: admin.clusters,
      users: [{ name: serviceAccount, user: { token } }],
      contexts: [
        { name: 'pod', context: { cluster: admin.clusters[0]?.name, user: serviceAccount } },
      ],
      'current-context': 'pod',
    }),
    { mode: 0o600 },
  );
  return file;
}

/** Reports a Deployment fully rolled out and ready, as the deployment controller would after its pods pass their probes. */
export async function markDeploymentReady(
  cluster: ControlPlane,
  namespace: string,
  name: string,
  generation: number,
  replicas: number,
): Promise<void> {
  const status = {
    observedGeneration: generation,
    replicas,
    readyReplicas: replicas,
    updatedReplicas: replicas,
    availableReplicas: replicas,
  };
  await cluster.kubectl([
    'patch',
    'deployment',
    name,
    '-n',
    namespace,
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status }),
  ]);
}

function probe(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? httpsGet : httpGet;
    const req = get(url, { rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
  });
}
