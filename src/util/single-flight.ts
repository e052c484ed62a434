/**
 * At most one task per key at a time: who asks while one runs gets its promise instead of
 * starting another. A key is free again as soon as its task settles.
 */
export class SingleFlight<T> {
  private readonly running = new Map<string, Promise<T>>();

  /** The task of `key` in progress, if any. */
  current(key: string): Promise<T> | undefined {
    return this.running.get(key);
  }

  /** Starts `task` for `key` unless one runs; either way returns the running one. */
  run(key: string, task: () => Promise<T>): Promise<T> {
    const existing = this.running.get(key);
    if (existing) return existing;
    const started = task().finally(() => this.running.delete(key));
    this.running.set(key, started);
    return started;
  }
}
