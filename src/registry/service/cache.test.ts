import { jest } from '@jest/globals';
import { LruCache } from './cache.ts';

describe('LruCache', () => {
  it('evicts the least recently used entries past the weight bound', () => {
    jest.useFakeTimers();
    try {
      const cache = new LruCache<string, number>({ maxWeight: 10, ttlMillis: 60_000 });
      cache.set('a', 1, 4);
      cache.set('b', 2, 4);
      // Recency is refreshed at most once a second per entry.
      jest.advanceTimersByTime(1000);
      expect(cache.get('a')).toBe(1); // a is now the most recent
      cache.set('c', 3, 4);
      expect(cache.get('b')).toBeUndefined();
      expect(cache.get('a')).toBe(1);
      expect(cache.get('c')).toBe(3);
    } finally {
      jest.useRealTimers();
    }
  });

  it('does not keep an entry heavier than the whole cache', () => {
    const cache = new LruCache<string, number>({ maxWeight: 10, ttlMillis: 60_000 });
    cache.set('huge', 1, 11);
    expect(cache.get('huge')).toBeUndefined();
  });

  it('expires entries after the ttl', () => {
    jest.useFakeTimers();
    try {
      const cache = new LruCache<string, number>({ maxWeight: 10, ttlMillis: 1000 });
      cache.set('a', 1);
      jest.advanceTimersByTime(999);
      expect(cache.get('a')).toBe(1);
      jest.advanceTimersByTime(2);
      expect(cache.get('a')).toBeUndefined();
    } finally {
      jest.useRealTimers();
    }
  });
});
