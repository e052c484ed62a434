import { readdir } from 'node:fs/promises';
import { run, type RunResult } from '../processes.ts';

/** Every network namespace the cluster harness makes is named with this prefix. */
export const namespacePrefix = 'berth-cluster-';

/**
 * A network namespace of the test's own: the cluster's bridges, addresses, routes and iptables
 * rules exist only in it, and it has no link to the host, so nothing in it can send traffic
 * anywhere but its own loopback and its own addresses. Deleting it removes all of them at once.
 */
export class NetworkNamespace {
  readonly name: string;

  private constructor(name: string) {
    this.name = name;
  }

  static async create(name: string): Promise<NetworkNamespace> {
    await run('ip', ['netns', 'add', name]);
    const namespace = new NetworkNamespace(name);
    await namespace.ip('link', 'set', 'lo', 'up');
    // Pods reach Services and the node through this namespace's routing.
    await namespace.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    await namespace.exec('sysctl', ['-qw', 'net.bridge.bridge-nf-call-iptables=1']);
    return namespace;
  }

  /** A namespace that exists already (a run that died left it), to clean it up. */
  static attach(name: string): NetworkNamespace {
    return new NetworkNamespace(name);
  }

  get path(): string {
    return `/run/netns/${this.name}`;
  }

  /** argv that runs `command` inside this namespace (network only: mounts stay shared). */
  wrap(command: string, args: readonly string[]): [string, string[]] {
    return ['nsenter', [`--net=${this.path}`, '--', command, ...args]];
  }

  exec(
    command: string,
    args: readonly string[],
    options: Parameters<typeof run>[2] = {},
  ): Promise<RunResult> {
    const [wrapped, wrappedArgs] = this.wrap(command, args);
    return run(wrapped, wrappedArgs, options);
  }

  ip(...args: string[]): Promise<RunResult> {
    return run('ip', ['-n', this.name, ...args]);
  }

  /** An empty bridge carrying `address` (the kernel here has no dummy links; kubelet refuses loopback). */
  async addBridge(name: string, address: string): Promise<void> {
    await this.ip('link', 'add', name, 'type', 'bridge');
    await this.ip('addr', 'add', address, 'dev', name);
    await this.ip('link', 'set', name, 'up');
  }

  /** PIDs of the processes whose network namespace this is. */
  async pids(): Promise<number[]> {
    const result = await run('ip', ['netns', 'pids', this.name], { allowFailure: true });
    return result.stdout.split(/\s+/).filter(Boolean).map(Number);
  }

  async remove(): Promise<void> {
    await run('ip', ['netns', 'delete', this.name], { allowFailure: true });
  }

  static async existing(): Promise<string[]> {
    const names = await readdir('/run/netns').catch(() => [] as string[]);
    return names.filter((name) => name.startsWith(namespacePrefix));
  }
}
