import type { Logger } from '../observability/logger.ts';
import { isConflict, isNotFound, type KubeClient, type KubeObject } from './client.ts';

interface Lease extends KubeObject {
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  /** Unique per process (pod name plus a random suffix). */
  readonly identity: string;
  readonly leaseDurationSeconds?: number;
  /** A leader that cannot renew for this long steps down. */
  readonly renewDeadlineMillis?: number;
  readonly retryPeriodMillis?: number;
}

/** RFC 3339 with microseconds, as Lease MicroTime fields are written. */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/**
 * Leader election on a coordination.k8s.io Lease, as client-go does it. A candidate takes the
 * Lease when it is free or its holder has not renewed it for a lease duration, measured on this
 * process's clock from when it last saw the record change (so clock skew between nodes does not
 * matter). Every write carries the resourceVersion read, so of two candidates only one wins. A
 * leader that cannot renew within the renew deadline steps down; on shutdown it releases the
 * Lease so that another replica takes over at once.
 */
export class LeaderElector {
  private readonly client: KubeClient;
  private readonly options: Required<LeaderElectionOptions>;
  private readonly logger: Logger;
  private observed: { record: string; at: number } | undefined;
  private leading = false;
  private stopped = false;
  private releaseOnStop = true;
  /** Holder seen at the last read of the Lease. */
  private lastHolder: string | undefined;
  /** The holder this replica last reported standing by for, so that it says so once. */
  private standingBy: string | undefined;
  private wake: (() => void) | undefined;

  constructor(client: KubeClient, options: LeaderElectionOptions, logger: Logger) {
    this.client = client;
    this.options = {
      leaseDurationSeconds: 15,
      renewDeadlineMillis: 10_000,
      retryPeriodMillis: 2_000,
      ...options,
    };
    this.logger = logger.child({
      lease: `${options.namespace}/${options.name}`,
      identity: options.identity,
    });
  }

  get isLeader(): boolean {
    return this.leading;
  }

  private get path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.options.namespace}/leases/${this.options.name}`;
  }

  /**
   * Campaigns until stopped. `lead` runs while this process leads; its signal aborts when
   * leadership is lost or the elector stops.
   */
  async run(lead: (signal: AbortSignal) => Promise<void> | void): Promise<void> {
    while (!this.stopped) {
      if (await this.tryAcquireOrRenew()) {
        this.leading = true;
        this.logger.info('became leader');
        const leadership = new AbortController();
        const work = Promise.resolve(lead(leadership.signal)).catch((error: unknown) =>
          this.logger.error({ err: error }, 'leader work failed'),
        );
        let lastRenew = Date.now();
        while (!this.stopped) {
          await this.sleep(this.options.retryPeriodMillis);
          if (this.stopped) break;
          if (await this.tryAcquireOrRenew()) lastRenew = Date.now();
          // Another candidate holds it now, or renewals have failed for too long: step down.
          else if (
            this.lastHolder !== this.options.identity ||
            Date.now() - lastRenew > this.options.renewDeadlineMillis
          )
            break;
        }
        this.leading = false;
        leadership.abort();
        await work;
        this.logger.info('stopped leading');
        if (this.stopped && this.releaseOnStop) await this.release();
      }
      if (!this.stopped) await this.sleep(this.options.retryPeriodMillis);
    }
  }

  /**
   * Stops campaigning. A leader releases its Lease unless `release` is false, which behaves like
   * a crashed process: the others wait out the lease duration.
   */
  stop(options: { release?: boolean } = {}): void {
    this.releaseOnStop = options.release ?? true;
    this.stopped = true;
    this.wake?.();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = await this.client.get<Lease>(this.path);
    } catch (error) {
      if (!isNotFound(error)) {
        this.logger.warn({ err: error }, 'lease read failed');
        return false;
      }
    }
    if (!lease) return this.create(now);

    const holder = lease.spec?.holderIdentity ?? '';
    this.lastHolder = holder;
    const record = `${holder}|${lease.spec?.renewTime ?? ''}`;
    if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
    const duration = (lease.spec?.leaseDurationSeconds ?? this.options.leaseDurationSeconds) * 1000;
    const held = holder !== '' && holder !== this.options.identity;
    if (held && this.observed.at + duration > Date.now()) {
      if (this.standingBy !== holder)
        this.logger.info({ holder }, 'standing by: the Lease is held');
      this.standingBy = holder;
      return false;
    }
    this.standingBy = undefined;

    const spec = {
      holderIdentity: this.options.identity,
      leaseDurationSeconds: this.options.leaseDurationSeconds,
      renewTime: microTime(now),
      acquireTime:
        holder === this.options.identity && lease.spec?.acquireTime
          ? lease.spec.acquireTime
          : microTime(now),
      leaseTransitions:
        (lease.spec?.leaseTransitions ?? 0) + (holder === this.options.identity ? 0 : 1),
    };
    try {
      const updated = await this.client.request<Lease>('PUT', this.path, {
        body: { ...lease, spec },
      });
      this.observed = {
        record: `${this.options.identity}|${updated.spec?.renewTime ?? ''}`,
        at: Date.now(),
      };
      this.lastHolder = this.options.identity;
      return true;
    } catch (error) {
      if (!isConflict(error)) this.logger.warn({ err: error }, 'lease update failed');
      return false;
    }
  }

  private async create(now: Date): Promise<boolean> {
    try {
      await this.client.request(
        'POST',
        `/apis/coordination.k8s.io/v1/namespaces/${this.options.namespace}/leases`,
        {
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name: this.options.name, namespace: this.options.namespace },
            spec: {
              holderIdentity: this.options.identity,
              leaseDurationSeconds: this.options.leaseDurationSeconds,
              acquireTime: microTime(now),
              renewTime: microTime(now),
              leaseTransitions: 0,
            },
          },
        },
      );
      this.lastHolder = this.options.identity;
      return true;
    } catch (error) {
      if (!isConflict(error)) this.logger.warn({ err: error }, 'lease create failed');
      return false;
    }
  }

  /** Gives the Lease up so that another candidate need not wait out the lease duration. */
  private async release(): Promise<void> {
    try {
      const lease = await this.client.get<Lease>(this.path);
      if (lease.spec?.holderIdentity !== this.options.identity) return;
      await this.client.request('PUT', this.path, {
        body: {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: '',
            leaseDurationSeconds: 1,
            renewTime: microTime(new Date()),
          },
        },
      });
      this.logger.info('lease released');
    } catch (error) {
      this.logger.warn({ err: error }, 'lease release failed');
    }
  }

  private sleep(millis: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, millis);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
