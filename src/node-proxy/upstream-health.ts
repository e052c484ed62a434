import type { Logger } from '../observability/logger.ts';
import type { Upstream } from './upstream.ts';

export interface HealthTiming {
  /** Pause between the end of one check and the start of the next. */
  readonly intervalMillis: number;
  /** Longest a check waits for the registry's answer, connecting included. */
  readonly timeoutMillis: number;
}

export interface UpstreamState {
  readonly up: boolean;
  /** Why not, in words for a person reading a probe's answer. */
  readonly reason: string;
}

/**
 * Whether the registry answers, checked in the background on a fixed rhythm, so readiness
 * probes read the last result instead of each sending a request upstream. Until the first check
 * has answered the registry counts as down: a proxy that cannot reach it must not take traffic.
 */
export class UpstreamHealth {
  private readonly upstream: Upstream;
  private readonly timing: HealthTiming;
  private readonly logger: Logger;
  private current: UpstreamState | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(upstream: Upstream, timing: HealthTiming, logger: Logger) {
    this.upstream = upstream;
    this.timing = timing;
    this.logger = logger;
  }

  get state(): UpstreamState {
    return this.current ?? { up: false, reason: 'the registry has not been checked yet' };
  }

  /** Starts checking; the first check runs at once. */
  start(): void {
    void this.check();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async check(): Promise<void> {
    const next = await this.upstream.check(this.timing.timeoutMillis).then(
      (status): UpstreamState =>
        // 401 is a registry with auth on asking for a token: it serves.
        status === 200 || status === 401
          ? { up: true, reason: 'the registry answers' }
          : { up: false, reason: `the registry answered GET /v2/ with ${status}` },
      (error: unknown): UpstreamState => ({
        up: false,
        reason: `the registry cannot be reached: ${(error as Error).message}`,
      }),
    );
    if (this.stopped) return;
    if (next.up !== this.current?.up) {
      if (next.up) this.logger.info('registry reachable');
      else this.logger.warn({ reason: next.reason }, 'registry unreachable');
    }
    this.current = next;
    this.timer = setTimeout(() => void this.check(), this.timing.intervalMillis);
  }
}
