import type { ServerResponse } from 'node:http';

/**
 * Writes a blob to a client holding back its last chunk until the digest is known: a blob that
 * turns out wrong ends in a cut connection, never in a complete-looking response with bad bytes.
 * A client that went away is skipped, so a fill of a cache does not depend on it.
 */
export class VerifiedSender {
  private readonly res: ServerResponse;
  private held: Buffer | undefined;
  private heldSent: (() => void) | undefined;

  constructor(res: ServerResponse) {
    this.res = res;
  }

  /**
   * Sends the chunk held back so far and holds this one; a promise to wait for when the client
   * is behind. `sent` is called once the chunk has gone to the socket, and not at all if it
   * never does (the client went away, or the blob turned out wrong).
   */
  write(chunk: Buffer, sent?: () => void): Promise<void> | undefined {
    const previous = this.held;
    const previousSent = this.heldSent;
    this.held = chunk;
    this.heldSent = sent;
    if (!previous || this.res.destroyed) return undefined;
    corkForThisTurn(this.res);
    const accepted = previousSent
      ? this.res.write(previous, (error) => {
          if (!error) previousSent();
        })
      : this.res.write(previous);
    return accepted ? undefined : drained(this.res);
  }

  finish(verified: boolean): void {
    if (this.res.destroyed) return;
    if (!verified) {
      this.res.destroy();
      return;
    }
    this.res.end(this.held);
  }
}

/**
 * Holds a response's writes until the event loop turns, so the 16 KiB chunks a TLS socket
 * delivers in one turn leave in one writev instead of one system call each.
 */
export function corkForThisTurn(res: ServerResponse): void {
  if (res.writableCorked > 0) return;
  res.cork();
  setImmediate(() => res.uncork());
}

/** How long a client may take to accept more bytes before it is dropped. */
const stalledClientMillis = 60_000;

/**
 * Resolves when the client can take more, or is gone. A client that accepts nothing for a minute
 * is cut off: a cache fill (which other pulls wait on) must not stall behind one slow reader.
 */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    const timer = setTimeout(() => {
      res.destroy();
      done();
    }, stalledClientMillis);
    res.on('drain', done);
    res.on('close', done);
  });
}
