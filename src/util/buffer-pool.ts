/**
 * Buffers lent out and given back, shared by every reader of a kind: however many clients read
 * at once, or stall with a buffer in their socket, the pool never holds more than `maxBuffers`
 * of `bufferBytes`. Readers take buffers through a `Borrower`, which falls back on small buffers
 * of its own (`fallbackBytes`) while every pooled one is out, so a crowd of stalled readers slows
 * the others down but holds no more than a small buffer or two each.
 */
export class BufferPool {
  readonly fallbackBytes: number;
  private readonly bufferBytes: number;
  private readonly maxBuffers: number;
  private readonly free: Buffer[] = [];
  /** Pooled buffers out on loan; giving one back twice must not put it in `free` twice. */
  private readonly lent = new Set<Buffer>();

  constructor(options: { bufferBytes: number; maxBuffers: number; fallbackBytes: number }) {
    this.bufferBytes = options.bufferBytes;
    this.maxBuffers = options.maxBuffers;
    this.fallbackBytes = options.fallbackBytes;
  }

  /** A borrower for one reader, for as long as it reads. */
  borrower(): Borrower {
    return new Borrower(this);
  }

  /** A pooled buffer, or undefined while all are lent. Its content is whatever was in it. */
  lend(): Buffer | undefined {
    let buffer = this.free.pop();
    if (!buffer && this.lent.size < this.maxBuffers) {
      buffer = Buffer.allocUnsafeSlow(this.bufferBytes);
    }
    if (buffer) this.lent.add(buffer);
    return buffer;
  }

  /** Takes back a pooled buffer; false for one the pool did not lend. */
  giveBack(buffer: Buffer): boolean {
    if (!this.lent.delete(buffer)) return false;
    this.free.push(buffer);
    return true;
  }
}

/** One reader's buffers: pooled ones when the pool has any, else its own small ones, reused. */
export class Borrower {
  private readonly pool: BufferPool;
  private readonly spare: Buffer[] = [];
  /** Its own buffers out now; like the pool, it takes each back once. */
  private readonly out = new Set<Buffer>();

  constructor(pool: BufferPool) {
    this.pool = pool;
  }

  /** A buffer for this reader alone until it gives it back. */
  take(): Buffer {
    const pooled = this.pool.lend();
    if (pooled) return pooled;
    const own = this.spare.pop() ?? Buffer.allocUnsafeSlow(this.pool.fallbackBytes);
    this.out.add(own);
    return own;
  }

  /** The reader, and everything it handed the buffer to, must be done with it. */
  giveBack(buffer: Buffer): void {
    if (!this.pool.giveBack(buffer) && this.out.delete(buffer)) this.spare.push(buffer);
  }
}

/**
 * The buffers a blob GET reads a socket into (get-pipe.ts: S3, the node proxy's cache fills):
 * from S3, 256 KiB slices pull as fast as 1 MiB ones did (and twice as fast as 64 KiB ones),
 * and at most 16 MiB is lent out however many clients pull or stall; past that a GET reads
 * through 16 KiB buffers of its own.
 */
export const socketReadBuffers = new BufferPool({
  bufferBytes: 256 * 1024,
  maxBuffers: 64,
  fallbackBytes: 16 * 1024,
});
/**
 * The buffers a blob GET from a file reads through (the filesystem driver, the node proxy's
 * cache). Each read is a round trip to libuv's thread pool: 1 MiB reads took a 1 GiB pull from
 * tmpfs from 380 to 300 ms of CPU (CNCF distribution's figure) and from 0.85x to 0.95x of its
 * speed, against 256 KiB ones (7 alternating rounds). At most 16 MiB is lent out, as from the
 * S3 pool.
 */
export const fileReadBuffers = new BufferPool({
  bufferBytes: 1024 * 1024,
  maxBuffers: 16,
  fallbackBytes: 16 * 1024,
});
/** Chunks a blob GET has out with its client at once: one being sent while the next is read. */
export const blobGetChunksInFlight = 2;
