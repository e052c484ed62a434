import { createServer, type Server } from 'node:http';
import type { Logger } from '../observability/logger.ts';
import { Counter, Gauge, Histogram, MetricsRegistry } from '../observability/metrics.ts';
import type { KubeClient } from '../kube/client.ts';
import { Informer, type ChangeType } from '../kube/informer.ts';
import { LeaderElector } from '../kube/leader.ts';
import { WorkQueue } from '../kube/queue.ts';
import {
  RegistryController,
  type DeploymentObject,
  type RegistryObject,
} from './controllers/registry.ts';
import { EventRecorder } from './events.ts';
import { fieldManager } from './render/labels.ts';
import type { KubeObject } from '../kube/client.ts';

export interface OperatorOptions {
  readonly image: string;
  /** Namespace of the leader-election Lease. */
  readonly namespace: string;
  readonly identity: string;
  readonly leaderElection: boolean;
  readonly leaseDurationSeconds?: number;
  readonly metrics: { host: string; port: number } | undefined;
  readonly concurrency?: number;
}

/** Objects Berth renders carry this label; their informers watch only those. */
const managedSelector = `app.kubernetes.io/managed-by=${fieldManager}`;
const ownedCollections = [
  '/api/v1/configmaps',
  '/api/v1/secrets',
  '/api/v1/services',
  '/api/v1/serviceaccounts',
  '/api/v1/persistentvolumeclaims',
  '/apis/apps/v1/daemonsets',
];

export interface RunningOperator {
  readonly metricsAddress: string | undefined;
  stop(): Promise<void>;
}

/**
 * `berth operator`: watches Registries and everything rendered for them, and reconciles each
 * Registry key whenever anything about it changes. With leader election only the leader
 * reconciles; the others wait to take over.
 */
export async function startOperator(
  client: KubeClient,
  options: OperatorOptions,
  logger: Logger,
): Promise<RunningOperator> {
  const metrics = new MetricsRegistry();
  metrics.registerProcessMetrics();
  const reconciles = metrics.register(
    new Counter('berth_operator_reconciles_total', 'Reconciles by kind and result.', [
      'kind',
      'result',
    ]),
  );
  const durations = metrics.register(
    new Histogram(
      'berth_operator_reconcile_duration_seconds',
      'Reconcile latency.',
      ['kind'],
      [0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    ),
  );
  let leading = !options.leaderElection;
  metrics.register(
    new Gauge('berth_operator_leader', 'Whether this replica leads.', () => (leading ? 1 : 0)),
  );

  const events = new EventRecorder(client, 'berth-operator', logger);
  const registries = new Informer<RegistryObject>(
    client,
    { path: '/apis/berth.dev/v1alpha1/registries' },
    logger,
  );
  const deployments = new Informer<DeploymentObject>(
    client,
    { path: '/apis/apps/v1/deployments', labelSelector: managedSelector },
    logger,
  );
  const owned = ownedCollections.map(
    (path) => new Informer<KubeObject>(client, { path, labelSelector: managedSelector }, logger),
  );
  const controller = new RegistryController(
    client,
    { registries, deployments },
    events,
    { image: options.image },
    logger,
  );
  const queue = new WorkQueue(
    async (key) => {
      const started = process.hrtime.bigint();
      try {
        const result = await controller.reconcile(key);
        reconciles.inc({ kind: 'Registry', result: 'success' });
        return result;
      } catch (error) {
        reconciles.inc({ kind: 'Registry', result: 'error' });
        throw error;
      } finally {
        durations.observe({ kind: 'Registry' }, Number(process.hrtime.bigint() - started) / 1e9);
      }
    },
    {
      concurrency: options.concurrency ?? 4,
      onError: (key, error, retryInMillis) =>
        logger.warn({ err: error, registry: key, retryInMillis }, 'reconcile failed'),
    },
  );
  metrics.register(
    new Gauge('berth_operator_queue_depth', 'Keys waiting or being reconciled.', () => queue.depth),
  );

  // Caches fill on every replica (a new leader starts warm); only the leader queues work.
  registries.onChange((_type: ChangeType, object) => {
    if (leading) queue.add(`${object.metadata.namespace}/${object.metadata.name}`);
  });
  const enqueueOwner = (_type: ChangeType, object: KubeObject): void => {
    const instance = object.metadata.labels?.['app.kubernetes.io/instance'];
    if (leading && instance && object.metadata.namespace)
      queue.add(`${object.metadata.namespace}/${instance}`);
  };
  deployments.onChange(enqueueOwner);
  for (const informer of owned) informer.onChange(enqueueOwner);

  const server = options.metrics
    ? await serveMetrics(options.metrics, metrics, () => true)
    : undefined;
  const informers = [registries, deployments, ...owned];
  const elector = options.leaderElection
    ? new LeaderElector(
        client,
        {
          namespace: options.namespace,
          name: 'berth-operator',
          identity: options.identity,
          ...(options.leaseDurationSeconds
            ? {
                leaseDurationSeconds: options.leaseDurationSeconds,
                // Renew well within the lease, so a survivor notices a dead leader soon after it expires.
                renewDeadlineMillis: (options.leaseDurationSeconds * 1000 * 2) / 3,
                retryPeriodMillis: Math.min(2000, (options.leaseDurationSeconds * 1000) / 5),
              }
            : {}),
        },
        logger,
      )
    : undefined;

  for (const informer of informers) informer.start();
  const lead = async (signal: AbortSignal): Promise<void> => {
    await Promise.all(informers.map((informer) => informer.synced));
    leading = true;
    // Level-based: a new leader looks at every Registry once, whatever happened before.
    for (const registry of registries.list())
      queue.add(`${registry.metadata.namespace}/${registry.metadata.name}`);
    logger.info({ registries: registries.list().length }, 'caches synced; reconciling');
    await new Promise<void>((resolve) =>
      signal.addEventListener('abort', () => resolve(), { once: true }),
    );
    leading = false;
  };
  const stopSignal = new AbortController();
  const campaign = elector ? elector.run(lead) : lead(stopSignal.signal);
  void campaign;

  const address = server?.address();
  return {
    metricsAddress:
      address && typeof address === 'object' ? `${address.address}:${address.port}` : undefined,
    stop: async () => {
      elector?.stop();
      stopSignal.abort();
      for (const informer of informers) informer.stop();
      await queue.shutdown();
      await campaign;
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      logger.info('operator stopped');
    },
  };
}

async function serveMetrics(
  listen: { host: string; port: number },
  metrics: MetricsRegistry,
  healthy: () => boolean,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(metrics.render());
    } else if (req.url === '/healthz' || req.url === '/readyz') {
      res.writeHead(healthy() ? 200 : 503).end(healthy() ? 'ok\n' : 'not ready\n');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  return server;
}
