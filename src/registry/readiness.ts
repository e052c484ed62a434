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
 * The registry's one source of readiness: not ready once shutdown has begun, nor while storage
 * fails its probe. The probe runs at start and then every few seconds, never per request, so a
 * volume the registry cannot write is reported before the first push, and a repaired one is
 * taken back without a restart.
 */
export class Readiness {
  private readonly driver: StorageDriver;
  private readonly logger: Logger;
  private storage: ReadinessState = { ready: true };
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
    const previous = this.storage;
    try {
      await this.driver.probe();
      this.storage = { ready: true };
      if (!previous.ready) this.logger.info({ storage: this.driver.name }, 'storage ready again');
    } catch (error) {
      // The driver contract promises StorageUnavailableError; anything else is still a failure.
      const failure =
        error instanceof StorageUnavailableError
          ? error
          : new StorageUnavailableError('StorageProbeFailed', String(error), { cause: error });
      this.storage = { ready: false, reason: failure.reason, message: failure.message };
      if (previous.ready || previous.reason !== failure.reason) {
        this.logger.error(
          { storage: this.driver.name, reason: failure.reason, message: failure.message },
          'storage not ready',
        );
      }
    }
  }
}
