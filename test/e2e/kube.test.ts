import { pino } from 'pino';
import { KubeClient, type KubeObject } from '../../src/kube/client.ts';
import { Informer, type ChangeType } from '../../src/kube/informer.ts';
import { LeaderElector } from '../../src/kube/leader.ts';
import {
  controlPlaneToolNames,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });
const namespace = 'kube-test';

function configMap(name: string, data: Record<string, string>): KubeObject {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace }, data };
}

/** The operator's Kubernetes plumbing against a real kube-apiserver: apply, list-watch, leader election. */
describeWithTools(controlPlaneToolNames, 'Kubernetes plumbing on a real API server', () => {
  let cluster: ControlPlane;
  let client: KubeClient;

  beforeAll(async () => {
    cluster = await startControlPlane();
    client = KubeClient.fromFile(cluster.kubeconfig);
    await cluster.kubectl(['create', 'namespace', namespace]);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('applies server-side under one field manager, keeping fields other managers own', async () => {
    const path = `/api/v1/namespaces/${namespace}/configmaps/applied`;
    await client.apply(path, configMap('applied', { ours: '1' }), 'berth');
    await cluster.kubectl(
      ['apply', '--server-side', '--field-manager', 'someone-else', '-f', '-'],
      {
        input: JSON.stringify(configMap('applied', { theirs: 'x' })),
      },
    );
    const updated = await client.apply<KubeObject & { data: Record<string, string> }>(
      path,
      configMap('applied', { ours: '2' }),
      'berth',
    );
    expect(updated.data).toEqual({ ours: '2', theirs: 'x' });
    // Applying the same intent again changes nothing: reconciles are idempotent.
    const again = await client.apply<KubeObject>(
      path,
      configMap('applied', { ours: '2' }),
      'berth',
    );
    expect(again.metadata.resourceVersion).toBe(updated.metadata.resourceVersion);
  });

  it('keeps a cache in step through adds, updates and deletes, and through an API server restart', async () => {
    const informer = new Informer<KubeObject & { data?: Record<string, string> }>(
      client,
      {
        path: `/api/v1/namespaces/${namespace}/configmaps`,
        labelSelector: 'berth.dev/test=informer',
        maxBackoffMillis: 1000,
      },
      logger,
    );
    const events: [ChangeType, string][] = [];
    informer.onChange((type, object) => events.push([type, object.metadata.name]));
    informer.start();
    try {
      await informer.synced;
      const labelled = (name: string, value: string) => ({
        ...configMap(name, { value }),
        metadata: { name, namespace, labels: { 'berth.dev/test': 'informer' } },
      });
      const path = (name: string) => `/api/v1/namespaces/${namespace}/configmaps/${name}`;
      await client.apply(path('one'), labelled('one', 'a'), 'test');
      await client.apply(path('one'), labelled('one', 'b'), 'test');
      await client.apply(path('two'), labelled('two', 'a'), 'test');
      await client.delete(path('two'));
      await waitFor(async () => events.length >= 4, 5000, 'watch events');
      expect(events).toEqual([
        ['added', 'one'],
        ['modified', 'one'],
        ['added', 'two'],
        ['deleted', 'two'],
      ]);
      expect(informer.get(`${namespace}/one`)?.data).toEqual({ value: 'b' });

      // A change this informer does not see (no label) moves the global resourceVersion past the
      // last one it saw; the restarted API server's watch cache starts after it, so resuming the
      // watch is answered 410 Gone and the informer must relist.
      await client.apply(path('unlabelled'), configMap('unlabelled', { value: 'x' }), 'test');
      await cluster.stopApiServer();
      await cluster.startApiServer();
      await client.apply(path('three'), labelled('three', 'after restart'), 'test');
      await waitFor(
        async () => informer.get(`${namespace}/three`) !== undefined,
        30_000,
        'the informer to reconnect',
      );
      expect(informer.stats.watches).toBeGreaterThan(1);
      expect(informer.stats.expired).toBeGreaterThanOrEqual(1);
      expect(informer.stats.lists).toBeGreaterThanOrEqual(2);
      expect(events.filter(([type, name]) => type === 'added' && name === 'three')).toHaveLength(1);
    } finally {
      informer.stop();
    }
  });

  it('elects one leader; a graceful stop hands over at once, a crash after the lease duration', async () => {
    const options = {
      namespace,
      name: 'berth-operator',
      leaseDurationSeconds: 2,
      renewDeadlineMillis: 1500,
      retryPeriodMillis: 200,
    };
    const leading: string[] = [];
    const candidate = (identity: string) => {
      const elector = new LeaderElector(client, { ...options, identity }, logger);
      void elector.run(async (signal) => {
        leading.push(identity);
        await new Promise((resolve) => signal.addEventListener('abort', resolve));
      });
      return elector;
    };
    const first = candidate('first');
    await waitFor(async () => first.isLeader, 10_000, 'a leader');
    const second = candidate('second');
    const third = candidate('third');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect([first.isLeader, second.isLeader, third.isLeader]).toEqual([true, false, false]);

    const released = Date.now();
    first.stop();
    await waitFor(async () => second.isLeader || third.isLeader, 5000, 'a new leader');
    expect(Date.now() - released).toBeLessThan(1500);

    const crashed = second.isLeader ? second : third;
    const survivor = crashed === second ? third : second;
    const crashedAt = Date.now();
    crashed.stop({ release: false });
    await waitFor(async () => survivor.isLeader, 10_000, 'takeover after a crash');
    const takeover = Date.now() - crashedAt;
    expect(takeover).toBeGreaterThanOrEqual(1000);
    expect(takeover).toBeLessThan(options.leaseDurationSeconds * 1000 + 1500);
    expect(new Set(leading).size).toBe(3);
    survivor.stop();
  });
});
