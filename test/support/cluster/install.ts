import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { stringify } from 'yaml';
import { repositoryRoot } from '../cli.ts';
import { Daemon, ExitedError, waitFor } from '../processes.ts';
import { findTool } from '../tools.ts';
import { importBerthImage } from './berth-image.ts';
import { clusterLayout, removeStaleClusters, type Cluster } from './cluster.ts';
import { clusterNetwork } from './node-config.ts';
import { leftovers } from './teardown.ts';

export const operatorNamespace = 'berth-system';

/**
 * Installs Berth as a user does, `kubectl apply -k` of deploy/ through an overlay whose `images:`
 * names `berthImage` (imported into the node first), and waits for the operator to roll out.
 */
export async function installBerth(cluster: Cluster, berthImage: string): Promise<void> {
  await importBerthImage(cluster, berthImage);
  const overlay = join(cluster.root, 'test', 'overlay');
  await mkdir(overlay, { recursive: true });
  const [name, tag] = berthImage.split(':') as [string, string];
  await writeFile(
    join(overlay, 'kustomization.yaml'),
    stringify({
      apiVersion: 'kustomize.config.k8s.io/v1beta1',
      kind: 'Kustomization',
      resources: [relative(overlay, join(repositoryRoot, 'deploy'))],
      images: [{ name: 'berth', newName: name, newTag: tag }],
    }),
  );
  await cluster.kubectl(['apply', '-k', overlay]);
  await cluster.kubectl([
    '-n',
    operatorNamespace,
    'rollout',
    'status',
    'deployment/berth-operator',
    '--timeout=180s',
  ]);
}

/**
 * Ends a cluster test: kills the cluster, removes it as a later run would, and returns what is
 * left behind (network namespace, mounts, cgroups, directories), which must be nothing.
 */
export async function tearDownCluster(cluster: Cluster | undefined): Promise<string[]> {
  if (!cluster) return [];
  cluster.abandon();
  await removeStaleClusters();
  return leftovers(clusterLayout(cluster.network.name), cluster.network.name);
}

/** Applies objects with kubectl, as one YAML stream. */
export async function applyObjects(cluster: Cluster, objects: readonly object[]): Promise<void> {
  await cluster.kubectl(['apply', '-f', '-'], {
    input: objects.map((object) => stringify(object)).join('---\n'),
  });
}

/** A Debian docker-registry on the node (inside the cluster's network namespace). */
export interface NodeUpstreamRegistry {
  /** `<node IP>:<port>`, which the node and the pods reach. */
  readonly address: string;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts docker-registry inside the cluster's network namespace, listening on the node IP, with
 * its data under `<cluster root>/upstream`, which teardown removes.
 */
export async function startNodeUpstreamRegistry(
  cluster: Cluster,
  port = 5055,
): Promise<NodeUpstreamRegistry> {
  const binary = findTool('docker-registry');
  if (!binary) throw new Error('docker-registry is not installed; run test/tools/install.sh');
  const directory = join(cluster.root, 'upstream');
  await mkdir(join(directory, 'data'), { recursive: true });
  const address = `${clusterNetwork.nodeIp}:${port}`;
  const config = join(directory, 'config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log: {level: info, accesslog: {disabled: false}}',
      `storage: {filesystem: {rootdirectory: ${join(directory, 'data')}}}`,
      `http: {addr: "${address}", secret: upstream-test}`,
      '',
    ].join('\n'),
  );
  const [command, args] = cluster.network.wrap(binary, ['serve', config]);
  const daemon = new Daemon(command, args);
  try {
    await waitFor(
      async () => {
        if (!daemon.running) throw new ExitedError(`docker-registry exited: ${daemon.output}`);
        const probe = await cluster.onNode(
          'curl',
          ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${address}/v2/`],
          { allowFailure: true, timeoutMs: 5000 },
        );
        return probe.stdout.trim() === '200';
      },
      30_000,
      `docker-registry on ${address}`,
    );
  } catch (error) {
    await daemon.stop('SIGKILL');
    throw error;
  }
  return {
    address,
    output: () => daemon.output.slice(-3000),
    async stop() {
      await daemon.stop('SIGKILL');
    },
  };
}
