import type { Logger } from '../observability/logger.ts';
import { Counter, Gauge, Histogram, MetricsRegistry } from '../observability/metrics.ts';
import { formatAddress, serveProbes } from '../observability/probes.ts';
import type { KubeClient } from '../kube/client.ts';
import { Informer } from '../kube/informer.ts';
import { LeaderElector } from '../kube/leader.ts';
import { WorkQueue } from '../kube/queue.ts';
import type { QueueResult } from '../kube/queue.ts';
import type { RegistryObject } from './api/registry-resource.ts';
import type { Controller, WorkKey, WorkKind } from './controller.ts';
import { keyObjectName, workKeyId } from './controller.ts';
import { PullSecretController } from './controllers/pull-secrets.ts';
import { RegistryAccessController } from './controllers/registry-access.ts';
import { RegistryController } from './controllers/registry.ts';
import { RepositoryController, type RepositoryObject } from './controllers/repository.ts';
import { CredentialSigner, SigningKeysMissingError } from './credentials.ts';
import { EventRecorder } from './events.ts';
import { GrantTracker } from './grant-tracker.ts';
import type {
  DaemonSetObject,
  DeploymentObject,
  SecretObject,
  ServiceAccountObject,
} from './kube-objects.ts';
import { fieldManager, registryObjectNames } from './render/labels.ts';
import { OperatorReadiness } from './readiness.ts';
import { isConflict, type KubeObject } from '../kube/client.ts';
import { registerOperatorMetrics } from './metrics.ts';

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
  '/api/v1/services',
  '/api/v1/persistentvolumeclaims',
  '/apis/policy/v1/poddisruptionbudgets',
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
  const repositories = new Informer<RepositoryObject>(
    client,
    { path: '/apis/berth.dev/v1alpha1/repositories' },
    logger,
  );
  const namespaces = new Informer<KubeObject>(client, { path: '/api/v1/namespaces' }, logger);
  // Every ServiceAccount: a new one in an allowed namespace needs Berth's entry at once.
  const serviceAccounts = new Informer<ServiceAccountObject>(
    client,
    { path: '/api/v1/serviceaccounts' },
    logger,
  );
  const secrets = new Informer<SecretObject>(
    client,
    { path: '/api/v1/secrets', labelSelector: managedSelector },
    logger,
  );
  const deployments = new Informer<DeploymentObject>(
    client,
    { path: '/apis/apps/v1/deployments', labelSelector: managedSelector },
    logger,
  );
  const daemonSets = new Informer<DaemonSetObject>(
    client,
    { path: '/apis/apps/v1/daemonsets', labelSelector: managedSelector },
    logger,
  );
  const owned = ownedCollections.map(
    (path) => new Informer<KubeObject>(client, { path, labelSelector: managedSelector }, logger),
  );

  const grants = new GrantTracker(registries, repositories, namespaces, logger, deployments);
  const signer = new CredentialSigner((registry) => {
    const keys = secrets.get(
      `${registry.metadata.namespace}/${registryObjectNames(registry.metadata.name).keys}`,
    );
    const content = keys?.data?.['signing-keys.json'];
    return content ? Buffer.from(content, 'base64').toString('utf8') : undefined;
  });
  const controllers: { readonly [K in WorkKind]: Controller<K> } = {
    Registry: new RegistryController(
      client,
      { registries, deployments, daemonSets, secrets, owned, grants },
      events,
      { image: options.image },
      logger,
    ),
    Namespace: new PullSecretController(
      client,
      { namespaces, secrets, serviceAccounts, grants },
      signer,
      logger,
    ),
    Repository: new RepositoryController(
      client,
      { repositories, registries, grants },
      events,
      logger,
    ),
    RegistryAccess: new RegistryAccessController(client, grants),
  };
  const queue = new WorkQueue<WorkKey>(
    async (key) => {
      // A replica that lost the Lease still has timers (rotations, retries): it writes nothing.
      if (!leading) return {};
      const { kind } = key;
      const started = process.hrtime.bigint();
      try {
        const result = await reconcile(controllers, key);
        reconciles.inc({ kind, result: 'success' });
        if (result.requeueAfterMillis !== undefined) requeues.inc({ kind, reason: 'scheduled' });
        return result;
      } catch (error) {
        const race = isRace(error);
        reconciles.inc({ kind, result: race ? 'conflict' : 'error' });
        requeues.inc({ kind, reason: race ? 'conflict' : 'error' });
        throw error;
      } finally {
        durations.observe({ kind }, Number(process.hrtime.bigint() - started) / 1e9);
      }
    },
    {
      concurrency: options.concurrency ?? 8,
      identify: workKeyId,
      onError: (key, error, retryInMillis) => {
        const context = { err: error, kind: key.kind, object: keyObjectName(key), retryInMillis };
        if (isRace(error)) logger.debug(context, 'reconcile raced; retrying');
        else logger.error(context, 'reconcile failed');
      },
    },
  );
  metrics.register(
    new Gauge('berth_operator_queue_depth', 'Keys waiting or being reconciled.', () => queue.depth),
  );
  // Caches fill on every replica (a new leader starts warm); only the leader queues work.
  const enqueue = (key: WorkKey): void => {
    if (leading) queue.add(key);
  };
  const all = Object.values(controllers);
  for (const controller of all) for (const source of controller.watches) source.subscribe(enqueue);

  const informers = [
    registries,
    repositories,
    namespaces,
    serviceAccounts,
    secrets,
    deployments,
    daemonSets,
    ...owned,
  ];
  const requeues = registerOperatorMetrics(metrics, { client, informers, registries, secrets });
  const readiness = new OperatorReadiness(client, informers, logger);
  readiness.start();
  const server = options.metrics
    ? await serveProbes(options.metrics, { metrics, readiness: () => readiness.current() })
    : undefined;
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
    // Level-based: a new leader looks at everything once, whatever happened before, so grants
    // that ended while no operator ran are revoked now.
    grants.recompute();
    for (const controller of all) for (const key of controller.keys()) enqueue(key);
    logger.info(
      { registries: registries.list().length, repositories: repositories.list().length },
      'caches synced; reconciling',
    );
    await new Promise<void>((resolve) =>
      signal.addEventListener('abort', () => resolve(), { once: true }),
    );
    leading = false;
  };
  const stopSignal = new AbortController();
  const campaign = elector ? elector.run(lead) : lead(stopSignal.signal);
  void campaign;

  return {
    metricsAddress: server ? formatAddress(server.address()) : undefined,
    stop: async () => {
      elector?.stop();
      readiness.stop();
      grants.stop();
      stopSignal.abort();
      for (const informer of informers) informer.stop();
      await queue.shutdown();
      await campaign;
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      logger.info('operator stopped');
    },
  };
}

/** Hands a key to the controller of its kind. */
function reconcile(
  controllers: { readonly [K in WorkKind]: Controller<K> },
  key: WorkKey,
): Promise<QueueResult> {
  switch (key.kind) {
    case 'Registry':
      return controllers.Registry.reconcile(key);
    case 'Repository':
      return controllers.Repository.reconcile(key);
    case 'Namespace':
      return controllers.Namespace.reconcile(key);
    case 'RegistryAccess':
      return controllers.RegistryAccess.reconcile(key);
  }
}

/**
 * Whether a reconcile failed only because it raced another writer (409: the object changed since
 * it was read) or ran before the Registry's keys existed: normal, retried with backoff, and not
 * an error.
 */
function isRace(error: unknown): boolean {
  if (error instanceof AggregateError) return error.errors.length > 0 && error.errors.every(isRace);
  if (isConflict(error) || error instanceof SigningKeysMissingError) return true;
  return error instanceof Error && error.cause !== undefined && isRace(error.cause);
}
