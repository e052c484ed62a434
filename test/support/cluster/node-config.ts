import { stringify } from 'yaml';

/** Addresses of the test cluster, all inside its own network namespace. */
export const clusterNetwork = {
  nodeName: 'berth-node',
  /** The node's address, on a bridge of its own. */
  nodeIp: '10.213.0.1',
  nodeBridge: 'berth-node0',
  podBridge: 'berth-pods0',
  podSubnet: '10.213.1.0/24',
  podGateway: '10.213.1.1',
  serviceSubnet: '10.0.0.0/24',
  /** The `kubernetes` Service: the first address of the service range. */
  apiServiceIp: '10.0.0.1',
  dnsServiceIp: '10.0.0.10',
  apiPort: 6443,
} as const;

/** The default StorageClass and the provisioner (provisioner.ts) that serves it. */
export const clusterStorage = {
  provisionerName: 'berth.test/local',
  storageClassName: 'berth-local',
} as const;

/** The files a node's components read, all under the cluster's directory. */
export interface NodeLayout {
  readonly root: string;
  readonly pki: string;
  readonly containerdSocket: string;
  readonly cgroupRoot: string;
  readonly sandboxImage: string;
}

/**
 * containerd 1.6 (Debian 12) with its own root, state and socket. `restrict_oom_score_adj`:
 * this VM bounds CAP_SYS_RESOURCE out, so runc cannot set the sandbox's negative
 * oom_score_adj ("can't get final child's PID from pipe: EOF" without it).
 */
export function containerdConfig(layout: NodeLayout): string {
  return `version = 2
root = "${layout.root}/containerd/root"
state = "${layout.root}/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "${layout.containerdSocket}"

[ttrpc]
  address = "${layout.containerdSocket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${layout.sandboxImage}"
  enable_cdi = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${layout.root}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "${layout.root}/containerd/certs.d"
`;
}

/** One bridge for every pod, addresses from host-local IPAM, hostPort through portmap. */
export function cniConfig(layout: NodeLayout): string {
  return JSON.stringify(
    {
      cniVersion: '0.4.0',
      name: 'berth-cluster',
      plugins: [
        {
          type: 'bridge',
          bridge: clusterNetwork.podBridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: `${layout.root}/cni/ipam`,
            ranges: [[{ subnet: clusterNetwork.podSubnet, gateway: clusterNetwork.podGateway }]],
            routes: [{ dst: '0.0.0.0/0' }],
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

/** What a test may change of the kubelet, at start or with `restartKubelet`. */
export interface KubeletOptions {
  /** KEP-2535: `NeverVerify`, `NeverVerifyPreloadedImages` (the default), `AlwaysVerify`. */
  readonly imagePullCredentialsVerificationPolicy?: string;
  /**
   * KEP-4412: an image credential provider. `configFile` is a CredentialProviderConfig (file or
   * directory) and `binDir` the directory holding the executable named as each provider; both
   * are paths on the node (this machine), as the kubelet flags take them.
   */
  readonly credentialProvider?: { readonly configFile: string; readonly binDir: string };
}

/** The kubelet flags `options` need beyond its configuration file. */
export function kubeletFlags(options: KubeletOptions): string[] {
  const provider = options.credentialProvider;
  if (!provider) return [];
  return [
    `--image-credential-provider-config=${provider.configFile}`,
    `--image-credential-provider-bin-dir=${provider.binDir}`,
  ];
}

/**
 * The kubelet: cgroup v1 with cgroupfs (kubelet 1.36 refuses v1 unless failCgroupV1 is false),
 * x509 and webhook authentication, every path under the cluster's directory.
 * `imagePullCredentialsVerificationPolicy` is the kubelet's KEP-2535 setting; the tests run
 * the default and `AlwaysVerify`.
 */
export function kubeletConfig(layout: NodeLayout, options: KubeletOptions = {}): string {
  const pki = layout.pki;
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: clusterNetwork.nodeIp,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    tlsCertFile: `${pki}/kubelet-serving.crt`,
    tlsPrivateKeyFile: `${pki}/kubelet-serving.key`,
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: `${pki}/ca.crt` },
    },
    authorization: { mode: 'Webhook' },
    containerRuntimeEndpoint: `unix://${layout.containerdSocket}`,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: layout.cgroupRoot,
    failCgroupV1: false,
    failSwapOn: false,
    podLogsDir: `${layout.root}/pod-logs`,
    volumePluginDir: `${layout.root}/kubelet/volume-plugins`,
    resolvConf: `${layout.root}/resolv.conf`,
    clusterDomain: 'cluster.local',
    clusterDNS: [clusterNetwork.dnsServiceIp],
    serializeImagePulls: false,
    maxPods: 60,
    evictionHard: {
      'memory.available': '200Mi',
      'nodefs.available': '2%',
      'imagefs.available': '2%',
    },
    imageGCHighThresholdPercent: 100,
    ...(options.imagePullCredentialsVerificationPolicy
      ? { imagePullCredentialsVerificationPolicy: options.imagePullCredentialsVerificationPolicy }
      : {}),
  });
}

/**
 * kube-proxy in iptables mode. `masqueradeAll`: a pod reaching a Service whose endpoint sits on
 * the same bridge gets its reply back through the node, where the NAT is undone.
 */
export function kubeProxyConfig(layout: NodeLayout): string {
  return stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig: `${layout.pki}/proxy.kubeconfig` },
    mode: 'iptables',
    clusterCIDR: clusterNetwork.podSubnet,
    hostnameOverride: clusterNetwork.nodeName,
    bindAddress: clusterNetwork.nodeIp,
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    nodePortAddresses: [`${clusterNetwork.nodeIp}/32`],
    iptables: { masqueradeAll: true },
    conntrack: { maxPerCore: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
  });
}
