import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { ChunkBatches } from '../util/chunk-batches.ts';
import type { VerifiedSender } from '../util/client-writes.ts';
import type { CacheWriter } from './blob-cache.ts';

/** The registry's 16 KiB TLS records are hashed, cached and sent in batches of this size. */
const batchBytes = 1 << 20;
/** A batch that has not filled within this long goes out as it is: a slow registry's bytes do not wait. */
const partialBatchMillis = 20;

/**
 * Where a cache fill's bytes go as the registry sends them: gathered into batches, each hashed,
 * queued for the cache file (once `cacheInto` named one) and sent to the client. Every write is
 * copied before it returns, so the reader may reuse its buffer once the write is called back,
 * which waits only while the disk or the client is behind.
 */
export class FillSink extends Writable {
  /** Bytes written so far. */
  received = 0;
  private readonly client: VerifiedSender;
  private readonly hash = createHash('sha256');
  private readonly batches = new ChunkBatches(batchBytes);
  private writer: CacheWriter | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(client: VerifiedSender) {
    super();
    this.client = client;
  }

  /** From now on, batches are also written into `writer`. */
  cacheInto(writer: CacheWriter): void {
    this.writer = writer;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error) => void) {
    this.received += chunk.length;
    const waits = this.batches
      .add(chunk)
      .map((batch) => this.forward(batch))
      .filter((wait) => wait !== undefined);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      const rest = this.batches.rest();
      if (rest) void this.forward(rest);
    }, partialBatchMillis);
    if (waits.length === 0) callback();
    else Promise.all(waits).then(() => callback(), callback);
  }

  /** Sends on what is still gathered; resolves with the digest of every byte written. */
  async complete(): Promise<string> {
    this.stop();
    const rest = this.batches.rest();
    if (rest) await this.forward(rest);
    return `sha256:${this.hash.digest('hex')}`;
  }

  /** No more batches go out (the fill failed). */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Hashes, caches and sends one batch; a promise when the disk or the client is behind. The
   * batch is filled again once both the file and the socket have it.
   */
  private forward(batch: Buffer): Promise<void> | undefined {
    this.hash.update(batch);
    let readers = this.writer ? 2 : 1;
    const done = (): void => {
      readers -= 1;
      if (readers === 0) this.batches.release(batch);
    };
    const disk = this.writer?.write(batch, done);
    const network = this.client.write(batch, done);
    if (!disk) return network;
    return network ? Promise.all([disk, network]).then(() => undefined) : disk;
  }
}
