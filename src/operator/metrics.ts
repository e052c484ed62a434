import type { KubeClient } from '../kube/client.ts';
import type { Informer } from '../kube/informer.ts';
import { X509Certificate } from 'node:crypto';
import {
  CollectedCounter,
  CollectedGauge,
  Counter,
  type MetricsRegistry,
} from '../observability/metrics.ts';
import type { RegistryObject } from './api/registry-resource.ts';
import type { SecretObject } from './kube-objects.ts';

export interface OperatorMetricSources {
  readonly client: KubeClient;
  readonly informers: readonly {
    readonly path: string;
    readonly stats: { readonly errors: number };
  }[];
  readonly registries: Informer<RegistryObject>;
  readonly secrets: Informer<SecretObject>;
}

const pullSecretComponent = 'pull-secret';

/**
 * The operator's own metrics besides reconciles: failed API requests and watches, requeues,
 * each Registry's Ready and Degraded conditions, the pull Secrets it manages and the earliest
 * expiry among their credentials (alert on it, as on cert-manager's certificate expiry). Returns
 * the requeue counter, which the work queue's handler increments.
 */
export function registerOperatorMetrics(
  metrics: MetricsRegistry,
  sources: OperatorMetricSources,
): Counter {
  metrics.register(
    new CollectedCounter(
      'berth_operator_api_errors_total',
      'API requests and watches that failed, by HTTP status (network: no answer).',
      ['code'],
      () => [...sources.client.errors].map(([code, value]) => ({ labels: { code }, value })),
    ),
  );
  metrics.register(
    new CollectedCounter(
      'berth_operator_watch_errors_total',
      'Watches that failed and were reconnected or relisted, by resource path.',
      ['resource'],
      () =>
        sources.informers.map((informer) => ({
          labels: { resource: informer.path },
          value: informer.stats.errors,
        })),
    ),
  );
  const requeues = metrics.register(
    new Counter(
      'berth_operator_requeues_total',
      'Keys queued again: after an error (with backoff) or at a time a reconcile asked for.',
      ['kind', 'reason'],
    ),
  );
  const conditionGauge = (type: 'Ready' | 'Degraded') =>
    new CollectedGauge(
      `berth_operator_registry_${type.toLowerCase()}`,
      `Whether each Registry's ${type} condition is True (1) or not (0).`,
      ['namespace', 'name'],
      () =>
        sources.registries.list().map((registry) => ({
          labels: { namespace: registry.metadata.namespace ?? '', name: registry.metadata.name },
          value:
            registry.status?.conditions?.find((c) => c.type === type)?.status === 'True' ? 1 : 0,
        })),
    );
  metrics.register(conditionGauge('Ready'));
  metrics.register(conditionGauge('Degraded'));
  const pullSecrets = () =>
    sources.secrets
      .list()
      .filter(
        (secret) => secret.metadata.labels?.['app.kubernetes.io/component'] === pullSecretComponent,
      );
  metrics.register(
    new CollectedGauge(
      'berth_operator_pull_secrets',
      'Pull Secrets the operator manages.',
      [],
      () => [{ labels: {}, value: pullSecrets().length }],
    ),
  );
  metrics.register(
    new CollectedGauge(
      'berth_operator_pull_secret_expiry_earliest_timestamp_seconds',
      'When the first managed pull-secret credential expires, in seconds since the epoch; absent while there is none.',
      [],
      () => {
        const expiries = pullSecrets()
          .map((secret) =>
            Date.parse(secret.metadata.annotations?.['berth.dev/credential-expires-at'] ?? ''),
          )
          .filter((time) => Number.isFinite(time));
        return expiries.length === 0 ? [] : [{ labels: {}, value: Math.min(...expiries) / 1000 }];
      },
    ),
  );
  const notAfter = new Map<string, { version: string | undefined; seconds: number }>();
  metrics.register(
    new CollectedGauge(
      'berth_operator_certificate_expiry_timestamp_seconds',
      'When each certificate in a Secret the operator manages expires (notAfter), in seconds since the epoch, by Secret and key (tls.crt, ca.crt).',
      ['namespace', 'secret', 'key'],
      () => certificateExpiries(sources.secrets.list(), notAfter),
    ),
  );
  return requeues;
}

const certificateKeys = ['tls.crt', 'ca.crt'] as const;

/**
 * The notAfter of every certificate the managed Secrets hold (Berth's CA and serving
 * certificates), parsed again only when a Secret's resourceVersion changed.
 */
function certificateExpiries(
  secrets: readonly SecretObject[],
  cache: Map<string, { version: string | undefined; seconds: number }>,
): { labels: Record<string, string>; value: number }[] {
  const samples: { labels: Record<string, string>; value: number }[] = [];
  const seen = new Set<string>();
  for (const secret of secrets) {
    for (const key of certificateKeys) {
      const pem = secret.data?.[key];
      if (pem === undefined) continue;
      const id = `${secret.metadata.namespace ?? ''}/${secret.metadata.name}/${key}`;
      seen.add(id);
      let known = cache.get(id);
      if (!known || known.version !== secret.metadata.resourceVersion) {
        try {
          const certificate = new X509Certificate(Buffer.from(pem, 'base64'));
          known = {
            version: secret.metadata.resourceVersion,
            seconds: Date.parse(certificate.validTo) / 1000,
          };
          cache.set(id, known);
        } catch {
          cache.delete(id);
          continue;
        }
      }
      samples.push({
        labels: { namespace: secret.metadata.namespace ?? '', secret: secret.metadata.name, key },
        value: known.seconds,
      });
    }
  }
  // Deleted Secrets are forgotten, so the cache stays as large as what is managed.
  for (const id of cache.keys()) if (!seen.has(id)) cache.delete(id);
  return samples;
}
