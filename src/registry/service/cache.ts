/**
 * A least-recently-used map bounded by a total weight (bytes for manifests, 1 for small
 * entries). Entries also expire after `ttlMillis`, which bounds how stale a read can be when
 * another replica writes to the same storage.
 */
export class LruCache<K, V> {
  private readonly entries = new Map<
    K,
    { value: V; weight: number; expiresAt: number; touchedAt: number }
  >();
  private readonly maxWeight: number;
  private readonly ttlMillis: number;
  private weight = 0;

  constructor(options: { maxWeight: number; ttlMillis: number }) {
    this.maxWeight = options.maxWeight;
    this.ttlMillis = options.ttlMillis;
  }

  get(key: K): V | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    const now = Date.now();
    if (entry.expiresAt <= now) {
      this.delete(key);
      return undefined;
    }
    // Re-insert to mark as most recently used, at most once a second per entry: hot entries
    // are read thousands of times a second, and recency at that grain is all eviction needs.
    if (now - entry.touchedAt >= 1000) {
      entry.touchedAt = now;
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    return entry.value;
  }

  set(key: K, value: V, weight = 1): void {
    this.delete(key);
    if (weight > this.maxWeight) return;
    const now = Date.now();
    this.entries.set(key, { value, weight, expiresAt: now + this.ttlMillis, touchedAt: now });
    this.weight += weight;
    for (const [oldest, entry] of this.entries) {
      if (this.weight <= this.maxWeight) break;
      this.entries.delete(oldest);
      this.weight -= entry.weight;
    }
  }

  delete(key: K): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.weight -= entry.weight;
  }
}
