import { jest } from '@jest/globals';
import { ByteLru } from './byte-lru.ts';

describe('ByteLru', () => {
  it('evicts the least recently used entries past the byte bound', () => {
    jest.useFakeTimers();
    try {
      // Each entry costs 2 (key) + 100 (value) + 128 (overhead) = 230 bytes.
      const cache = new ByteLru<number>({ maxBytes: 500, ttlMillis: 60_000 });
      cache.set('a', 1, 100);
      cache.set('b', 2, 100);
      // Recency is refreshed at most once a second per entry.
      jest.advanceTimersByTime(1000);
      expect(cache.get('a')).toBe(1); // a is now the most recent
      cache.set('c', 3, 100);
      expect(cache.get('b')).toBeUndefined();
      expect(cache.get('a')).toBe(1);
      expect(cache.get('c')).toBe(3);
      expect(cache.bytes).toBe(460);
    } finally {
      jest.useRealTimers();
    }
  });

  it('charges keys, so many large keys with empty values stay within the bound', () => {
    const cache = new ByteLru<true>({ maxBytes: 1024 * 1024, ttlMillis: 60_000 });
    for (let index = 0; index < 10_000; index += 1) {
      cache.set(`${index}-${'x'.repeat(15_000)}`, true, 0);
      expect(cache.bytes).toBeLessThanOrEqual(1024 * 1024);
    }
    expect(cache.get(`9999-${'x'.repeat(15_000)}`)).toBe(true);
    expect(cache.get(`0-${'x'.repeat(15_000)}`)).toBeUndefined();
  });

  it('does not keep an entry larger than the whole cache', () => {
    const cache = new ByteLru<number>({ maxBytes: 1000, ttlMillis: 60_000 });
    cache.set('huge', 1, 1000);
    expect(cache.get('huge')).toBeUndefined();
    expect(cache.bytes).toBe(0);
  });

  it('expires entries after the ttl', () => {
    jest.useFakeTimers();
    try {
      const cache = new ByteLru<number>({ maxBytes: 1000, ttlMillis: 1000 });
      cache.set('a', 1, 0);
      jest.advanceTimersByTime(999);
      expect(cache.get('a')).toBe(1);
      jest.advanceTimersByTime(2);
      expect(cache.get('a')).toBeUndefined();
      expect(cache.bytes).toBe(0);
    } finally {
      jest.useRealTimers();
    }
  });
});
