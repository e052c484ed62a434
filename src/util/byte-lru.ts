/**
 * What a map entry costs beyond its key and value: the map slot, the entry record and their
 * headers. About 100 bytes on V8; rounded up, since the bound must hold.
 */
export const entryOverheadBytes = 128;

/** Bytes a string may occupy on the V8 heap: two per character (a one-byte string takes less). */
export function stringBytes(text: string): number {
  return 2 * text.length;
}

/**
 * A least-recently-used map bounded by the bytes it holds: each entry is charged its key, the
 * bytes its caller says the value holds, and a fixed overhead. Every in-memory cache of the
 * registry is one, so none of them can grow with what clients send, however many or large the
 * keys they make it hold. Entries also expire after `ttlMillis`, which bounds how stale a read can
 * be when another replica writes to the same storage.
 */
export class ByteLru<V> {
  private readonly entries = new Map<
    string,
    { value: V; bytes: number; expiresAt: number; touchedAt: number }
  >();
  private readonly maxBytes: number;
  private readonly ttlMillis: number;
  private held = 0;

  constructor(options: { maxBytes: number; ttlMillis: number }) {
    this.maxBytes = options.maxBytes;
    this.ttlMillis = options.ttlMillis;
  }

  /** Bytes charged for the entries held now; never above `maxBytes`. */
  get bytes(): number {
    return this.held;
  }

  get(key: string): V | undefined {
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

  /** Keeps `value`, evicting the least recently used entries until everything fits. */
  set(key: string, value: V, valueBytes: number): void {
    this.delete(key);
    const bytes = stringBytes(key) + valueBytes + entryOverheadBytes;
    if (bytes > this.maxBytes) return;
    const now = Date.now();
    this.entries.set(key, { value, bytes, expiresAt: now + this.ttlMillis, touchedAt: now });
    this.held += bytes;
    for (const [oldest, entry] of this.entries) {
      if (this.held <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.held -= entry.bytes;
    }
  }

  delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.held -= entry.bytes;
  }
}
