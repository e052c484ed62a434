import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../observability/logger.ts';

interface Entry {
  readonly size: number;
  lastUsed: number;
}

/** Cache events, for metrics. */
export interface BlobCacheEvents {
  evicted?(digest: string, size: number): void;
  corrupt?(digest: string): void;
}

/**
 * A node-local, content-addressed blob store bounded in bytes, with least-recently-used eviction.
 * Content only: it never decides who may read a blob (the proxy asks the registry first).
 * Entries are written to a temp file and renamed into place only after their digest was
 * verified, so a crash or a full disk leaves no half-written entry under a digest's name.
 *
 * Layout: `<directory>/sha256/<hex>`, temp files in `<directory>/tmp`.
 */
export class BlobCache {
  private readonly directory: string;
  private readonly maxBytes: number;
  private readonly logger: Logger;
  private readonly events: BlobCacheEvents;
  private readonly entries = new Map<string, Entry>();
  /** Fetches in progress by digest: concurrent misses wait for one fetch instead of starting their own. */
  private readonly flights = new Map<string, Promise<boolean>>();
  private bytes = 0;

  constructor(directory: string, maxBytes: number, logger: Logger, events: BlobCacheEvents = {}) {
    this.directory = directory;
    this.maxBytes = maxBytes;
    this.logger = logger;
    this.events = events;
  }

  /** Indexes what an earlier process left (its order by modification time) and clears temp files. */
  async open(): Promise<void> {
    await rm(join(this.directory, 'tmp'), { recursive: true, force: true });
    await mkdir(join(this.directory, 'tmp'), { recursive: true });
    await mkdir(join(this.directory, 'sha256'), { recursive: true });
    const found: [string, Entry][] = [];
    for (const name of await readdir(join(this.directory, 'sha256'))) {
      if (!/^[a-f0-9]{64}$/.test(name)) continue;
      const info = await stat(join(this.directory, 'sha256', name));
      found.push([`sha256:${name}`, { size: info.size, lastUsed: info.mtimeMs }]);
      this.bytes += info.size;
    }
    // The index's order is its recency order: oldest first.
    for (const [digest, entry] of found.sort((a, b) => a[1].lastUsed - b[1].lastUsed))
      this.entries.set(digest, entry);
    await this.evict(undefined);
    this.logger.info({ entries: this.entries.size, bytes: this.bytes }, 'blob cache opened');
  }

  get size(): number {
    return this.bytes;
  }

  /** Where a cached blob is, marking it used; undefined on a miss. */
  lookup(digest: string): { path: string; size: number } | undefined {
    const entry = this.entries.get(digest);
    if (!entry) return undefined;
    entry.lastUsed = Date.now();
    // Map order is recency order: move it to the end.
    this.entries.delete(digest);
    this.entries.set(digest, entry);
    return { path: this.pathOf(digest), size: entry.size };
  }

  /** Whether a blob of this size may be cached at all. */
  accepts(size: number): boolean {
    return size <= this.maxBytes;
  }

  /** The fetch of `digest` in progress, if any; it resolves true once the blob is cached. */
  flight(digest: string): Promise<boolean> | undefined {
    return this.flights.get(digest);
  }

  /**
   * Starts the one fetch of `digest` on this node. `fill` writes the blob through the writer it
   * is given and reports whether its content matched the digest; only then is it cached.
   * Callers check `flight()` first, in the same synchronous turn, so there is one fetch at a time.
   */
  fetchOnce(digest: string, fill: (writer: CacheWriter) => Promise<boolean>): Promise<boolean> {
    const running = (async () => {
      let writer: CacheWriter | undefined;
      try {
        writer = await CacheWriter.create(join(this.directory, 'tmp', randomUUID()));
        const verified = await fill(writer);
        if (verified && (await writer.close())) {
          await rename(writer.path, this.pathOf(digest));
          this.add(digest, writer.written);
          await this.evict(digest);
          return true;
        }
        return false;
      } catch (error) {
        this.logger.warn({ err: error, digest }, 'blob cache fill failed');
        return false;
      } finally {
        await writer?.discard();
        this.flights.delete(digest);
      }
    })();
    this.flights.set(digest, running);
    return running;
  }

  /** Forgets an entry whose file has gone (removed from outside). */
  forget(digest: string): void {
    const entry = this.entries.get(digest);
    if (!entry) return;
    this.entries.delete(digest);
    this.bytes -= entry.size;
  }

  /** Drops an entry whose bytes no longer match its digest. */
  async dropCorrupt(digest: string): Promise<void> {
    const entry = this.entries.get(digest);
    if (!entry) return;
    this.entries.delete(digest);
    this.bytes -= entry.size;
    this.events.corrupt?.(digest);
    await rm(this.pathOf(digest), { force: true });
    this.logger.warn({ digest }, 'corrupt blob dropped from the cache');
  }

  private add(digest: string, size: number): void {
    const previous = this.entries.get(digest);
    if (previous) this.bytes -= previous.size;
    this.entries.delete(digest);
    this.entries.set(digest, { size, lastUsed: Date.now() });
    this.bytes += size;
  }

  /** Removes least recently used entries (never `keep`) until the cache fits. */
  private async evict(keep: string | undefined): Promise<void> {
    for (const [digest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) return;
      if (digest === keep) continue;
      this.entries.delete(digest);
      this.bytes -= entry.size;
      // A reader that has it open keeps reading: unlinking does not cut an open file short.
      await rm(this.pathOf(digest), { force: true });
      this.events.evicted?.(digest, entry.size);
    }
  }

  private pathOf(digest: string): string {
    return join(this.directory, 'sha256', digest.slice('sha256:'.length));
  }
}

/**
 * The temp file a fetch writes into. Chunks off a TLS socket are 16 KiB; writing each with its
 * own system call would cap a cold pull far below the network, so they are gathered and written
 * with writev in batches, in the background; `write` asks the caller to wait only when too much
 * is queued behind the write in progress, and only until that write is done and the queue taken
 * up (so at most two batches of 8 MiB are held per fill). The client is not held for the disk
 * beyond that: waiting for the whole queue to drain used to stall the pull at every batch. A
 * write that fails (a full disk) turns the writer off instead of failing the pull: the client
 * still gets its bytes, the blob just is not cached.
 */
export class CacheWriter {
  readonly path: string;
  written = 0;
  private handle: FileHandle | undefined;
  private failed = false;
  private pending: Buffer[] = [];
  /** Called once the pending chunk at the same index is written. */
  private pendingDone: ((() => void) | undefined)[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> | undefined;
  /** Callers of `write` told to wait until the queue has room. */
  private waiting: (() => void)[] = [];

  private static readonly batchBytes = 1 << 20;
  private static readonly maxPendingBytes = 8 << 20;

  private constructor(path: string, handle: FileHandle) {
    this.path = path;
    this.handle = handle;
  }

  static async create(path: string): Promise<CacheWriter> {
    return new CacheWriter(path, await open(path, 'w', 0o600));
  }

  /**
   * Queues a chunk; returns a promise to wait for only when the queue is full. `written` is
   * called once the chunk is in the file, and not at all if it never gets there.
   */
  write(chunk: Buffer, written?: () => void): Promise<void> | undefined {
    if (this.failed || !this.handle) return undefined;
    this.pending.push(chunk);
    this.pendingDone.push(written);
    this.pendingBytes += chunk.length;
    if (!this.flushing && this.pendingBytes >= CacheWriter.batchBytes) this.startFlush();
    if (this.pendingBytes < CacheWriter.maxPendingBytes) return undefined;
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Writes what is queued and closes the file; false when any write failed. */
  async close(): Promise<boolean> {
    if (this.handle && !this.failed) {
      await this.flushing;
      if (this.pending.length > 0) {
        this.startFlush();
        await this.flushing;
      }
    }
    const handle = this.handle;
    this.handle = undefined;
    if (handle) await handle.close();
    return !this.failed;
  }

  async discard(): Promise<void> {
    this.failed = true;
    await this.flushing;
    await this.close().catch(() => false);
    await rm(this.path, { force: true });
  }

  private startFlush(): void {
    this.flushing = (async () => {
      while (this.pending.length > 0 && !this.failed && this.handle) {
        const batch = this.pending;
        const done = this.pendingDone;
        const size = this.pendingBytes;
        this.pending = [];
        this.pendingDone = [];
        this.pendingBytes = 0;
        this.wakeWaiting();
        try {
          await this.handle.writev(batch);
          this.written += size;
          for (const written of done) written?.();
        } catch {
          this.failed = true;
          this.pending = [];
          this.pendingDone = [];
          this.pendingBytes = 0;
        }
      }
      this.flushing = undefined;
      this.wakeWaiting();
    })();
  }

  private wakeWaiting(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  }
}
