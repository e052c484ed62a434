import type { Logger } from '../observability/logger.ts';
import {
  StorageUnavailableError,
  type StorageDriver,
  type StorageUnavailableReason,
} from './storage/driver.ts';

/** What `/readyz` answers: ready, or why not, in words an operator can act on. */
export type ReadinessState =
  | { readonly ready: true }
  | {
      readonly ready: false;
      readonly reason: 'ShuttingDown' | StorageUnavailableReason;
      readonly message: string;
    };

/** How often storage is probed; the readiness probe the operator renders runs every 5 s too. */
const probeIntervalMillis = 5_000;

/**
 * Storage failures that leave the registry ready. Full storage still serves every pull and any
 * push that fits; taking the registry out of its Service would stop the pulls too. Pushes that
 * do not fit get 507, and the condition is logged when it starts and ends.
 */
const readyDespite: ReadonlySet<StorageUnavailableReason> = new Set(['StorageFull']);

/**
 * The registry's one source of readiness: not ready once shutdown has begun, nor while storage
 * fails its probe (unless it is only full). The probe runs at start and then every few seconds,
 * never per request, so a volume the registry cannot write is reported before the first push,
 * and a repaired one is taken back without a restart.
 */
export class Readiness {
  private readonly driver: StorageDriver;
  private readonly logger: Logger;
  private storage: ReadinessState = { ready: true };
  /** What the last probe found wrong, if anything. */
  private problem: StorageUnavailableError | undefined;
  private stopping = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(driver: StorageDriver, logger: Logger) {
    this.driver = driver;
    this.logger = logger;
  }

  /** Probes storage once, then keeps probing until `shutDown`. Never rejects. */
  async start(): Promise<void> {
    await this.probe();
    this.schedule();
  }

  current(): ReadinessState {
    if (this.stopping) {
      return { ready: false, reason: 'ShuttingDown', message: 'the registry is shutting down' };
    }
    return this.storage;
  }

  /** Not ready from now on, so load balancers stop sending; probing stops. */
  shutDown(): void {
    this.stopping = true;
    clearTimeout(this.timer);
  }

  /** A chain of timeouts, not an interval: a probe stuck on slow storage never overlaps the next. */
  private schedule(): void {
    this.timer = setTimeout(() => {
      void this.probe().then(() => {
        if (!this.stopping) this.schedule();
      });
    }, probeIntervalMillis).unref();
  }

  /** Updates the storage state; logs only when it changes, not every period. */
  private async probe(): Promise<void> {
    const previous = this.problem;
    try {
      await this.driver.probe();
      this.problem = undefined;
    } catch (error) {
      // The driver contract promises StorageUnavailableError; anything else is still a failure.
      this.problem =
        error instanceof StorageUnavailableError
          ? error
          : new StorageUnavailableError('StorageProbeFailed', String(error), { cause: error });
    }
    const problem = this.problem;
    this.storage =
      problem && !readyDespite.has(problem.reason)
        ? { ready: false, reason: problem.reason, message: problem.message }
        : { ready: true };
    if (problem?.reason === previous?.reason) return;
    if (problem) {
      this.logger.error(
        { storage: this.driver.name, reason: problem.reason, message: problem.message },
        readyDespite.has(problem.reason) ? 'storage refuses writes' : 'storage not ready',
      );
    } else if (previous) {
      this.logger.info(
        { storage: this.driver.name, reason: previous.reason },
        readyDespite.has(previous.reason) ? 'storage takes writes again' : 'storage ready again',
      );
    }
  }
}
