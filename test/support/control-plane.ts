import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { TestAuthority } from './pki.ts';
import { Daemon, freePort, run, temporaryDirectory, waitFor } from './processes.ts';
import { findTool } from './tools.ts';

/**
 * A Kubernetes API to test the operator against. `startLocalControlPlane` runs real etcd,
 * kube-apiserver and kube-controller-manager processes the way controller-runtime's envtest
 * does; `startK3sControlPlane` (k3s.ts) stands behind the same interface where a Docker engine
 * exists. `startControlPlane` picks: BERTH_CONTROL_PLANE=k3s for K3s, else local.
 */
export interface ControlPlane {
  /** Admin kubeconfig file (user in system:masters). */
  readonly kubeconfig: string;
  readonly server: string;
  /** Runs kubectl against this control plane. */
  kubectl(
    args: string[],
    options?: { input?: string; allowFailure?: boolean },
  ): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /**
   * The PEM key the API server signs ServiceAccount tokens with, where the provider has one at
   * hand: tests sign tokens the TokenRequest API will not mint (already expired).
   */
  readonly serviceAccountSigningKeyFile?: string;
  /** The tail of kube-controller-manager's output, for failure messages. */
  controllerManagerOutput(): string;
  /** Stops kube-apiserver only (etcd keeps the state), for fault tests. */
  stopApiServer(): Promise<void>;
  startApiServer(): Promise<void>;
  stop(): Promise<void>;
}

/** A CA, a serving certificate for loopback, an admin client certificate and a service-account key pair. */
async function makeCertificates(directory: string): Promise<TestAuthority> {
  const authority = await TestAuthority.create(directory, 'berth-test-ca');
  await authority.issue('serving', '/CN=kube-apiserver', [
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    'extendedKeyUsage=serverAuth',
  ]);
  await authority.issueClient('admin', 'berth-test-admin', 'system:masters');
  await authority.serviceAccountKeys();
  return authority;
}

/** GET a path with the admin certificate; resolves to the status code. */
async function adminGet(server: string, directory: string, path: string): Promise<number> {
  const [ca, cert, key] = await Promise.all(
    ['ca.crt', 'admin.crt', 'admin.key'].map((file) => readFile(join(directory, file))),
  );
  return new Promise((resolve, reject) => {
    const req = request(`${server}${path}`, { ca, cert, key, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/** `kubectl auth can-i` for a ServiceAccount, in every namespace: 'yes' or 'no'. */
export async function serviceAccountCan(
  cluster: ControlPlane,
  serviceAccount: { namespace: string; name: string },
  verb: string,
  resource: string,
): Promise<string> {
  const subject = `system:serviceaccount:${serviceAccount.namespace}:${serviceAccount.name}`;
  const answer = await cluster.kubectl(['auth', 'can-i', verb, resource, '-A', '--as', subject], {
    allowFailure: true,
  });
  return answer.stdout.trim();
}

/** An object as `kubectl get -o json` shows it. */
export async function getObject<T>(
  cluster: ControlPlane,
  kind: string,
  name: string,
  namespace: string,
): Promise<T> {
  return JSON.parse(
    (await cluster.kubectl(['get', kind, name, '-n', namespace, '-o', 'json'])).stdout,
  ) as T;
}

/** Whether an object exists (`kubectl get` succeeds). */
export async function resourceExists(
  cluster: ControlPlane,
  kind: string,
  name: string,
  namespace: string,
): Promise<boolean> {
  return (
    (await cluster.kubectl(['get', kind, name, '-n', namespace], { allowFailure: true })).code === 0
  );
}

/**
 * Writes a kubeconfig for this cluster holding a token of a ServiceAccount, so a process runs
 * with exactly that account's RBAC (what the kubelet's projected token gives a pod).
 */
export async function serviceAccountKubeconfig(
  cluster: ControlPlane,
  namespace: string,
  serviceAccount: string,
  file: string,
): Promise<string> {
  const token = (
    await cluster.kubectl(['create', 'token', serviceAccount, '-n', namespace, '--duration=2h'])
  ).stdout.trim();
  const admin = parse(await readFile(cluster.kubeconfig, 'utf8')) as {
    clusters: { name: string }[];
  };
  await writeFile(
    file,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: admin.clusters,
      users: [{ name: serviceAccount, user: { token } }],
      contexts: [
        { name: 'sa', context: { cluster: admin.clusters[0]?.name, user: serviceAccount } },
      ],
      'current-context': 'sa',
    }),
    { mode: 0o600 },
  );
  return file;
}

/** Runs kubectl against one kubeconfig: the `kubectl` of every ControlPlane provider. */
export function kubectlFor(kubectl: string, kubeconfig: string): ControlPlane['kubectl'] {
  return (args, options = {}) =>
    run(kubectl, ['--kubeconfig', kubeconfig, ...args], {
      ...(options.input !== undefined ? { input: options.input } : {}),
      allowFailure: options.allowFailure ?? false,
    });
}

export function controlPlaneTools(): {
  etcd?: string;
  apiserver?: string;
  controllerManager?: string;
  kubectl?: string;
} {
  return {
    etcd: findTool('etcd'),
    apiserver: findTool('kube-apiserver'),
    controllerManager: findTool('kube-controller-manager'),
    kubectl: findTool('kubectl'),
  };
}

/** The tools a control-plane test needs, for describeWithTools. */
export const controlPlaneToolNames = [
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kubectl',
];

export async function startLocalControlPlane(): Promise<ControlPlane> {
  const tools = controlPlaneTools();
  if (!tools.etcd || !tools.apiserver || !tools.controllerManager || !tools.kubectl) {
    throw new Error(
      'etcd, kube-apiserver, kube-controller-manager or kubectl missing: run test/tools/build-control-plane.sh',
    );
  }
  const directory = await temporaryDirectory('control-plane');
  const certs = directory.path;
  const authority = await makeCertificates(certs);
  const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const etcd = new Daemon(tools.etcd, [
    `--data-dir=${join(certs, 'etcd')}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-cluster=default=http://127.0.0.1:${peerPort}`,
    '--unsafe-no-fsync=true',
    '--log-level=warn',
  ]);
  await waitFor(async () => (await fetch(`${etcdUrl}/health`)).ok, 30_000, 'etcd');

  const server = `https://127.0.0.1:${apiPort}`;
  const apiserverArgs = [
    `--etcd-servers=${etcdUrl}`,
    `--cert-dir=${certs}`,
    `--tls-cert-file=${join(certs, 'serving.crt')}`,
    `--tls-private-key-file=${join(certs, 'serving.key')}`,
    `--client-ca-file=${join(certs, 'ca.crt')}`,
    `--secure-port=${apiPort}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    '--service-cluster-ip-range=10.0.0.0/24',
    '--allow-privileged=true',
    '--authorization-mode=RBAC',
    '--disable-admission-plugins=ServiceAccount',
    `--service-account-issuer=${server}/`,
    `--service-account-key-file=${join(certs, 'sa.pub')}`,
    `--service-account-signing-key-file=${join(certs, 'sa.key')}`,
    '--v=0',
  ];
  let apiserver = new Daemon(tools.apiserver, apiserverArgs);
  const waitReady = async (daemon: Daemon): Promise<void> => {
    await waitFor(
      async () => {
        if (!daemon.running)
          throw new Error(`kube-apiserver exited: ${daemon.output.slice(-3000)}`);
        return (await adminGet(server, certs, '/readyz')) === 200;
      },
      90_000,
      'kube-apiserver',
    );
  };
  await waitReady(apiserver);

  const kubeconfig = await authority.kubeconfig('admin', server);
  // The garbage collector (owner references), namespace deletion, default ServiceAccounts and
  // DaemonSet status (the node proxies' counts a Registry's Ready depends on: zero of zero
  // without Nodes) come from kube-controller-manager; nothing else of it is needed without
  // kubelets.
  const controllerManager = new Daemon(tools.controllerManager, [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    '--controllers=garbagecollector,namespace,serviceaccount,daemonset',
    '--leader-elect=false',
    '--bind-address=127.0.0.1',
    '--secure-port=0',
    `--root-ca-file=${join(certs, 'ca.crt')}`,
    `--service-account-private-key-file=${join(certs, 'sa.key')}`,
    '--v=1',
  ]);
  const kubectl = tools.kubectl;
  return {
    kubeconfig,
    server,
    kubectl: kubectlFor(kubectl, kubeconfig),
    serviceAccountSigningKeyFile: join(certs, 'sa.key'),
    controllerManagerOutput: () => controllerManager.output.slice(-4000),
    stopApiServer: async () => {
      await apiserver.stop();
    },
    startApiServer: async () => {
      apiserver = new Daemon(tools.apiserver as string, apiserverArgs);
      await waitReady(apiserver);
    },
    stop: async () => {
      await controllerManager.stop();
      await apiserver.stop();
      await etcd.stop();
      await directory.remove();
    },
  };
}

/** The provider BERTH_CONTROL_PLANE names: `local` (default) or `k3s` (needs a Docker engine). */
export async function startControlPlane(): Promise<ControlPlane> {
  if (process.env.BERTH_CONTROL_PLANE === 'k3s') {
    const { startK3sControlPlane } = await import('./k3s.ts');
    return startK3sControlPlane();
  }
  return startLocalControlPlane();
}
