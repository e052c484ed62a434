import { setTimeout as sleep } from 'node:timers/promises';
import { concurrently } from './concurrently.ts';

describe('concurrently', () => {
  it('runs every item with at most `limit` in flight', async () => {
    let inFlight = 0;
    let most = 0;
    const done: number[] = [];
    await concurrently([...Array(20).keys()], 4, async (item) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await sleep(item % 3);
      inFlight -= 1;
      done.push(item);
    });
    expect(done.sort((a, b) => a - b)).toEqual([...Array(20).keys()]);
    expect(most).toBe(4);
  });

  it('rejects with the first failure after the started tasks settle, starting no more', async () => {
    const started: number[] = [];
    let settled = 0;
    const run = concurrently([...Array(10).keys()], 2, async (item) => {
      started.push(item);
      await sleep(5);
      settled += 1;
      if (item === 1) throw new Error('storage refused');
    });
    await expect(run).rejects.toThrow('storage refused');
    expect(settled).toBe(started.length);
    expect(started.length).toBeLessThan(10);
  });
});
