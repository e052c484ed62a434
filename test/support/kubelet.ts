import { berthCli } from './cli.ts';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { dirname, join } from 'node:path';
import { getObject, serviceAccountKubeconfig, type ControlPlane } from './control-plane.ts';
import { Daemon, ExitedError, freePort, waitFor } from './processes.ts';

const cli = berthCli();

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
  const deployment = await getObject<Deployment>(cluster, 'deployment', name, namespace);
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
        // What the kubelet's projected token volume gives a pod.
        KUBECONFIG: await serviceAccountKubeconfig(
          cluster,
          namespace,
          pod.serviceAccountName ?? 'default',
          join(root, 'serviceaccount.kubeconfig'),
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
 * Service's ClusterIP; nothing routes that here (no kube-proxy), so the harness points it at
 * `upstream` instead. `--tls-server-name` stays: the proxy still verifies the Service's name in
 * the certificate the operator issued.
 */
export async function runDaemonSet(
  cluster: ControlPlane,
  namespace: string,
  name: string,
  root: string,
  upstream: string,
): Promise<RunningNodeProxy> {
  const daemonSet = await getObject<{ spec: { template: { spec: PodSpec } } }>(
    cluster,
    'daemonset',
    name,
    namespace,
  );
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
      const configMap = await getObject<{ data: Record<string, string> }>(
        cluster,
        'configmap',
        volume.configMap.name,
        namespace,
      );
      for (const [key, value] of Object.entries(configMap.data))
        await writeFile(join(directory, key), relocate(value));
    }
    if (volume.secret) {
      const secret = await getObject<{ data: Record<string, string> }>(
        cluster,
        'secret',
        volume.secret.secretName,
        namespace,
      );
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
