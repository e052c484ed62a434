import { createHash, randomUUID, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { noteTransientBytes } from '../../util/memory.ts';
import { forEachChunk } from '../../util/streams.ts';
import { OciError } from '../errors.ts';
import type { Digest, DigestAlgorithm } from '../reference.ts';
import { PathNotFoundError, type FileWriter, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { BlobService } from './blobs.ts';
import { listOrEmpty } from './links.ts';
import { walkRepositories } from './repositories.ts';

const uploadIdPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Open writers are closed after this long without a request, to bound file handles. */
const idleSessionMillis = 60_000;
/** Open upload writers kept at most; a closed one is reopened (and its hash rebuilt) on use. */
const maxOpenSessions = 256;

/** What a chunk must satisfy; both are optional, as docker streams PATCH bodies with neither. */
export interface ChunkExpectation {
  /** Offset the chunk starts at (Content-Range); must equal the upload's size. */
  readonly start?: number;
  /** Exact number of bytes the chunk carries (Content-Length or Content-Range). */
  readonly length?: number;
}

/**
 * An upload being written by this process. The running hash lets a chunked upload finish without
 * re-reading its data; when it is missing (another replica wrote the last chunk, this process
 * restarted, or a chunk was rolled back) the data is hashed again from storage.
 */
interface Session {
  readonly key: string;
  writer: FileWriter;
  hash: Hash | undefined;
  busy: boolean;
  /** Resolves when the request holding the session lets go of it. */
  settled: Promise<void>;
  settle: () => void;
  lastUsed: number;
}

/**
 * Blob upload sessions. State lives in storage (`_uploads/<id>`), so any replica, or this one
 * after a restart, can continue an upload; a chunk that fails part way is cut back off, so the
 * upload's size is always the sum of acknowledged chunks.
 */
export class UploadService {
  private readonly driver: StorageDriver;
  private readonly blobs: BlobService;
  private readonly sessions = new Map<string, Session>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(driver: StorageDriver, blobs: BlobService) {
    this.driver = driver;
    this.blobs = blobs;
    this.sweeper = setInterval(() => void this.closeIdleSessions(), idleSessionMillis).unref();
  }

  async start(repository: string): Promise<string> {
    const id = randomUUID();
    await this.driver.putContent(paths.uploadStartedAt(repository, id), new Date().toISOString());
    return id;
  }

  /**
   * Bytes acknowledged so far. While a request holds the upload its last chunk may still be cut
   * back, so the answer waits for that request to finish.
   */
  async status(repository: string, id: string): Promise<number> {
    for (
      let session = this.sessions.get(sessionKey(repository, id));
      session;
      session = this.sessions.get(sessionKey(repository, id))
    ) {
      if (!session.busy) return session.writer.size;
      await session.settled;
    }
    await this.assertExists(repository, id);
    const info = await this.driver.stat(paths.uploadData(repository, id));
    return info?.size ?? 0;
  }

  /** Appends a chunk; returns the upload's new size and the chunk's length. */
  async append(
    repository: string,
    id: string,
    body: Readable,
    expect: ChunkExpectation = {},
  ): Promise<{ size: number; received: number }> {
    const session = await this.acquire(repository, id);
    try {
      const received = await this.receive(session, body, expect);
      return { size: session.writer.size, received };
    } finally {
      this.release(session);
    }
  }

  /**
   * Finishes an upload with an optional last chunk, verifies the digest over everything received
   * and moves the content into place. A wrong digest cancels the upload, and so does a failure
   * after the digest was verified (storage refusing the move or the link): the client starts
   * again, and the upload's bytes do not wait for the purge.
   */
  async complete(
    repository: string,
    id: string,
    digest: Digest,
    body?: Readable,
    expect: ChunkExpectation = {},
  ): Promise<void> {
    const session = await this.acquire(repository, id);
    let finished = false;
    try {
      if (body) await this.receive(session, body, expect);
      await session.writer.commit();
      const computed = await this.digestOf(session, repository, id, digest.algorithm);
      finished = true;
      if (computed !== digest.hex) {
        await this.discard(session, repository, id);
        throw new OciError('DIGEST_INVALID', 'provided digest did not match uploaded content', {
          detail: { digest: digest.value },
        });
      }
      // The session stays in the map, busy, until the upload directory is gone: a concurrent
      // PATCH must not reopen the data file while it is being renamed into a shared blob.
      try {
        await session.writer.close();
        if (!(await this.blobs.exists(digest))) {
          await this.driver.move(paths.uploadData(repository, id), paths.blobData(digest));
        }
        await this.blobs.link(repository, digest);
      } catch (error) {
        // What failed is the answer; storage that also refuses this leaves it for the purge.
        await this.driver.delete(paths.uploadDirectory(repository, id)).catch(() => undefined);
        throw error;
      }
      await this.driver.delete(paths.uploadDirectory(repository, id));
    } finally {
      if (finished) {
        // Committed, discarded or failed past the point of return: the session is over.
        this.sessions.delete(session.key);
        session.settle();
      } else {
        this.release(session);
      }
    }
  }

  async cancel(repository: string, id: string): Promise<void> {
    const session = await this.acquire(repository, id);
    await this.discard(session, repository, id);
  }

  /**
   * Removes uploads started before `startedBefore` that no request in this process is using.
   * Returns how many were removed.
   */
  async purge(startedBefore: Date): Promise<number> {
    let removed = 0;
    for await (const repository of walkRepositories(this.driver)) {
      for (const id of await listOrEmpty(this.driver, paths.uploadsRoot(repository))) {
        if (this.sessions.get(sessionKey(repository, id))?.busy) continue;
        const startedAt = await this.startedAt(repository, id);
        if (startedAt !== undefined && startedAt >= startedBefore) continue;
        const session = this.sessions.get(sessionKey(repository, id));
        if (session) await this.drop(session);
        await this.driver.delete(paths.uploadDirectory(repository, id));
        removed += 1;
      }
    }
    return removed;
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(sessions.map((session) => session.writer.close().catch(() => undefined)));
  }

  private async startedAt(repository: string, id: string): Promise<Date | undefined> {
    try {
      const text = (await this.driver.getContent(paths.uploadStartedAt(repository, id))).toString(
        'utf8',
      );
      const date = new Date(text.trim());
      return Number.isNaN(date.getTime()) ? undefined : date;
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined;
      throw error;
    }
  }

  private async receive(
    session: Session,
    body: Readable,
    expect: ChunkExpectation,
  ): Promise<number> {
    const before = session.writer.size;
    if (expect.start !== undefined && expect.start !== before) {
      throw new OciError('RANGE_INVALID', `chunk must start at offset ${before}`, {
        detail: { expected: before, received: expect.start },
      });
    }
    let received = 0;
    try {
      await forEachChunk(body, (chunk) => {
        received += chunk.length;
        if (expect.length !== undefined && received > expect.length) {
          throw new OciError('SIZE_INVALID', 'chunk is longer than declared', {
            detail: { declared: expect.length },
          });
        }
        session.hash?.update(chunk);
        noteTransientBytes(chunk.length);
        return session.writer.write(chunk);
      });
      await session.writer.flush();
      if (expect.length !== undefined && received !== expect.length) {
        throw new OciError('SIZE_INVALID', 'chunk is shorter than declared', {
          detail: { declared: expect.length, received },
        });
      }
      return received;
    } catch (error) {
      // The running hash has seen bytes that are now cut off, so a resumed upload is hashed from
      // storage anyway: close the session, so a client that failed its chunk (a slow body cut
      // off, say) holds no file open. If storage refused the cut too (it went read-only), the
      // unacknowledged tail fails the next request's range or digest check.
      await session.writer.truncate(before).catch(() => undefined);
      await this.drop(session);
      throw error;
    }
  }

  private async digestOf(
    session: Session,
    repository: string,
    id: string,
    algorithm: DigestAlgorithm,
  ): Promise<string> {
    if (algorithm === 'sha256' && session.hash) {
      const hex = session.hash.digest('hex');
      session.hash = undefined;
      return hex;
    }
    return (await this.hashStored(repository, id, algorithm, session.writer.size)).digest('hex');
  }

  /** Hashes the first `size` bytes of an upload from storage. */
  private async hashStored(
    repository: string,
    id: string,
    algorithm: DigestAlgorithm,
    size: number,
  ): Promise<Hash> {
    const hash = createHash(algorithm);
    if (size > 0) {
      const stream = await this.driver.reader(paths.uploadData(repository, id), {
        offset: 0,
        end: size - 1,
      });
      for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
    }
    return hash;
  }

  private async acquire(repository: string, id: string): Promise<Session> {
    if (!uploadIdPattern.test(id)) throw uploadUnknown(id);
    const key = sessionKey(repository, id);
    let session = this.sessions.get(key);
    if (!session) {
      await this.assertExists(repository, id);
      const writer = await this.driver.writer(paths.uploadData(repository, id));
      // Another request may have opened it while this one waited on storage.
      const raced = this.sessions.get(key);
      if (raced) {
        await writer.close();
        session = raced;
      } else {
        // A resumed upload is hashed from storage only when it completes, so that neither a
        // DELETE nor a racing first PATCH pays for reading it here.
        const hash = writer.size === 0 ? createHash('sha256') : undefined;
        session = {
          key,
          writer,
          hash,
          busy: false,
          settled: Promise.resolve(),
          settle: () => undefined,
          lastUsed: Date.now(),
        };
        this.sessions.set(key, session);
        await this.closeExcessSessions();
      }
    }
    if (session.busy) {
      throw new OciError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload', {
        detail: { id },
      });
    }
    session.busy = true;
    session.settled = new Promise((resolve) => (session.settle = resolve));
    session.lastUsed = Date.now();
    return session;
  }

  /** Forgets a session and closes its writer, keeping the upload's files. */
  private async drop(session: Session): Promise<void> {
    this.sessions.delete(session.key);
    await session.writer.close().catch(() => undefined);
  }

  private release(session: Session): void {
    session.busy = false;
    session.lastUsed = Date.now();
    session.settle();
  }

  private async discard(session: Session, repository: string, id: string): Promise<void> {
    this.sessions.delete(session.key);
    session.settle();
    await session.writer.close();
    await this.driver.delete(paths.uploadDirectory(repository, id));
  }

  private async assertExists(repository: string, id: string): Promise<void> {
    if (!uploadIdPattern.test(id)) throw uploadUnknown(id);
    const info = await this.driver.stat(paths.uploadStartedAt(repository, id));
    if (!info) throw uploadUnknown(id);
  }

  private async closeIdleSessions(): Promise<void> {
    const cutoff = Date.now() - idleSessionMillis;
    for (const session of [...this.sessions.values()]) {
      if (session.busy || session.lastUsed > cutoff) continue;
      await this.drop(session);
    }
  }

  /** Bounds open file handles: past the cap, the least recently used idle sessions are closed. */
  private async closeExcessSessions(): Promise<void> {
    if (this.sessions.size <= maxOpenSessions) return;
    const idle = [...this.sessions.values()]
      .filter((session) => !session.busy)
      .sort((a, b) => a.lastUsed - b.lastUsed);
    for (const session of idle.slice(0, this.sessions.size - maxOpenSessions)) {
      await this.drop(session);
    }
  }
}

function sessionKey(repository: string, id: string): string {
  return `${repository}\u0000${id}`;
}

function uploadUnknown(id: string): OciError {
  return new OciError('BLOB_UPLOAD_UNKNOWN', undefined, { detail: { id } });
}
