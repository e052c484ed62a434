import { BufferPool } from './buffer-pool.ts';

describe('BufferPool', () => {
  it('lends at most maxBuffers pooled buffers, then small ones, and reuses what comes back', () => {
    const pool = new BufferPool({ bufferBytes: 1024, maxBuffers: 2, fallbackBytes: 16 });
    const reader = pool.borrower();
    const [first, second, third] = [reader.take(), reader.take(), reader.take()];
    expect([first.length, second.length, third.length]).toEqual([1024, 1024, 16]);
    reader.giveBack(first);
    // Given back twice, a buffer is still lent only once.
    reader.giveBack(first);
    const other = pool.borrower();
    expect(other.take()).toBe(first);
    expect(other.take().length).toBe(16);
    // A reader's small buffers are its own, and reused by it, once each.
    reader.giveBack(third);
    reader.giveBack(third);
    reader.giveBack(second);
    expect(reader.take()).toBe(second);
    expect(reader.take()).toBe(third);
    expect(reader.take()).not.toBe(third);
  });
});
