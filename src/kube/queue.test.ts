import { WorkQueue } from './queue.ts';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('WorkQueue', () => {
  it('collapses repeated adds of a waiting key into one run', async () => {
    const runs: string[] = [];
    const gate = deferred();
    const queue = new WorkQueue(
      async (key) => {
        if (key === 'busy') await gate.promise;
        runs.push(key);
      },
      { concurrency: 1 },
    );
    queue.add('busy'); // occupies the only worker, so the next adds wait
    queue.add('a');
    queue.add('a');
    queue.add('b');
    queue.add('a');
    gate.resolve();
    await queue.idle();
    expect(runs).toEqual(['busy', 'a', 'b']);
  });

  it('never runs one key twice at once, and reruns a key added while it ran', async () => {
    let concurrent = 0;
    let maxConcurrent = 0;
    let runs = 0;
    const gate = deferred();
    const queue = new WorkQueue(
      async () => {
        runs += 1;
        concurrent += 1;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        if (runs === 1) await gate.promise;
        concurrent -= 1;
      },
      { concurrency: 4 },
    );
    queue.add('k');
    await new Promise((resolve) => setImmediate(resolve));
    queue.add('k');
    queue.add('k');
    gate.resolve();
    await new Promise((resolve) => setTimeout(resolve, 20));
    await queue.idle();
    expect({ runs, maxConcurrent }).toEqual({ runs: 2, maxConcurrent: 1 });
  });

  it('retries a failing key with growing delays', async () => {
    const times: number[] = [];
    const errors: number[] = [];
    const queue = new WorkQueue(
      async () => {
        times.push(Date.now());
        if (times.length < 4) throw new Error('conflict');
      },
      {
        concurrency: 1,
        baseBackoffMillis: 20,
        onError: (_key, _error, retry) => errors.push(retry),
      },
    );
    queue.add('k');
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(errors).toEqual([20, 40, 80]);
    expect(times).toHaveLength(4);
    for (let index = 1; index < times.length; index += 1) {
      expect((times[index] as number) - (times[index - 1] as number)).toBeGreaterThanOrEqual(15);
    }
    await queue.shutdown();
  });

  it('requeues after the delay a handler asks for', async () => {
    let runs = 0;
    const queue = new WorkQueue(
      async () => {
        runs += 1;
        return runs < 3 ? { requeueAfterMillis: 10 } : {};
      },
      { concurrency: 1 },
    );
    queue.add('k');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(runs).toBe(3);
  });

  it('runs different keys in parallel up to the concurrency', async () => {
    let concurrent = 0;
    let maxConcurrent = 0;
    const queue = new WorkQueue(
      async () => {
        concurrent += 1;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        await new Promise((resolve) => setTimeout(resolve, 10));
        concurrent -= 1;
      },
      { concurrency: 3 },
    );
    for (let index = 0; index < 10; index += 1) queue.add(`k${index}`);
    await queue.idle();
    expect(maxConcurrent).toBe(3);
  });
});
