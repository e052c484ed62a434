import { createServer, type Server } from 'node:http';
import type { Logger } from '../observability/logger.ts';
import { Counter, Gauge, Histogram, MetricsRegistry } from '../observability/metrics.ts';
import type { KubeClient } from '../kube/client.ts';
import { Informer, type ChangeType } from '../kube/informer.ts';
import { LeaderElector } from '../kube/leader.ts';
import { WorkQueue } from '../kube/queue.ts';
import {
  RegistryController,
  type DaemonSetObject,
  type DeploymentObject,
  type RegistryObject,
} from './controllers/registry.ts';
import {
  PullSecretController,
  type SecretObject,
  type ServiceAccountObject,
} from './controllers/pull-secrets.ts';
import { RepositoryController, type RepositoryObject } from './controllers/repository.ts';
import { CredentialSigner, SigningKeysMissingError } from './credentials.ts';
import { EventRecorder } from './events.ts';
import { GrantTracker } from './grant-tracker.ts';
import { fieldManager, registryObjectNames } from './render/labels.ts';
import { isPullSecretName } from './render/pull-secret.ts';
import { OperatorReadiness } from './readiness.ts';
import { registryAccessBinding, renderRegistryAccessBinding } from './render/registry-access.ts';
import { isConflict, type KubeObject } from '../kube/client.ts';
import { registerOperatorMetrics } from './metrics.ts';
import { nodePortContenders } from './node-ports.ts';
import type { QueueResult } from '../kube/queue.ts';

/** What the work queue holds: one key per object to reconcile, prefixed with its kind. */
type WorkKind = 'Registry' | 'Namespace' | 'Repository' | 'RegistryAccess';

function workKey(kind: WorkKind, name: string): string {
  return `${kind}:${name}`;
}

function parseWorkKey(key: string): { kind: WorkKind; name: string } {
  const separator = key.indexOf(':');
  return { kind: key.slice(0, separator) as WorkKind, name: key.slice(separator + 1) };
}

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

  const grants = new GrantTracker(registries, repositories, namespaces, logger);
  const signer = new CredentialSigner((registry) => {
    const keys = secrets.get(
      `${registry.metadata.namespace}/${registryObjectNames(registry.metadata.name).keys}`,
    );
    const content = keys?.data?.['signing-keys.json'];
    return content ? Buffer.from(content, 'base64').toString('utf8') : undefined;
  });
  const registryController = new RegistryController(
    client,
    {
      registries,
      deployments,
      daemonSets,
      // Berth-managed objects only (label-selected caches): a user's own Secret is never removed.
      managed: (kind, namespace, name) =>
        (kind === 'DaemonSet' ? daemonSets : kind === 'Secret' ? secrets : undefined)?.get(
          `${namespace}/${name}`,
        ) !== undefined,
    },
    events,
    {
      image: options.image,
      nodePortHolder: (key) => grants.nodePortConflicts.get(key),
      nodePortContenders: (key) => nodePortContenders(grants.nodePortConflicts, key),
    },
    logger,
  );
  const pullSecretController = new PullSecretController(
    client,
    {
      namespaces,
      secrets,
      serviceAccounts,
      registries: () => grants.registries,
      grants: () => grants.table,
    },
    signer,
    logger,
  );
  const repositoryController = new RepositoryController(
    client,
    {
      repositories,
      grants: () => grants.table,
      // A ready pod is what a pull needs; the Registry's own Ready also waits for node proxies.
      availability: (key) => {
        const registry = registries.get(key);
        if (!registry) return undefined;
        const ready = registry.status?.conditions?.find((c) => c.type === 'Ready');
        return {
          available: (registry.status?.readyReplicas ?? 0) > 0,
          message: ready?.message ?? 'no status yet',
        };
      },
    },
    events,
    logger,
  );
  const reconcilers: Record<WorkKind, (name: string) => Promise<QueueResult>> = {
    Registry: (key) => registryController.reconcile(key),
    Namespace: (name) => pullSecretController.reconcile(name),
    Repository: (key) => repositoryController.reconcile(key),
    RegistryAccess: async () => {
      const binding = renderRegistryAccessBinding(
        [...grants.registries.values()].map((registry) => registry.metadata),
      );
      await client.apply(
        `/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/${registryAccessBinding}`,
        binding,
        fieldManager,
      );
      return {};
    },
  };
  const queue = new WorkQueue(
    async (item) => {
      // A replica that lost the Lease still has timers (rotations, retries): it writes nothing.
      if (!leading) return {};
      const { kind, name } = parseWorkKey(item);
      const started = process.hrtime.bigint();
      try {
        const result = await reconcilers[kind](name);
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
      onError: (item, error, retryInMillis) => {
        const { kind, name } = parseWorkKey(item);
        if (isRace(error))
          logger.debug(
            { err: error, kind, object: name, retryInMillis },
            'reconcile raced; retrying',
          );
        else logger.error({ err: error, kind, object: name, retryInMillis }, 'reconcile failed');
      },
    },
  );
  metrics.register(
    new Gauge('berth_operator_queue_depth', 'Keys waiting or being reconciled.', () => queue.depth),
  );
  const enqueue = (kind: WorkKind, name: string): void => {
    if (leading) queue.add(workKey(kind, name));
  };

  // Caches fill on every replica (a new leader starts warm); only the leader queues work.
  registries.onChange((_type: ChangeType, object) => {
    const key = `${object.metadata.namespace}/${object.metadata.name}`;
    enqueue('Registry', key);
    grants.schedule();
    // Its Repositories' status says whether it has a ready pod.
    for (const [repository, state] of grants.table.repositories)
      if (state.registries.some((served) => `${served.namespace}/${served.name}` === key))
        enqueue('Repository', repository);
  });
  repositories.onChange(() => grants.schedule());
  namespaces.onChange(() => grants.schedule());
  grants.onChange((change) => {
    if (!leading) return;
    for (const registry of change.registries) enqueue('Registry', registry);
    for (const namespace of change.namespaces) enqueue('Namespace', namespace);
    for (const repository of change.repositories) enqueue('Repository', repository);
    if (change.registryAccess) enqueue('RegistryAccess', registryAccessBinding);
  });
  serviceAccounts.onChange((type: ChangeType, account) => {
    const namespace = account.metadata.namespace;
    if (type === 'deleted' || !namespace) return;
    // Only namespaces with a pull Secret, or a ServiceAccount carrying a stale Berth entry.
    if (
      grants.table.secrets.has(namespace) ||
      account.imagePullSecrets?.some((entry) => isPullSecretName(entry.name))
    )
      enqueue('Namespace', namespace);
  });
  const enqueueOwner = (_type: ChangeType, object: KubeObject): void => {
    const instance = object.metadata.labels?.['app.kubernetes.io/instance'];
    if (instance && object.metadata.namespace)
      enqueue('Registry', `${object.metadata.namespace}/${instance}`);
  };
  secrets.onChange((type: ChangeType, secret) => {
    if (secret.metadata.labels?.['app.kubernetes.io/component'] === 'pull-secret') {
      if (secret.metadata.namespace) enqueue('Namespace', secret.metadata.namespace);
    } else {
      enqueueOwner(type, secret);
      // New signing keys: every pull Secret signed by the old ones must be issued again.
      const instance = secret.metadata.labels?.['app.kubernetes.io/instance'];
      if (instance && secret.metadata.name === registryObjectNames(instance).keys) {
        const key = `${secret.metadata.namespace}/${instance}`;
        for (const [namespace, keys] of grants.table.secrets)
          if (keys.has(key)) enqueue('Namespace', namespace);
      }
    }
  });
  deployments.onChange(enqueueOwner);
  daemonSets.onChange(enqueueOwner);
  for (const informer of owned) informer.onChange(enqueueOwner);

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
    ? await serveMetrics(options.metrics, metrics, readiness)
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
    for (const registry of registries.list())
      enqueue('Registry', `${registry.metadata.namespace}/${registry.metadata.name}`);
    for (const namespace of namespaces.list()) enqueue('Namespace', namespace.metadata.name);
    for (const repository of repositories.list())
      enqueue('Repository', `${repository.metadata.namespace}/${repository.metadata.name}`);
    enqueue('RegistryAccess', registryAccessBinding);
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

  const address = server?.address();
  return {
    metricsAddress:
      address && typeof address === 'object' ? `${address.address}:${address.port}` : undefined,
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

async function serveMetrics(
  listen: { host: string; port: number },
  metrics: MetricsRegistry,
  readiness: OperatorReadiness,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(metrics.render());
    } else if (req.url === '/healthz') {
      // Liveness: the process serves. Readiness says whether it can do its work.
      res.writeHead(200).end('ok\n');
    } else if (req.url === '/readyz') {
      const state = readiness.current();
      res
        .writeHead(state.ready ? 200 : 503, { 'Content-Type': 'application/json' })
        .end(JSON.stringify(state));
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
