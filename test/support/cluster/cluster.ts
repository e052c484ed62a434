import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { repositoryRoot } from '../cli.ts';
import type { ControlPlane } from '../control-plane.ts';
import { TestAuthority } from '../pki.ts';
import { Daemon, ExitedError, run, waitFor, type RunResult } from '../processes.ts';
import { findTool } from '../tools.ts';
import { NetworkNamespace, namespacePrefix } from './network.ts';
import {
  clusterNetwork,
  clusterStorage,
  cniConfig,
  containerdConfig,
  kubeProxyConfig,
  kubeletConfig,
  kubeletFlags,
  type KubeletOptions,
  type NodeLayout,
} from './node-config.ts';
import { removeNodeState } from './teardown.ts';
import { buildTestImages, testImages } from './test-images.ts';

/** The binaries a real-cluster test needs, for describeWithTools. */
export const clusterToolNames = [
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kubelet',
  'kube-proxy',
  'kubectl',
  'coredns',
  'pause',
  'containerd',
  'ctr',
  'crictl',
  'runc',
  'nsenter',
  'iptables',
  'busybox',
];

export type { KubeletOptions } from './node-config.ts';

/**
 * A real single-node Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager,
 * kube-scheduler, containerd with runc and the CNI bridge, kubelet and kube-proxy, with CoreDNS
 * and a volume provisioner, every address and rule inside a network namespace of its own.
 */
export interface Cluster extends ControlPlane {
  readonly root: string;
  readonly network: NetworkNamespace;
  /** Runs a command on the node: in the cluster's network namespace. */
  onNode(
    command: string,
    args: readonly string[],
    options?: Parameters<typeof run>[2],
  ): Promise<RunResult>;
  /** crictl against the node's containerd. */
  crictl(args: readonly string[], options?: { allowFailure?: boolean }): Promise<RunResult>;
  /** Loads an OCI archive into the node's containerd, as a preloaded image. */
  importImage(archive: string): Promise<void>;
  /** Restarts the kubelet with other settings (pods keep running). */
  restartKubelet(options: KubeletOptions): Promise<void>;
  /** From the start of `startCluster`: the node Ready, and everything (CoreDNS, storage) ready. */
  readonly startup: { readonly nodeReadyMillis: number; readonly readyMillis: number };
  /** The last lines a component printed, for failure messages. */
  logs(component: string): string;
  /** Kills every component at once and cleans nothing: what a test run that dies leaves. */
  abandon(): void;
}

function tool(name: string): string {
  const path = findTool(name);
  if (!path) throw new Error(`${name} missing: run test/tools/install.sh`);
  return path;
}

/** Certificates for every component, signed by one test CA. */
async function makeClusterPki(pki: string): Promise<TestAuthority> {
  const authority = await TestAuthority.create(pki, 'berth-cluster-ca');
  const { nodeIp, apiServiceIp, nodeName } = clusterNetwork;
  const apiNames = [
    'kubernetes',
    'kubernetes.default',
    'kubernetes.default.svc',
    'kubernetes.default.svc.cluster.local',
  ];
  await authority.issue('serving', '/CN=kube-apiserver', [
    `subjectAltName=IP:${nodeIp},IP:${apiServiceIp},IP:127.0.0.1,${apiNames.map((name) => `DNS:${name}`).join(',')}`,
    'extendedKeyUsage=serverAuth',
  ]);
  await authority.issue('kubelet-serving', `/CN=${nodeName}`, [
    `subjectAltName=IP:${nodeIp},DNS:${nodeName}`,
    'extendedKeyUsage=serverAuth',
  ]);
  await authority.issueClient('admin', 'berth-cluster-admin', 'system:masters');
  await authority.issueClient('kubelet', `system:node:${nodeName}`, 'system:nodes');
  await authority.issueClient(
    'apiserver-kubelet-client',
    'kube-apiserver-kubelet-client',
    'system:masters',
  );
  await authority.issueClient('scheduler', 'system:kube-scheduler');
  await authority.issueClient('controller-manager', 'system:kube-controller-manager');
  await authority.issueClient('proxy', 'system:kube-proxy');
  await authority.serviceAccountKeys();
  const server = `https://${nodeIp}:${clusterNetwork.apiPort}`;
  for (const user of ['admin', 'kubelet', 'scheduler', 'controller-manager', 'proxy'])
    await authority.kubeconfig(user, server);
  return authority;
}

/** Where a cluster keeps its state; the network namespace, directory and cgroups share its name. */
export function clusterLayout(name: string): NodeLayout {
  const root = join('/tmp', name);
  return {
    root,
    pki: join(root, 'pki'),
    containerdSocket: join(root, 'containerd', 'containerd.sock'),
    cgroupRoot: `/${name}`,
    sandboxImage: testImages.pause,
  };
}

/**
 * Starts the cluster and waits for its node to be Ready, CoreDNS to answer and the default
 * StorageClass to exist. Leftovers of an earlier run that died are removed first.
 */
export async function startCluster(): Promise<Cluster> {
  await removeStaleClusters();
  const started = Date.now();
  const name = `${namespacePrefix}${randomBytes(3).toString('hex')}`;
  const layout = clusterLayout(name);
  const root = layout.root;
  // etcd refuses a data directory others may read.
  await mkdir(join(root, 'etcd'), { recursive: true, mode: 0o700 });
  for (const sub of [
    'pki',
    'kubelet',
    'pod-logs',
    'containerd/certs.d',
    'cni/net.d',
    'volumes',
    'images',
  ])
    await mkdir(join(root, sub), { recursive: true });
  await writeFile(join(root, 'owner.pid'), String(process.pid));
  const network = await NetworkNamespace.create(name);
  const daemons = new Map<string, Daemon>();
  const startDaemon = (name: string, command: string, args: readonly string[]): Daemon => {
    const [wrapped, wrappedArgs] = network.wrap(command, args);
    const daemon = new Daemon(wrapped, wrappedArgs);
    daemons.set(name, daemon);
    return daemon;
  };
  const stop = async (): Promise<void> => {
    await removeNodeState({
      layout,
      network,
      daemons,
      crictl: tool('crictl'),
    });
  };

  try {
    const authority = await makeClusterPki(layout.pki);
    const pki = (file: string): string => authority.file(file);
    await network.addBridge(clusterNetwork.nodeBridge, `${clusterNetwork.nodeIp}/32`);
    // The namespace has no default route: without one for Services, a hostNetwork pod's
    // connection to a ClusterIP fails (ENETUNREACH) before kube-proxy's rules can rewrite it.
    await network.ip(
      'route',
      'add',
      clusterNetwork.serviceSubnet,
      'dev',
      clusterNetwork.nodeBridge,
    );
    await writeFile(join(root, 'resolv.conf'), 'nameserver 127.0.0.1\n');

    startDaemon('etcd', tool('etcd'), [
      `--data-dir=${join(root, 'etcd')}`,
      '--listen-client-urls=http://127.0.0.1:2379',
      '--advertise-client-urls=http://127.0.0.1:2379',
      '--listen-peer-urls=http://127.0.0.1:2380',
      '--initial-advertise-peer-urls=http://127.0.0.1:2380',
      '--initial-cluster=default=http://127.0.0.1:2380',
      '--unsafe-no-fsync=true',
      '--log-level=warn',
    ]);
    const server = `https://${clusterNetwork.nodeIp}:${clusterNetwork.apiPort}`;
    const apiserverArgs = [
      '--etcd-servers=http://127.0.0.1:2379',
      `--bind-address=${clusterNetwork.nodeIp}`,
      `--advertise-address=${clusterNetwork.nodeIp}`,
      `--secure-port=${clusterNetwork.apiPort}`,
      `--cert-dir=${layout.pki}`,
      `--tls-cert-file=${pki('serving.crt')}`,
      `--tls-private-key-file=${pki('serving.key')}`,
      `--client-ca-file=${pki('ca.crt')}`,
      `--service-cluster-ip-range=${clusterNetwork.serviceSubnet}`,
      '--allow-privileged=true',
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pki('sa.pub')}`,
      `--service-account-signing-key-file=${pki('sa.key')}`,
      `--kubelet-client-certificate=${pki('apiserver-kubelet-client.crt')}`,
      `--kubelet-client-key=${pki('apiserver-kubelet-client.key')}`,
      `--kubelet-certificate-authority=${pki('ca.crt')}`,
      '--kubelet-preferred-address-types=InternalIP',
      '--v=0',
    ];
    const apiserverReady = async (): Promise<boolean> => {
      const daemon = daemons.get('kube-apiserver');
      if (daemon && !daemon.running)
        throw new Error(`kube-apiserver exited: ${daemon.output.slice(-3000)}`);
      const probe = await network.exec(
        'curl',
        [
          '-sf',
          '--cacert',
          pki('ca.crt'),
          '--cert',
          pki('admin.crt'),
          '--key',
          pki('admin.key'),
          `${server}/readyz`,
        ],
        { allowFailure: true, timeoutMs: 5000 },
      );
      return probe.code === 0;
    };
    const startApiServer = async (): Promise<void> => {
      startDaemon('kube-apiserver', tool('kube-apiserver'), apiserverArgs);
      await waitFor(apiserverReady, 120_000, 'kube-apiserver');
    };
    await startApiServer();

    startDaemon('kube-controller-manager', tool('kube-controller-manager'), [
      `--kubeconfig=${pki('controller-manager.kubeconfig')}`,
      `--authentication-kubeconfig=${pki('controller-manager.kubeconfig')}`,
      `--authorization-kubeconfig=${pki('controller-manager.kubeconfig')}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--secure-port=10257',
      `--root-ca-file=${pki('ca.crt')}`,
      `--service-account-private-key-file=${pki('sa.key')}`,
      '--use-service-account-credentials=true',
      `--cluster-signing-cert-file=${pki('ca.crt')}`,
      `--cluster-signing-key-file=${pki('ca.key')}`,
      '--v=1',
    ]);
    startDaemon('kube-scheduler', tool('kube-scheduler'), [
      `--kubeconfig=${pki('scheduler.kubeconfig')}`,
      `--authentication-kubeconfig=${pki('scheduler.kubeconfig')}`,
      `--authorization-kubeconfig=${pki('scheduler.kubeconfig')}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--secure-port=10259',
      '--v=1',
    ]);

    await writeFile(join(root, 'containerd', 'config.toml'), containerdConfig(layout));
    await writeFile(join(root, 'cni', 'net.d', '10-berth-cluster.conflist'), cniConfig(layout));
    startDaemon('containerd', tool('containerd'), [
      '--config',
      join(root, 'containerd', 'config.toml'),
    ]);
    const ctr = (...args: string[]): Promise<RunResult> =>
      run(tool('ctr'), ['--address', layout.containerdSocket, '--namespace', 'k8s.io', ...args]);
    await waitFor(async () => (await ctr('version'), true), 30_000, 'containerd');
    const importImage = async (archive: string): Promise<void> => {
      await ctr('images', 'import', archive);
    };
    for (const archive of await buildTestImages(join(root, 'images'))) await importImage(archive);

    // cgroup v1: the kubelet's cgroupRoot must exist in every hierarchy before it starts.
    for (const hierarchy of await readdir('/sys/fs/cgroup')) {
      if (hierarchy === 'unified') continue;
      await mkdir(join('/sys/fs/cgroup', hierarchy, layout.cgroupRoot), { recursive: true }).catch(
        () => undefined,
      );
    }
    const kubeletConfigFile = join(root, 'kubelet-config.yaml');
    const startKubelet = async (options: KubeletOptions): Promise<void> => {
      await writeFile(kubeletConfigFile, kubeletConfig(layout, options));
      startDaemon('kubelet', tool('kubelet'), [
        `--config=${kubeletConfigFile}`,
        `--kubeconfig=${pki('kubelet.kubeconfig')}`,
        `--root-dir=${join(root, 'kubelet')}`,
        `--hostname-override=${clusterNetwork.nodeName}`,
        `--node-ip=${clusterNetwork.nodeIp}`,
        '--v=1',
        ...kubeletFlags(options),
      ]);
    };
    await startKubelet({});
    await writeFile(join(root, 'kube-proxy-config.yaml'), kubeProxyConfig(layout));
    startDaemon('kube-proxy', tool('kube-proxy'), [
      `--config=${join(root, 'kube-proxy-config.yaml')}`,
      '--v=1',
    ]);

    const kubectl: ControlPlane['kubectl'] = (args, options = {}) =>
      network.exec(tool('kubectl'), ['--kubeconfig', pki('admin.kubeconfig'), ...args], {
        ...(options.input !== undefined ? { input: options.input } : {}),
        allowFailure: options.allowFailure ?? false,
      });
    await waitFor(
      async () =>
        (
          await kubectl(
            [
              'get',
              'node',
              clusterNetwork.nodeName,
              '-o',
              'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            ],
            { allowFailure: true },
          )
        ).stdout === 'True',
      120_000,
      'the node to be Ready',
    );
    const nodeReadyMillis = Date.now() - started;

    const provisioner = startDaemon('provisioner', process.execPath, [
      join(repositoryRoot, 'test', 'support', 'cluster', 'provisioner.ts'),
      pki('admin.kubeconfig'),
      join(root, 'volumes'),
    ]);
    await waitFor(
      async () => {
        if (!provisioner.running)
          throw new ExitedError(`the provisioner exited: ${provisioner.output}`);
        return provisioner.output.includes('provisioner ready');
      },
      30_000,
      'the volume provisioner',
    );
    await kubectl(['apply', '-f', '-'], { input: clusterAddons() });
    await kubectl([
      '-n',
      'kube-system',
      'rollout',
      'status',
      'deployment/coredns',
      '--timeout=120s',
    ]);
    const startup = { nodeReadyMillis, readyMillis: Date.now() - started };

    const cluster: Cluster = {
      kubeconfig: pki('admin.kubeconfig'),
      server,
      root,
      network,
      kubectl,
      onNode: (command, args, options) => network.exec(findTool(command) ?? command, args, options),
      crictl: (args, options = {}) =>
        run(tool('crictl'), ['--runtime-endpoint', `unix://${layout.containerdSocket}`, ...args], {
          allowFailure: options.allowFailure ?? false,
        }),
      importImage,
      startup,
      restartKubelet: async (options) => {
        await daemons.get('kubelet')?.stop();
        await startKubelet(options);
      },
      logs: (component) => daemons.get(component)?.output.slice(-4000) ?? '',
      controllerManagerOutput: () =>
        daemons.get('kube-controller-manager')?.output.slice(-4000) ?? '',
      stopApiServer: async () => {
        await daemons.get('kube-apiserver')?.stop();
      },
      startApiServer,
      stop,
      abandon: () => {
        for (const daemon of daemons.values()) daemon.child.kill('SIGKILL');
      },
    };
    return cluster;
  } catch (error) {
    const tails = [...daemons]
      .map(([name, daemon]) => `--- ${name}\n${daemon.output.slice(-1500)}`)
      .join('\n');
    await stop();
    throw new Error(`the test cluster did not start: ${String(error)}\n${tails}`);
  }
}

/** Whether the process that started a cluster still runs (its pid is in `owner.pid`). */
async function ownerAlive(layout: NodeLayout): Promise<boolean> {
  const pid = Number(await readFile(join(layout.root, 'owner.pid'), 'utf8').catch(() => ''));
  if (!pid || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Removes what a run that died left: its processes, mounts, cgroups, namespace and files. */
export async function removeStaleClusters(): Promise<void> {
  for (const name of await NetworkNamespace.existing()) {
    if (await ownerAlive(clusterLayout(name))) continue; // another test's live cluster
    await removeNodeState({
      layout: clusterLayout(name),
      network: NetworkNamespace.attach(name),
      daemons: new Map(),
      crictl: tool('crictl'),
    });
  }
}

/**
 * What a cluster installer adds: the default StorageClass of the provisioner, and CoreDNS
 * (ServiceAccount, RBAC, Corefile, Deployment, the kube-dns Service on the clusterDNS address).
 */
function clusterAddons(): string {
  const labels = { 'k8s-app': 'kube-dns' };
  const objects = [
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: {
        name: clusterStorage.storageClassName,
        annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' },
      },
      provisioner: clusterStorage.provisionerName,
      reclaimPolicy: 'Delete',
      volumeBindingMode: 'Immediate',
    },
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: 'coredns', namespace: 'kube-system' },
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'system:coredns' },
      rules: [
        {
          apiGroups: [''],
          resources: ['endpoints', 'services', 'pods', 'namespaces'],
          verbs: ['list', 'watch'],
        },
        {
          apiGroups: ['discovery.k8s.io'],
          resources: ['endpointslices'],
          verbs: ['list', 'watch'],
        },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'system:coredns' },
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'ClusterRole',
        name: 'system:coredns',
      },
      subjects: [{ kind: 'ServiceAccount', name: 'coredns', namespace: 'kube-system' }],
    },
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'coredns', namespace: 'kube-system' },
      data: {
        // Nothing outside the cluster is reachable: every other name is NXDOMAIN at once.
        Corefile:
          '.:1053 {\n  errors\n  health :8081\n  ready :8181\n  kubernetes cluster.local in-addr.arpa ip6.arpa\n  cache 5\n}\n',
      },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'coredns', namespace: 'kube-system', labels },
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: 'coredns',
            securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 },
            containers: [
              {
                name: 'coredns',
                image: testImages.coredns,
                imagePullPolicy: 'Never',
                args: ['-conf', '/etc/coredns/Corefile'],
                ports: [
                  { name: 'dns', containerPort: 1053, protocol: 'UDP' },
                  { name: 'dns-tcp', containerPort: 1053, protocol: 'TCP' },
                ],
                readinessProbe: { httpGet: { path: '/ready', port: 8181 }, periodSeconds: 2 },
                livenessProbe: { httpGet: { path: '/health', port: 8081 } },
                volumeMounts: [{ name: 'config', mountPath: '/etc/coredns', readOnly: true }],
                securityContext: {
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ['ALL'] },
                },
              },
            ],
            volumes: [{ name: 'config', configMap: { name: 'coredns' } }],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels },
      spec: {
        clusterIP: clusterNetwork.dnsServiceIp,
        selector: labels,
        ports: [
          { name: 'dns', port: 53, targetPort: 1053, protocol: 'UDP' },
          { name: 'dns-tcp', port: 53, targetPort: 1053, protocol: 'TCP' },
        ],
      },
    },
  ];
  return objects.map((object) => stringify(object)).join('---\n');
}
