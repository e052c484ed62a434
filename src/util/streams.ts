import type { Readable } from 'node:stream';

/**
 * Feeds every chunk of a stream to `handle`, pausing the stream while a returned promise is
 * pending. Unlike `for await`, it never concatenates buffered chunks (the async iterator's
 * `read()` copies whatever is buffered into one new buffer), which matters at gigabytes.
 * Rejects when the stream fails or closes before its end, e.g. a client that disconnects.
 */
export function forEachChunk(
  stream: Readable,
  handle: (chunk: Buffer) => Promise<void> | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    let pendingWork: Promise<void> | undefined;
    const fail = (error: unknown): void => {
      if (failed) return;
      failed = true;
      cleanup();
      stream.resume();
      reject(error);
    };
    const onData = (chunk: Buffer): void => {
      if (failed) return;
      let pending: Promise<void> | undefined;
      try {
        pending = handle(chunk);
      } catch (error) {
        fail(error);
        return;
      }
      if (pending) {
        stream.pause();
        pendingWork = pending;
        pending.then(() => {
          if (pendingWork === pending) pendingWork = undefined;
          if (!failed) stream.resume();
        }, fail);
      }
    };
    const onEnd = (): void => {
      // `end` can arrive while the last chunk's work is still pending (a paused stream may end).
      const last = pendingWork ?? Promise.resolve();
      last.then(() => {
        if (failed) return;
        cleanup();
        resolve();
      }, fail);
    };
    const onClose = (): void => {
      if (!stream.readableEnded) fail(new Error('stream closed before its end'));
    };
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', fail);
      stream.off('close', onClose);
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', fail);
    stream.on('close', onClose);
  });
}
