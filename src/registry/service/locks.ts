/**
 * Readers-writer locks by key, within one process. Requests are granted in arrival order:
 * shared holders run together, an exclusive one runs alone, and a shared request that arrives
 * after a waiting exclusive one waits behind it, so neither kind starves. A key holds no memory
 * once nobody holds or waits for it.
 */
export class KeyedLock {
  private readonly queues = new Map<string, Waiter[]>();

  /** Runs `task` while holding `key` together with other shared holders. */
  shared<T>(key: string, task: () => Promise<T>): Promise<T> {
    return this.run(key, 'shared', task);
  }

  /** Runs `task` while holding `key` alone. */
  exclusive<T>(key: string, task: () => Promise<T>): Promise<T> {
    return this.run(key, 'exclusive', task);
  }

  /** Runs `task` holding every key of `keys` alone, taken in sorted order so that no two callers deadlock. */
  async exclusiveAll<T>(keys: readonly string[], task: () => Promise<T>): Promise<T> {
    const [first, ...rest] = [...new Set(keys)].sort();
    if (first === undefined) return task();
    return this.exclusive(first, () => this.exclusiveAll(rest, task));
  }

  private async run<T>(key: string, mode: Mode, task: () => Promise<T>): Promise<T> {
    let queue = this.queues.get(key);
    if (!queue) {
      queue = [];
      this.queues.set(key, queue);
    }
    let grant = (): void => undefined;
    const granted = new Promise<void>((resolve) => (grant = resolve));
    const waiter: Waiter = { mode, running: false, grant };
    queue.push(waiter);
    this.dispatch(queue);
    await granted;
    try {
      return await task();
    } finally {
      queue.splice(queue.indexOf(waiter), 1);
      if (queue.length === 0) this.queues.delete(key);
      else this.dispatch(queue);
    }
  }

  /** Starts the waiters at the head of the queue that may run now. */
  private dispatch(queue: Waiter[]): void {
    for (const [index, waiter] of queue.entries()) {
      if (waiter.mode === 'exclusive') {
        if (index === 0 && !waiter.running) start(waiter);
        return;
      }
      if (!waiter.running) start(waiter);
    }
  }
}

type Mode = 'shared' | 'exclusive';

interface Waiter {
  readonly mode: Mode;
  running: boolean;
  readonly grant: () => void;
}

function start(waiter: Waiter): void {
  waiter.running = true;
  waiter.grant();
}
