/**
 * A work queue of keys, as controller-runtime has it: a key is processed by one worker at a
 * time; adding a key that is waiting does nothing, adding one that is being processed makes it
 * run once more afterwards; failures back off exponentially per key; a handler can ask to run
 * again after a delay. Keys are typed (`K`); `identify` names a key, so two equal keys are one.
 */
export interface QueueResult {
  /** Run this key again after this long (a periodic check, a credential to rotate). */
  readonly requeueAfterMillis?: number;
}

export interface WorkQueueOptions<K = string> {
  readonly concurrency: number;
  /** The identity of a key: keys with one identity are one key. Strings are their own. */
  readonly identify?: (key: K) => string;
  readonly baseBackoffMillis?: number;
  readonly maxBackoffMillis?: number;
  /** Called for a handler error; the key is retried with backoff. */
  readonly onError?: (key: K, error: unknown, retryInMillis: number) => void;
}

export class WorkQueue<K = string> {
  private readonly handler: (key: K) => Promise<QueueResult | void>;
  private readonly options: Required<Omit<WorkQueueOptions<K>, 'onError'>> &
    Pick<WorkQueueOptions<K>, 'onError'>;
  /** Keys in arrival order; the sets below hold their identities. */
  private readonly waiting: K[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  /** Keys added again while they were being processed. */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private running = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(handler: (key: K) => Promise<QueueResult | void>, options: WorkQueueOptions<K>) {
    this.handler = handler;
    this.options = {
      baseBackoffMillis: 100,
      maxBackoffMillis: 300_000,
      identify: String,
      ...options,
    };
  }

  /** Keys waiting or running: the queue depth metric. */
  get depth(): number {
    return this.queued.size + this.active.size;
  }

  add(item: K): void {
    if (this.stopped) return;
    const key = this.options.identify(item);
    const timer = this.timers.get(key);
    if (timer) {
      clearTimeout(timer);
      this.timers.delete(key);
    }
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.waiting.push(item);
    this.pump();
  }

  /** Adds a key after a delay, unless it is added sooner. */
  addAfter(item: K, millis: number): void {
    const key = this.options.identify(item);
    if (this.stopped || this.timers.has(key)) return;
    // Timers longer than 2^31-1 ms fire at once; waking early is harmless (level-based).
    this.timers.set(
      key,
      setTimeout(
        () => {
          this.timers.delete(key);
          this.add(item);
        },
        Math.min(millis, 2_147_483_647),
      ).unref(),
    );
  }

  /** Resolves when nothing is waiting or running (timers may still be pending). */
  idle(): Promise<void> {
    if (this.depth === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops taking work; resolves when running handlers have finished. */
  async shutdown(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.waiting.length = 0;
    this.queued.clear();
    if (this.running > 0) await this.idle();
  }

  private pump(): void {
    while (!this.stopped && this.running < this.options.concurrency && this.waiting.length > 0) {
      const item = this.waiting.shift();
      if (item === undefined) break;
      const key = this.options.identify(item);
      this.queued.delete(key);
      this.active.add(key);
      this.running += 1;
      void this.process(item, key);
    }
  }

  private async process(item: K, key: string): Promise<void> {
    try {
      const result = await this.handler(item);
      this.failures.delete(key);
      if (result?.requeueAfterMillis !== undefined) this.addAfter(item, result.requeueAfterMillis);
    } catch (error) {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      const delay = Math.min(
        this.options.baseBackoffMillis * 2 ** (failures - 1),
        this.options.maxBackoffMillis,
      );
      this.options.onError?.(item, error, delay);
      this.addAfter(item, delay);
    } finally {
      this.active.delete(key);
      this.running -= 1;
      if (this.dirty.delete(key)) this.add(item);
      this.pump();
      if (this.depth === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    }
  }
}
