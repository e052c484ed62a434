import type { KubeClient } from '../kube/client.ts';
import type { Informer } from '../kube/informer.ts';
import { Counter, type MetricsRegistry } from '../observability/metrics.ts';
import type { RegistryObject } from './api/registry-resource.ts';
import type { SecretObject } from './kube-objects.ts';

type Sample = { readonly labels: Readonly<Record<string, string>>; readonly value: number };

/**
 * A metric whose samples are read when scraped, each with its own labels: a count something
 * else keeps (`counter`), or a state read from the caches (`gauge`).
 */
class ScrapedMetric {
  private readonly name: string;
  private readonly help: string;
  private readonly type: 'counter' | 'gauge';
  private readonly read: () => Iterable<Sample>;

  constructor(name: string, help: string, type: 'counter' | 'gauge', read: () => Iterable<Sample>) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.read = read;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`];
    for (const { labels, value } of this.read()) {
      const pairs = Object.entries(labels).map(
        ([key, text]) =>
          `${key}="${text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`,
      );
      lines.push(`${this.name}${pairs.length > 0 ? `{${pairs.join(',')}}` : ''} ${value}`);
    }
    return lines.join('\n');
  }
}

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
    new ScrapedMetric(
      'berth_operator_api_errors_total',
      'API requests and watches that failed, by HTTP status (network: no answer).',
      'counter',
      () => [...sources.client.errors].map(([code, value]) => ({ labels: { code }, value })),
    ),
  );
  metrics.register(
    new ScrapedMetric(
      'berth_operator_watch_errors_total',
      'Watches that failed and were reconnected or relisted, by resource path.',
      'counter',
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
    new ScrapedMetric(
      `berth_operator_registry_${type.toLowerCase()}`,
      `Whether each Registry's ${type} condition is True (1) or not (0).`,
      'gauge',
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
    new ScrapedMetric(
      'berth_operator_pull_secrets',
      'Pull Secrets the operator manages.',
      'gauge',
      () => [{ labels: {}, value: pullSecrets().length }],
    ),
  );
  metrics.register(
    new ScrapedMetric(
      'berth_operator_pull_secret_expiry_earliest_timestamp_seconds',
      'When the first managed pull-secret credential expires, in seconds since the epoch; absent while there is none.',
      'gauge',
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
  return requeues;
}
