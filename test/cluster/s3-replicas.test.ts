import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { clusterToolNames, startCluster, type Cluster } from '../support/cluster/cluster.ts';
import { applyObjects, installBerth, tearDownCluster } from '../support/cluster/install.ts';
import { startNodeS3Server, type NodeS3Server } from '../support/cluster/s3-server.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, waitFor } from '../support/processes.ts';
import { s3Tool } from '../support/s3.ts';
import { describeWithTools } from '../support/tools.ts';

/** Berth's own image, under a name of its own, as `kubectl apply -k` with `images:` runs it. */
const berthImage = 'berth.test/berth:s3';
const namespace = 'berth-system';
const registryName = 'shared';
const image = 'localhost:5000/loop/app:1';
const registryPods = `app.kubernetes.io/instance=${registryName},app.kubernetes.io/component=registry`;

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  status: { conditions?: { type: string; status: string }[] };
}

interface PullLoop {
  /** Pulls done so far, and the failures among them with what the client said. */
  readonly pulls: number;
  readonly failures: readonly string[];
  /** Waits until `count` more pulls than now have finished. */
  more(count: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Three registry pods on one bucket of an S3 server on the node, behind the Registry's Service
 * and the node proxy: pulls through the node proxy go on while the Deployment rolls and while a
 * pod is deleted, and none fails.
 */
describeWithTools(
  [...clusterToolNames, 'crane', s3Tool],
  'a Registry with three replicas on S3, on a real cluster',
  () => {
    let cluster: Cluster;
    let s3: NodeS3Server | undefined;
    let work: string;
    let admin: { username: string; password: string };
    const kubectl = (...args: string[]) => cluster.kubectl(args);
    const json = async <T>(...args: string[]): Promise<T> =>
      JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
    const pods = async (): Promise<Pod[]> =>
      (await json<{ items: Pod[] }>('get', 'pods', '-n', namespace, '-l', registryPods)).items;
    const ready = (pod: Pod): boolean =>
      pod.metadata.deletionTimestamp === undefined &&
      (pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false);
    const crictl = (...args: string[]) => cluster.crictl(args, { allowFailure: true });
    /** What the node proxy logged about requests it could not deliver, for failure messages. */
    const proxyFailures = async (): Promise<string[]> =>
      (
        await cluster.kubectl(
          [
            '-n',
            namespace,
            'logs',
            '-l',
            `app.kubernetes.io/instance=${registryName},app.kubernetes.io/component=node-proxy`,
            '--tail=-1',
          ],
          { allowFailure: true },
        )
      ).stdout
        .split('\n')
        .filter((line) => line.includes('proxy request failed'));

    /**
     * Pulls `image` again and again as the kubelet does (containerd, through the node proxy on
     * localhost:5000), removing it first so that every pull fetches its manifest, config and
     * layer from the registry.
     */
    const startPullLoop = (): PullLoop => {
      let pulls = 0;
      let stopped = false;
      const failures: string[] = [];
      const waiters: { target: number; resolve: () => void }[] = [];
      const loop = (async () => {
        while (!stopped) {
          await crictl('rmi', image);
          const started = Date.now();
          const pulled = await crictl(
            'pull',
            '--creds',
            `${admin.username}:${admin.password}`,
            image,
          );
          pulls += 1;
          if (pulled.code !== 0)
            failures.push(
              `pull ${pulls} after ${Date.now() - started} ms: ${pulled.stderr.trim() || pulled.stdout.trim()}`,
            );
          for (const waiter of waiters.filter((entry) => entry.target <= pulls)) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve();
          }
        }
      })();
      return {
        get pulls() {
          return pulls;
        },
        failures,
        more: (count) =>
          new Promise<void>((resolve) => waiters.push({ target: pulls + count, resolve })),
        async stop() {
          stopped = true;
          await loop;
        },
      };
    };

    beforeAll(async () => {
      cluster = await startCluster();
      work = join(cluster.root, 'test');
      await mkdir(work, { recursive: true });
      await installBerth(cluster, berthImage);
      s3 = await startNodeS3Server(cluster);
    }, 900_000);

    afterAll(async () => {
      await s3?.stop();
      expect(await tearDownCluster(cluster)).toEqual([]);
    }, 180_000);

    it('runs three registry pods on the bucket, Ready, and serves a pushed image through the node proxy', async () => {
      const server = s3 as NodeS3Server;
      await applyObjects(cluster, [
        {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: { name: 'images-s3', namespace },
          type: 'Opaque',
          stringData: {
            AWS_ACCESS_KEY_ID: server.accessKeyId,
            AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
          },
        },
        {
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Registry',
          metadata: { name: registryName, namespace },
          spec: {
            replicas: 3,
            storage: {
              s3: {
                bucket: server.bucket,
                endpoint: server.endpoint,
                forcePathStyle: true,
                credentialsSecret: 'images-s3',
              },
            },
            nodeAccess: { mode: 'NodeProxy', port: 5000 },
          },
        },
      ]);
      await kubectl(
        '-n',
        namespace,
        'wait',
        '--for=condition=Ready',
        `registry/${registryName}`,
        '--timeout=240s',
      ).catch(async (error: unknown) => {
        const status = await kubectl(
          '-n',
          namespace,
          'get',
          'registry',
          registryName,
          '-o',
          'yaml',
        );
        throw new Error(`${String(error)}\n${status.stdout}\ns3: ${server.output()}`);
      });
      expect((await pods()).filter(ready)).toHaveLength(3);

      const secret = await json<{ data: Record<string, string> }>(
        'get',
        'secret',
        `berth-${registryName}-admin`,
        '-n',
        namespace,
      );
      const field = (key: string) => Buffer.from(secret.data[key] ?? '', 'base64').toString();
      admin = { username: field('username'), password: field('password') };

      // A one-layer image no one has: every pull of it must fetch its layer from the registry.
      const docker = join(work, 'docker');
      await mkdir(docker, { recursive: true });
      const env = { ...process.env, DOCKER_CONFIG: docker };
      const layer = await randomLayerTar(work, 'loop-layer', 1024 * 1024);
      await cluster.onNode(
        'crane',
        ['auth', 'login', 'localhost:5000', '-u', admin.username, '-p', admin.password],
        { env },
      );
      await cluster.onNode('crane', ['append', '--insecure', '-f', layer, '-t', image], { env });
      await cluster.onNode(
        'crane',
        ['mutate', '--insecure', '--set-platform', 'linux/amd64', image, '-t', image],
        { env },
      );
      const pulled = await crictl('pull', '--creds', `${admin.username}:${admin.password}`, image);
      expect({ code: pulled.code, stderr: pulled.stderr }).toMatchObject({ code: 0 });
      // Removing the image removes its layer from the node's content store, so the loop's
      // pulls are real fetches, not cache hits.
      const manifest = JSON.parse(
        (await cluster.onNode('crane', ['manifest', '--insecure', image], { env })).stdout,
      ) as { layers: { digest: string }[] };
      const layerDigest = manifest.layers[0]?.digest ?? '';
      const content = () =>
        run('ctr', [
          '--address',
          join(cluster.root, 'containerd', 'containerd.sock'),
          '--namespace',
          'k8s.io',
          'content',
          'ls',
          '-q',
        ]).then((result) => result.stdout);
      expect(await content()).toContain(layerDigest);
      await crictl('rmi', image);
      expect(await content()).not.toContain(layerDigest);
    });

    it('kubectl rollout restart during a pull loop: every pull succeeds', async () => {
      const before = new Set((await pods()).map((pod) => pod.metadata.name));
      const loop = startPullLoop();
      try {
        await loop.more(3);
        const atRestart = loop.pulls;
        const started = Date.now();
        await kubectl('-n', namespace, 'rollout', 'restart', `deployment/berth-${registryName}`);
        await kubectl(
          '-n',
          namespace,
          'rollout',
          'status',
          `deployment/berth-${registryName}`,
          '--timeout=240s',
        );
        // The old pods are gone, not only replaced in the Deployment's count.
        await waitFor(
          async () => (await pods()).every((pod) => !before.has(pod.metadata.name)),
          120_000,
          'the old registry pods to end',
        );
        const during = loop.pulls - atRestart;
        await loop.more(3);
        process.stdout.write(
          `rollout restart: ${Date.now() - started} ms, ${during} pulls during it, ${loop.failures.length} failed\n`,
        );
        expect(during).toBeGreaterThanOrEqual(5);
        expect((await pods()).filter(ready)).toHaveLength(3);
      } finally {
        await loop.stop();
      }
      expect({
        failures: loop.failures,
        proxy: loop.failures.length ? await proxyFailures() : [],
      }).toEqual({ failures: [], proxy: [] });
    }, 360_000);

    it('deleting one registry pod during a pull loop: every pull succeeds', async () => {
      const [victim] = await pods();
      const loop = startPullLoop();
      try {
        await loop.more(3);
        const atDelete = loop.pulls;
        const started = Date.now();
        await kubectl(
          '-n',
          namespace,
          'delete',
          'pod',
          victim?.metadata.name ?? '',
          '--wait=false',
        );
        await waitFor(
          async () => {
            const now = await pods();
            return (
              !now.some((pod) => pod.metadata.name === victim?.metadata.name) &&
              now.filter(ready).length === 3
            );
          },
          120_000,
          'the deleted pod to end and a replacement to be Ready',
        );
        const during = loop.pulls - atDelete;
        await loop.more(3);
        process.stdout.write(
          `pod deleted: replaced in ${Date.now() - started} ms, ${during} pulls meanwhile, ${loop.failures.length} failed\n`,
        );
        expect(during).toBeGreaterThanOrEqual(3);
      } finally {
        await loop.stop();
      }
      expect({
        failures: loop.failures,
        proxy: loop.failures.length ? await proxyFailures() : [],
      }).toEqual({ failures: [], proxy: [] });
    }, 240_000);
  },
);
