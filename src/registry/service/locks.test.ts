import { KeyedLock } from './locks.ts';

/** A task that records when it runs and finishes when told to. */
function gate(log: string[], name: string) {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return {
    task: async () => {
      log.push(`start ${name}`);
      await opened;
      log.push(`end ${name}`);
    },
    open,
  };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('KeyedLock', () => {
  it('runs shared holders together and an exclusive one alone, in arrival order', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((name) => gate(log, name));
    const done = Promise.all([
      lock.shared('k', a!.task),
      lock.shared('k', b!.task),
      lock.exclusive('k', c!.task),
      // Arrives after a waiting exclusive holder: waits behind it.
      lock.shared('k', d!.task),
    ]);
    await settle();
    expect(log).toEqual(['start a', 'start b']);
    a!.open();
    b!.open();
    await settle();
    expect(log).toEqual(['start a', 'start b', 'end a', 'end b', 'start c']);
    c!.open();
    await settle();
    expect(log.slice(-2)).toEqual(['end c', 'start d']);
    d!.open();
    await done;
  });

  it('keeps keys apart, and frees a holder whose task failed', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const held = gate(log, 'held');
    const first = lock.exclusive('one', held.task);
    await lock.exclusive('two', async () => log.push('other key'));
    await expect(
      lock.exclusive('two', async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    await lock.exclusive('two', async () => log.push('after failure'));
    expect(log).toEqual(['start held', 'other key', 'after failure']);
    held.open();
    await first;
  });

  it('takes several keys in one order, so crossing callers do not deadlock', async () => {
    const lock = new KeyedLock();
    const order: string[] = [];
    await Promise.all([
      lock.exclusiveAll(['x', 'y'], async () => order.push('xy')),
      lock.exclusiveAll(['y', 'x'], async () => order.push('yx')),
      lock.exclusiveAll([], async () => order.push('none')),
    ]);
    expect(order.sort()).toEqual(['none', 'xy', 'yx']);
  });
});
