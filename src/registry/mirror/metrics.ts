import { Counter, type MetricsRegistry } from '../../observability/metrics.ts';
import type { UpstreamProblem } from './upstream-error.ts';

export type MirrorOutcome = 'hit' | 'miss' | 'stale' | 'uncached';

/** What mirrors count: answers from storage or upstream, upstream failures, bytes saved. */
export class MirrorMetrics {
  private readonly requests: Counter;
  private readonly errors: Counter;
  private readonly cachedBytes: Counter;

  constructor(registry: MetricsRegistry) {
    this.requests = registry.register(
      new Counter(
        'berth_registry_mirror_requests_total',
        'Mirrored manifest and blob reads by mirror, kind and outcome (hit: from storage; miss: fetched upstream; stale: from storage because upstream failed; uncached: fetched upstream and served, but a quota or storage limit refused to keep it).',
        ['mirror', 'kind', 'outcome'],
      ),
    );
    this.errors = registry.register(
      new Counter(
        'berth_registry_mirror_upstream_errors_total',
        'Upstream requests of mirrors that failed, by mirror and problem.',
        ['mirror', 'problem'],
      ),
    );
    this.cachedBytes = registry.register(
      new Counter(
        'berth_registry_mirror_cached_bytes_total',
        'Blob bytes of mirrored repositories served from storage instead of upstream.',
        ['mirror'],
      ),
    );
  }

  outcome(mirror: string, kind: 'manifest' | 'blob', outcome: MirrorOutcome): void {
    this.requests.inc({ mirror, kind, outcome });
  }

  upstreamError(mirror: string, problem: UpstreamProblem): void {
    this.errors.inc({ mirror, problem });
  }

  servedFromCache(mirror: string, bytes: number): void {
    this.cachedBytes.inc({ mirror }, bytes);
  }
}
