import { randomBytes } from 'node:crypto';
import { ChunkBatches } from './chunk-batches.ts';

describe('ChunkBatches', () => {
  it('hands off full batches in order and keeps every byte, split anywhere', () => {
    const input = randomBytes(10_000);
    const batches = new ChunkBatches(4096);
    const out: Buffer[] = [];
    // Chunks that cross batch edges, and one larger than a batch.
    for (const [start, end] of [
      [0, 1000],
      [1000, 5000],
      [5000, 5001],
      [5001, 9999],
      [9999, 10_000],
    ])
      out.push(...batches.add(input.subarray(start, end)).map((batch) => Buffer.from(batch)));
    expect(out.map((batch) => batch.length)).toEqual([4096, 4096]);
    out.push(batches.rest() as Buffer);
    expect(Buffer.concat(out).equals(input)).toBe(true);
    expect(batches.rest()).toBeUndefined();
  });

  it('fills a released batch again, and only one of full size', () => {
    const batches = new ChunkBatches(8);
    const [first] = batches.add(Buffer.alloc(8, 1));
    batches.release(first as Buffer);
    batches.add(Buffer.alloc(3, 2));
    const rest = batches.rest() as Buffer;
    expect(rest).toEqual(Buffer.alloc(3, 2));
    batches.release(rest);
    const [second] = batches.add(Buffer.alloc(8, 3));
    const [third] = batches.add(Buffer.alloc(8, 4));
    // The batch in progress was a new one; the released one comes after it, never the partial copy.
    expect(second).not.toBe(first);
    expect(third).toBe(first);
  });
});
