import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { clusterToolNames, startCluster, type Cluster } from '../support/cluster/cluster.ts';
import {
  applyObjects,
  installBerth,
  operatorNamespace,
  startNodeUpstreamRegistry,
  tearDownCluster,
  type NodeUpstreamRegistry,
} from '../support/cluster/install.ts';
import { mirrorRegistry } from '../support/containerd.ts';
import { buildTestImages, busyboxEntrypoint } from '../support/cluster/test-images.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, waitFor } from '../support/processes.ts';
import { findTool } from '../support/tools.ts';
import { describeWithTools } from '../support/tools.ts';

const berthImage = 'berth.test/berth:mirror';
const registryName = 'mirror';
/** The upstream's registry name in pod specs: containerd sends it as `?ns=`, the mirror prefix. */
const upstreamName = 'upstream.test';
const image = `${upstreamName}/library/app:1`;
const uncached = `${upstreamName}/library/other:1`;

interface PodEvents {
  items: { reason?: string; message?: string }[];
}

/**
 * Must-show 4 of issue 19: pods name an upstream registry's image, the node's containerd mirrors
 * that name to Berth's node proxy (hosts.toml), and with the upstream stopped a pod still runs
 * from Berth's cache, while an image Berth never cached fails with a clear error.
 */
describeWithTools(
  [...clusterToolNames, 'crane', 'docker-registry'],
  'a Registry mirroring an upstream registry, on a real cluster',
  () => {
    let cluster: Cluster | undefined;
    let upstream: NodeUpstreamRegistry | undefined;
    const kubectl = (...args: string[]) => (cluster as Cluster).kubectl(args);

    const runPod = async (name: string, podImage: string) => {
      await applyObjects(cluster as Cluster, [
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name, namespace: 'default' },
          spec: {
            containers: [{ name: 'app', image: podImage, command: busyboxEntrypoint }],
            terminationGracePeriodSeconds: 1,
          },
        },
      ]);
    };
    const events = async (pod: string): Promise<string[]> =>
      (
        JSON.parse(
          (
            await kubectl(
              'get',
              'events',
              '-n',
              'default',
              '--field-selector',
              `involvedObject.name=${pod}`,
              '-o',
              'json',
            )
          ).stdout,
        ) as PodEvents
      ).items.map((event) => `${event.reason ?? ''}: ${event.message ?? ''}`);
    const waitRunning = async (pod: string) =>
      kubectl(
        'wait',
        '-n',
        'default',
        '--for=jsonpath={.status.phase}=Running',
        `pod/${pod}`,
        '--timeout=120s',
      ).catch(async (error: unknown) => {
        throw new Error(`${String(error)}\n${(await events(pod)).join('\n')}`);
      });

    beforeAll(async () => {
      cluster = await startCluster();
      await installBerth(cluster, berthImage);
      upstream = await startNodeUpstreamRegistry(cluster);
      // The busybox test image, pushed to the upstream as library/base:1, and library/app:1 on
      // top of it with a random layer: the node's containerd already holds busybox's layers
      // (other test images share them), so only a layer it never saw proves that the second pod
      // pulled it from Berth's cache.
      const images = join(cluster.root, 'test', 'images');
      await mkdir(images, { recursive: true });
      const archives = await buildTestImages(images);
      const busybox = archives.find((file) => file.includes('busybox')) as string;
      const layout = join(images, 'busybox-layout');
      await mkdir(layout, { recursive: true });
      await run('tar', ['-xf', busybox, '-C', layout]);
      const crane = findTool('crane') as string;
      const base = `${upstream.address}/library/base:1`;
      await cluster.onNode(crane, ['push', '--insecure', layout, base]);
      const layer = await randomLayerTar(images, 'mirror-only', 256 * 1024);
      await cluster.onNode(crane, [
        'append',
        '--insecure',
        '-b',
        base,
        '-f',
        layer,
        '-t',
        `${upstream.address}/library/app:1`,
      ]);
    }, 900_000);

    afterAll(async () => {
      await upstream?.stop();
      expect(await tearDownCluster(cluster)).toEqual([]);
    }, 180_000);

    it('runs a pod from the upstream through Berth, then from its cache with the upstream stopped', async () => {
      const node = cluster as Cluster;
      const address = (upstream as NodeUpstreamRegistry).address;
      await applyObjects(node, [
        {
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Registry',
          metadata: { name: registryName, namespace: operatorNamespace },
          spec: {
            storage: { filesystem: { size: '1Gi' } },
            nodeAccess: { mode: 'NodeProxy', port: 5000 },
            // A mirrored path no Repository declares is Public: the pod pulls with no secret.
            mirrors: [{ url: `http://${address}`, prefix: upstreamName }],
          },
        },
      ]);
      await kubectl(
        '-n',
        operatorNamespace,
        'wait',
        '--for=condition=Ready',
        `registry/${registryName}`,
        '--timeout=240s',
      );
      // What a user writes on each node: the upstream's name pulls through the node proxy.
      await mirrorRegistry(join(node.root, 'containerd'), upstreamName, 'http://localhost:5000');

      await runPod('first', image);
      await waitRunning('first');

      await (upstream as NodeUpstreamRegistry).stop();
      await kubectl('delete', 'pod', '-n', 'default', 'first', '--wait=true');
      await node.crictl(['rmi', image]);
      await runPod('cached', image);
      await waitRunning('cached');

      await runPod('uncached', uncached);
      let failure = '';
      await waitFor(
        async () => {
          failure = (await events('uncached')).find((event) => event.startsWith('Failed:')) ?? '';
          return failure !== '';
        },
        120_000,
        'a Failed event for the uncached image',
      );
      expect(failure).toContain(uncached);
      expect(failure).toMatch(/failed to (pull|resolve)/i);
    }, 600_000);
  },
);
