/** Keys kept at most; memory stays bounded whatever clients send. */
const maxEntries = 100_000;

/**
 * Counts failed logins per key (client address and username). Past `maxFailures` within
 * `windowMillis`, the key is refused for `blockMillis`; other keys, and so other clients and
 * other users, are unaffected.
 */
export class FailureLimiter {
  private readonly entries = new Map<
    string,
    { failures: number; windowStart: number; blockedUntil: number }
  >();
  private readonly maxFailures: number;
  private readonly windowMillis: number;
  private readonly blockMillis: number;

  constructor(options: { maxFailures: number; windowMillis: number; blockMillis: number }) {
    this.maxFailures = options.maxFailures;
    this.windowMillis = options.windowMillis;
    this.blockMillis = options.blockMillis;
  }

  /** Seconds to wait before trying again, or undefined when the key may try now. */
  retryAfter(key: string, now = Date.now()): number | undefined {
    const entry = this.entries.get(key);
    if (!entry || entry.blockedUntil <= now) return undefined;
    return Math.ceil((entry.blockedUntil - now) / 1000);
  }

  fail(key: string, now = Date.now()): void {
    let entry = this.entries.get(key);
    if (!entry || now - entry.windowStart > this.windowMillis) {
      entry = { failures: 0, windowStart: now, blockedUntil: 0 };
      this.entries.set(key, entry);
    }
    entry.failures += 1;
    if (entry.failures >= this.maxFailures) entry.blockedUntil = now + this.blockMillis;
    if (this.entries.size > maxEntries) this.prune(now);
  }

  succeed(key: string): void {
    this.entries.delete(key);
  }

  /** Drops settled entries; if still over the cap, the oldest ones go (Map keeps insertion order). */
  private prune(now: number): void {
    for (const [key, entry] of this.entries) {
      if (entry.blockedUntil <= now && now - entry.windowStart > this.windowMillis)
        this.entries.delete(key);
    }
    for (const key of this.entries.keys()) {
      if (this.entries.size <= maxEntries * 0.9) break;
      this.entries.delete(key);
    }
  }
}
