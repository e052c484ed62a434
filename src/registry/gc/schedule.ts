import type { GcConfig } from '../../config/registry.ts';
import type { Logger } from '../../observability/logger.ts';
import { Counter, Gauge, Histogram, type MetricsRegistry } from '../../observability/metrics.ts';
import type { RegistryServices } from '../services.ts';
import type { RetentionSource } from './collector.ts';
import { runCollection } from './run.ts';

export interface CollectionSchedule {
  /** Stops scheduling and waits for a collection in progress to finish. */
  stop(): Promise<void>;
}

/**
 * Collects every `interval` (measured from the end of the previous run, so runs never
 * overlap in this process), only inside `window` when one is set. Every run is counted by
 * result: `success`, `skipped` (another process holds the lease) or `failure`. `policy` gives
 * the live policy at the start of each run, for retention; none keeps every tag.
 */
export function scheduleCollection(
  services: RegistryServices,
  config: GcConfig,
  metrics: MetricsRegistry,
  logger: Logger,
  policy: () => RetentionSource | undefined = () => undefined,
): CollectionSchedule {
  const runs = metrics.register(
    new Counter('berth_registry_gc_runs_total', 'Garbage collections by result.', ['result']),
  );
  const freedBytes = metrics.register(
    new Counter(
      'berth_registry_gc_freed_bytes_total',
      'Bytes of blobs garbage collection removed.',
    ),
  );
  const freedObjects = metrics.register(
    new Counter(
      'berth_registry_gc_freed_objects_total',
      'What garbage collection removed: blobs, manifests (revisions), layer links and tags (retention).',
      ['kind'],
    ),
  );
  const duration = metrics.register(
    new Histogram(
      'berth_registry_gc_duration_seconds',
      'Duration of garbage collections that ran.',
      [],
      [0.1, 0.5, 1, 5, 15, 60, 300, 1800],
    ),
  );
  let lastSuccess = 0;
  metrics.register(
    new Gauge(
      'berth_registry_gc_last_success_timestamp_seconds',
      'When the last successful garbage collection finished, since the epoch; 0 before one.',
      () => lastSuccess,
    ),
  );

  const collect = async (): Promise<void> => {
    const started = Date.now();
    try {
      const outcome = await runCollection(services.driver, services.manifests, config, {
        dryRun: false,
        policy: policy(),
      });
      runs.inc({ result: outcome.result });
      if (outcome.result === 'skipped') {
        logger.debug('garbage collection skipped: another process holds the lease');
        return;
      }
      const { report } = outcome;
      duration.observe({}, (Date.now() - started) / 1000);
      freedBytes.inc({}, report.bytesFreed);
      freedObjects.inc({ kind: 'blob' }, report.removedBlobs.length);
      freedObjects.inc({ kind: 'manifest' }, report.removedManifests.length);
      freedObjects.inc({ kind: 'link' }, report.removedLinks.length);
      freedObjects.inc({ kind: 'tag' }, report.removedTags.length);
      lastSuccess = Date.now() / 1000;
      logger.info(
        {
          tags: report.removedTags.length,
          blobs: report.removedBlobs.length,
          manifests: report.removedManifests.length,
          links: report.removedLinks.length,
          bytes: report.bytesFreed,
          restored: report.restored,
          durationMs: Date.now() - started,
        },
        'garbage collection finished',
      );
    } catch (error) {
      runs.inc({ result: 'failure' });
      duration.observe({}, (Date.now() - started) / 1000);
      logger.error({ err: error }, 'garbage collection failed');
    }
  };

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const next = (): void => {
    timer = setTimeout(() => {
      if (stopped) return;
      running = (insideWindow(config.window, new Date()) ? collect() : Promise.resolve()).then(
        () => {
          if (!stopped) next();
        },
      );
    }, config.interval);
    timer.unref();
  };
  next();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/** Whether `now` (UTC) is inside `HH:MM-HH:MM`; a window ending before it starts spans midnight. */
export function insideWindow(window: string | undefined, now: Date): boolean {
  if (window === undefined) return true;
  const [start, end] = window.split('-').map((time) => {
    const [hours, minutes] = time.split(':').map(Number);
    return (hours as number) * 60 + (minutes as number);
  }) as [number, number];
  const minute = now.getUTCHours() * 60 + now.getUTCMinutes();
  return start <= end ? minute >= start && minute < end : minute >= start || minute < end;
}
