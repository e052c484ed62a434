/**
 * Gathers the small chunks a socket delivers (16 KiB records off TLS) into batches of
 * `batchBytes` before they are hashed, queued for a file and sent on: each chunk costs a hash
 * call, a queued write and a stream write, and at 16 KiB those per-chunk costs were a large
 * part of a cache fill's CPU, against one copy of the bytes here. A full batch given back with
 * `release` is filled again: a fresh buffer per batch cost page faults on the copy and garbage
 * collections for the memory it held (a fifth of a fill's CPU). One that is never given back
 * is only garbage; the batches hold no other reference to it.
 */
export class ChunkBatches {
  private readonly batchBytes: number;
  private readonly free: Buffer[] = [];
  private batch: Buffer;
  private filled = 0;

  constructor(batchBytes: number) {
    this.batchBytes = batchBytes;
    this.batch = this.next();
  }

  /** Takes back a batch nothing reads any more; the end's partial batch is not taken. */
  release(batch: Buffer): void {
    if (batch.length === this.batchBytes) this.free.push(batch);
  }

  private next(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.batchBytes);
  }

  /** Copies `chunk` in; returns the batches it completed, oldest first (usually none). */
  add(chunk: Buffer): Buffer[] {
    const full: Buffer[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      const copied = chunk.copy(this.batch, this.filled, offset);
      this.filled += copied;
      offset += copied;
      if (this.filled === this.batchBytes) {
        full.push(this.batch);
        this.batch = this.next();
        this.filled = 0;
      }
    }
    return full;
  }

  /** A copy of what is gathered and not yet handed off; undefined when nothing is. */
  rest(): Buffer | undefined {
    if (this.filled === 0) return undefined;
    const rest = Buffer.from(this.batch.subarray(0, this.filled));
    this.filled = 0;
    return rest;
  }
}
