import type { Logger } from '../../observability/logger.ts';
import type { PolicySource, RepositoryUsage } from '../../policy/source.ts';
import { forecastRetention } from '../gc/retention-forecast.ts';
import type { CollectionSettings } from '../gc/retention-forecast.ts';
import type { ManifestService } from './manifests.ts';
import type { StorageQuotas } from './quotas.ts';

/** The registry's scheduled garbage collection: what its usage reports forecast. */
export interface ScheduledCollection {
  readonly manifests: ManifestService;
  readonly settings: CollectionSettings;
}

/** How often usage is measured; a report is written only when it changed. */
export const usageReportIntervalMillis = 30_000;

export interface UsageReports {
  /** Stops measuring and waits for a round in progress. */
  stop(): Promise<void>;
}

/**
 * Measures every accepted Repository's usage (as its quota counts it) and publishes it through
 * the policy source (Kubernetes mode: the Repository's status.usage), on a timer. The registry
 * reports it because it alone reads storage: the operator never does. Returns undefined when
 * the source has nowhere to publish.
 *
 * While the registry collects garbage (`collection`), a Repository with retention also
 * gets the forecast of the next collection (`forecastRetention`, a dry run of the collector's
 * own plan), which reads its repositories' tags and manifests each round. A report is written
 * only when something but the forecast's time changed.
 */
export function reportUsage(
  quotas: StorageQuotas,
  source: PolicySource,
  logger: Logger,
  collection: ScheduledCollection | undefined,
  intervalMillis = usageReportIntervalMillis,
): UsageReports | undefined {
  const publish = source.reportUsage?.bind(source);
  if (!publish) return undefined;
  const reported = new Map<string, string>();
  // A failure is logged as a warning once per Repository until a report succeeds again: a
  // registry without the RBAC to write status would otherwise warn every round.
  const failing = new Set<string>();
  const round = async (): Promise<void> => {
    for (const grant of source.current().grants()) {
      try {
        const usage = await measureWithForecast(quotas, grant, collection);
        const fingerprint = JSON.stringify({
          ...usage,
          retention: usage.retention && { ...usage.retention, evaluatedAt: undefined },
        });
        if (reported.get(grant.source) === fingerprint) continue;
        await publish(grant.source, usage);
        reported.set(grant.source, fingerprint);
        failing.delete(grant.source);
      } catch (error) {
        const level = failing.has(grant.source) ? 'debug' : 'warn';
        failing.add(grant.source);
        logger[level]({ err: error, repository: grant.source }, 'repository usage not reported');
      }
    }
  };
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const next = (delay: number): void => {
    timer = setTimeout(() => {
      running = round().then(() => {
        if (!stopped) next(intervalMillis);
      });
    }, delay);
    timer.unref();
  };
  next(1000);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/** One Repository's usage, with the retention forecast when it has retention and GC runs. */
export async function measureWithForecast(
  quotas: StorageQuotas,
  grant: { readonly source: string; readonly path: string; readonly quota: string | undefined },
  collection: ScheduledCollection | undefined,
): Promise<RepositoryUsage> {
  const measured = await quotas.measure({ source: grant.source, path: grant.path });
  const usage = { bytes: measured.bytes, size: readableSize(measured.bytes), quota: grant.quota };
  const policy = quotas.policy();
  const governed = measured.repositories;
  const retained = governed.some((repository) => policy?.retentionFor(repository));
  if (!policy || !collection || !retained) return usage;
  const retention = await forecastRetention(
    quotas.driver,
    collection.manifests,
    collection.settings,
    policy,
    measured,
  );
  return { ...usage, retention };
}

/** Bytes in binary units with one decimal where it says something: `512`, `1.5Ki`, `12Mi`. */
export function readableSize(bytes: number): string {
  const units = ['Ki', 'Mi', 'Gi', 'Ti', 'Pi'];
  if (bytes < 1024) return String(bytes);
  let value = bytes;
  let unit = '';
  for (const next of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  const rounded = Math.round(value * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1)}${unit}`;
}
