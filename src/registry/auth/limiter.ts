import { createHash } from 'node:crypto';
import { entryOverheadBytes, stringBytes } from '../../util/byte-lru.ts';

/** How often at most a full limiter looks for expired entries to make room. */
const sweepIntervalMillis = 1000;

interface Entry {
  failures: number;
  windowStart: number;
  blockedUntil: number;
}

/**
 * Counts failed logins per key. Past `maxFailures` within `windowMillis`, the key is refused for
 * `blockMillis`; other keys are unaffected. Nothing is forgotten before it expires (its window
 * and its block are over), so no flood of other keys can lift a block or reset a count. Memory
 * is bounded by `maxBytes` instead: while the limiter is full, a key it does not hold is refused
 * until entries expire and make room.
 */
export class FailureLimiter {
  private readonly entries = new Map<string, Entry>();
  private readonly maxFailures: number;
  private readonly windowMillis: number;
  private readonly blockMillis: number;
  private readonly maxBytes: number;
  private held = 0;
  /** When the last sweep ran, and the earliest expiry of what it kept. */
  private sweptAt = Number.NEGATIVE_INFINITY;
  private nextExpiry = Number.POSITIVE_INFINITY;

  constructor(options: {
    maxFailures: number;
    windowMillis: number;
    blockMillis: number;
    maxBytes: number;
  }) {
    this.maxFailures = options.maxFailures;
    this.windowMillis = options.windowMillis;
    this.blockMillis = options.blockMillis;
    this.maxBytes = options.maxBytes;
  }

  /** Bytes charged for the entries held now; never above `maxBytes`. */
  get bytes(): number {
    return this.held;
  }

  /** Seconds to wait before trying again, or undefined when the key may try now. */
  retryAfter(key: string, now = Date.now()): number | undefined {
    const entry = this.entries.get(key);
    if (entry) {
      return entry.blockedUntil > now ? Math.ceil((entry.blockedUntil - now) / 1000) : undefined;
    }
    if (this.hasRoom(key, now)) return undefined;
    return Math.max(1, Math.ceil((this.nextExpiry - now) / 1000));
  }

  fail(key: string, now = Date.now()): void {
    let entry = this.entries.get(key);
    if (!entry) {
      // Refused by retryAfter already, unless the limiter filled up since it was asked.
      if (!this.hasRoom(key, now)) return;
      entry = { failures: 0, windowStart: now, blockedUntil: 0 };
      this.entries.set(key, entry);
      this.held += bytesOf(key);
    } else if (now - entry.windowStart > this.windowMillis) {
      entry.failures = 0;
      entry.windowStart = now;
    }
    entry.failures += 1;
    if (entry.failures >= this.maxFailures) entry.blockedUntil = now + this.blockMillis;
  }

  succeed(key: string): void {
    if (this.entries.delete(key)) this.held -= bytesOf(key);
  }

  /** Whether a new entry for `key` fits, after dropping expired entries when it would not. */
  private hasRoom(key: string, now: number): boolean {
    if (this.held + bytesOf(key) <= this.maxBytes) return true;
    if (now - this.sweptAt >= sweepIntervalMillis || now >= this.nextExpiry) this.sweep(now);
    return this.held + bytesOf(key) <= this.maxBytes;
  }

  private sweep(now: number): void {
    this.sweptAt = now;
    this.nextExpiry = Number.POSITIVE_INFINITY;
    for (const [key, entry] of this.entries) {
      const expiresAt = Math.max(entry.windowStart + this.windowMillis, entry.blockedUntil);
      if (expiresAt <= now) {
        this.entries.delete(key);
        this.held -= bytesOf(key);
      } else {
        this.nextExpiry = Math.min(this.nextExpiry, expiresAt);
      }
    }
  }
}

function bytesOf(key: string): number {
  return stringBytes(key) + entryOverheadBytes;
}

/**
 * The limits on failed logins, kept per client address and username (10 a minute), per
 * username from anywhere (100 a minute, so many addresses cannot guess one password without
 * limit) and per address across usernames (100 a minute, so one client cannot flood the others
 * with junk usernames). Only logins that are not a valid signed credential are limited: one
 * cannot be guessed, and failures of others must never lock its owner out.
 */
export class LoginLimiter {
  private readonly client: FailureLimiter;
  private readonly user: FailureLimiter;
  private readonly address: FailureLimiter;

  constructor() {
    const minute = { windowMillis: 60_000, blockMillis: 60_000 };
    this.client = new FailureLimiter({ ...minute, maxFailures: 10, maxBytes: 8 * 1024 * 1024 });
    this.user = new FailureLimiter({ ...minute, maxFailures: 100, maxBytes: 8 * 1024 * 1024 });
    this.address = new FailureLimiter({ ...minute, maxFailures: 100, maxBytes: 4 * 1024 * 1024 });
  }

  /** Seconds this client must wait before trying `username` again, or undefined. */
  retryAfter(address: string, username: string): number | undefined {
    const user = userKey(username);
    return (
      this.address.retryAfter(address) ??
      this.client.retryAfter(`${address} ${user}`) ??
      this.user.retryAfter(user)
    );
  }

  fail(address: string, username: string): void {
    const user = userKey(username);
    this.address.fail(address);
    this.client.fail(`${address} ${user}`);
    this.user.fail(user);
  }

  /** A successful login clears this client's count for the username, and no other. */
  succeed(address: string, username: string): void {
    this.client.succeed(`${address} ${userKey(username)}`);
  }
}

/** Usernames are kept as short digests: whatever a client sends, each key has one small size. */
function userKey(username: string): string {
  return createHash('sha256').update(username).digest('base64url').slice(0, 22);
}
