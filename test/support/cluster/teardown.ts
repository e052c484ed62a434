import { readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Daemon } from '../processes.ts';
import { run } from '../processes.ts';
import type { NetworkNamespace } from './network.ts';
import type { NodeLayout } from './node-config.ts';

/** Mount points under any of these prefixes, deepest first. */
async function mountsUnder(prefixes: readonly string[]): Promise<string[]> {
  const table = await readFile('/proc/self/mountinfo', 'utf8');
  const points = table
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) =>
      prefixes.some((prefix) => point === prefix || point.startsWith(`${prefix}/`)),
    );
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Every cgroup directory below `root` in each v1 hierarchy, deepest first. */
async function cgroupDirectories(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (directory: string): Promise<void> => {
    const entries = await readdir(directory, { withFileTypes: true }).catch(() => undefined);
    if (entries === undefined) return; // not there
    for (const entry of entries) if (entry.isDirectory()) await walk(join(directory, entry.name));
    found.push(directory);
  };
  for (const hierarchy of await readdir('/sys/fs/cgroup').catch(() => [] as string[]))
    await walk(join('/sys/fs/cgroup', hierarchy, root));
  return found.filter((directory) => directory.includes(root)).sort((a, b) => b.length - a.length);
}

/**
 * Kills every process in these cgroups (the pods' containers); resolves to the names of the
 * network namespaces they were in, which containerd mounted under /run/netns.
 */
async function killCgroupProcesses(directories: readonly string[]): Promise<Set<string>> {
  const namespaces = new Set<string>();
  for (const directory of directories) {
    const procs = await readFile(join(directory, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const pid of procs.split('\n').filter(Boolean)) {
      const identified = await run('ip', ['netns', 'identify', pid], { allowFailure: true });
      for (const name of identified.stdout.split(/\s+/))
        if (name.startsWith('cni-')) namespaces.add(name);
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
  return namespaces;
}

/**
 * Removes the cgroups, deepest first. A killed process stays in its cgroup until the kernel has
 * finished it, so this retries for a few seconds, killing whatever is still listed.
 */
async function removeCgroups(root: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const directories = await cgroupDirectories(root);
    if (directories.length === 0) return;
    await killCgroupProcesses(directories);
    for (const directory of directories) await rmdir(directory).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Stops a cluster and removes everything it put on the machine, in an order that works after a
 * failed run too: pods through the CRI while containerd lives, then every process (daemons,
 * shims, containers found through their cgroups), then mounts, cgroups, the network namespaces
 * of pods whose containers were still running, the cluster's own network namespace and its
 * directory.
 */
export async function removeNodeState(state: {
  layout: NodeLayout;
  network: NetworkNamespace;
  daemons: Map<string, Daemon>;
  crictl: string;
}): Promise<void> {
  const { layout, network, daemons } = state;
  for (const name of ['provisioner', 'kube-proxy', 'kubelet'])
    await daemons.get(name)?.stop('SIGTERM', 5000);
  await run(
    state.crictl,
    [
      '--runtime-endpoint',
      `unix://${layout.containerdSocket}`,
      '--timeout',
      '20s',
      'rmp',
      '--force',
      '--all',
    ],
    { allowFailure: true, timeoutMs: 60_000 },
  );
  for (const daemon of daemons.values()) await daemon.stop('SIGTERM', 5000);
  // What is left is not ours to keep: shims in the namespace, containers in the cgroups.
  for (const pid of await network.pids()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  const podNamespaces = [
    ...(await killCgroupProcesses(await cgroupDirectories(layout.cgroupRoot))),
  ];
  await new Promise((resolve) => setTimeout(resolve, 200));

  for (const point of await mountsUnder([
    layout.root,
    ...podNamespaces.map((name) => `/run/netns/${name}`),
  ]))
    await run('umount', ['-l', point], { allowFailure: true });
  for (const name of podNamespaces) await rm(`/run/netns/${name}`, { force: true });
  await removeCgroups(layout.cgroupRoot);
  await network.remove();
  // containerd's CNI keeps a result per pod here; it names the network, so ours are ours.
  for (const file of await readdir('/var/lib/cni/results').catch(() => [] as string[]))
    if (file.startsWith('berth-cluster-'))
      await rm(join('/var/lib/cni/results', file), { force: true });
  await rm(layout.root, { recursive: true, force: true });
  await removeEmptyRuntimeDirectories();
}

/** `ip netns add` mounts /run/netns on first use; the last namespace gone, it goes too. */
async function removeEmptyNetnsDirectory(): Promise<void> {
  const left = await readdir('/run/netns').catch(() => undefined);
  if (left === undefined || left.length > 0) return;
  await run('umount', ['/run/netns'], { allowFailure: true });
  await rmdir('/run/netns').catch(() => undefined);
}

/**
 * Directories containerd 1.6 and its CNI create at fixed host paths on first use, whatever
 * their configuration says. Removed only when empty and no containerd runs (another test's may
 * be using them).
 */
async function removeEmptyRuntimeDirectories(): Promise<void> {
  const others = await run('pgrep', ['-x', 'containerd'], { allowFailure: true });
  if (others.code === 0) return;
  const removeEmpty = async (directory: string): Promise<void> => {
    const entries = await readdir(directory, { withFileTypes: true }).catch(() => undefined);
    if (!entries) return;
    for (const entry of entries)
      if (entry.isDirectory()) await removeEmpty(join(directory, entry.name));
    await rmdir(directory).catch(() => undefined);
  };
  await removeEmpty('/run/containerd');
  await removeEmpty('/var/lib/cni');
  await removeEmptyNetnsDirectory();
}

/** What a cluster left on the machine: empty when its teardown was complete. */
export async function leftovers(layout: NodeLayout, network: string): Promise<string[]> {
  const found: string[] = [];
  const namespaces = await readdir('/run/netns').catch(() => [] as string[]);
  if (namespaces.includes(network)) found.push(`network namespace ${network}`);
  for (const point of await mountsUnder([layout.root])) found.push(`mount ${point}`);
  for (const directory of await cgroupDirectories(layout.cgroupRoot))
    found.push(`cgroup ${directory}`);
  const processes = await run('pgrep', ['-af', layout.root], { allowFailure: true });
  for (const line of processes.stdout.split('\n').filter(Boolean)) found.push(`process ${line}`);
  const root = await readdir(layout.root).catch(() => undefined);
  if (root !== undefined) found.push(`directory ${layout.root}`);
  return found;
}
