import { createHash, randomUUID, type Hash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { noteTransientBytes } from '../../util/memory.ts';
import { forEachChunk } from '../../util/streams.ts';
import { OciError } from '../errors.ts';
import type { Digest, DigestAlgorithm } from '../reference.ts';
import { PathNotFoundError, type FileWriter, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { BlobService } from './blobs.ts';
import { listOrEmpty } from './links.ts';
import { budgetExhausted, type StorageQuotas } from './quotas.ts';
import { walkRepositories } from './repositories.ts';

const uploadIdPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Open writers are closed after this long without a request, to bound file handles. */
const idleSessionMillis = 60_000;
/** Open upload writers kept at most; a closed one is reopened (and its hash rebuilt) on use. */
const maxOpenSessions = 256;
/**
 * How long a chunk claim on shared storage stays its holder's without renewal. A holder renews
 * every sixth of it while its request writes and stops writing once half of it has passed since
 * its last renewal; another request may take the offset over once a whole lease has passed, so
 * the clocks of replicas must agree to well within half a lease, and a storage write must land
 * within half a lease of being sent.
 */
export const defaultClaimLeaseMillis = 30_000;

export interface UploadServiceOptions {
  /** See `defaultClaimLeaseMillis`. */
  readonly claimLeaseMillis?: number;
}

/**
 * A claim on `_uploads/<id>/chunks/<offset>` (generation 0) or `chunks/<offset>.<n>` (a takeover),
 * held by this request. While held it is renewed by rewriting its key with the time.
 */
interface Claim {
  readonly offset: number;
  readonly generation: number;
  /** Generation 0's key, which the later ones suffix. */
  readonly base: string;
  readonly path: string;
  /** `performance.now()` when the last renewal that found no taker started. */
  renewedAt: number;
  /** A later generation exists: another request took the offset over. */
  lost: boolean;
  renewal: NodeJS.Timeout | undefined;
  renewing: Promise<void>;
}

/** What a chunk must satisfy; both are optional, as docker streams PATCH bodies with neither. */
export interface ChunkExpectation {
  /** Offset the chunk starts at (Content-Range); must equal the upload's size. */
  readonly start?: number;
  /** Exact number of bytes the chunk carries (Content-Length or Content-Range). */
  readonly length?: number;
}

/**
 * An upload being written by this process. The running hash lets a chunked upload finish without
 * re-reading its data; when it is missing (this process restarted, or a chunk was rolled back)
 * the data is hashed again from storage, and when it lags (another replica wrote the last
 * chunks) only the bytes it has not seen are read.
 */
interface Session {
  readonly key: string;
  readonly repository: string;
  readonly id: string;
  writer: FileWriter;
  hash: Hash | undefined;
  /** Bytes `hash` has seen: always the first ones of the upload. */
  hashedBytes: number;
  /** The offset this request has claimed in shared storage (see `claim`). */
  claim: Claim | undefined;
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
 *
 * On shared storage (`StorageDriver.shared`) a writer is opened from storage for each request and
 * closed after it, since another replica may append in between; only the running hash is kept
 * between requests. Who may change an upload from a given size is decided in storage: each
 * change claims `_uploads/<id>/chunks/<offset>` with `createContent`, so of two requests at one
 * offset, in any processes, one writes and the other is answered RANGE_INVALID (416).
 */
export class UploadService {
  private readonly driver: StorageDriver;
  private readonly blobs: BlobService;
  private readonly sessions = new Map<string, Session>();
  /** Shared storage only: running hashes of uploads no request holds, oldest first. */
  private readonly keptHashes = new Map<string, { hash: Hash; bytes: number }>();
  private readonly shared: boolean;
  private readonly sweeper: NodeJS.Timeout;
  private readonly leaseMillis: number;
  /** Quotas and registry-wide limits every upload is held to; none when unset. */
  quotas: StorageQuotas | undefined;

  constructor(driver: StorageDriver, blobs: BlobService, options: UploadServiceOptions = {}) {
    this.driver = driver;
    this.blobs = blobs;
    this.shared = driver.shared === true;
    this.leaseMillis = options.claimLeaseMillis ?? defaultClaimLeaseMillis;
    this.sweeper = setInterval(() => void this.closeIdleSessions(), idleSessionMillis).unref();
  }

  /** Refused with STORAGE_FULL while a registry-wide limit stops pushes. */
  async start(repository: string): Promise<string> {
    await this.quotas?.writeBudget();
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
      if (!session.busy) {
        if (this.shared) break; // its writer may lag what another replica appended
        return session.writer.size;
      }
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
      await this.release(session);
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
      // The commit is a change at the final size: no chunk may land there meanwhile.
      await this.claim(session, session.writer.size);
      await this.confirmClaim(session);
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
        const store = async (): Promise<void> => {
          if (!(await this.blobs.exists(digest))) {
            await this.driver.move(paths.uploadData(repository, id), paths.blobData(digest));
          }
          await this.blobs.link(repository, digest);
        };
        // Past a quota or limit the upload is discarded below, so it leaves nothing behind.
        if (this.quotas) {
          await this.quotas.admit(repository, [{ digest, size: session.writer.size }], store);
        } else {
          await store();
        }
      } catch (error) {
        // What failed is the answer; storage that also refuses this leaves it for the purge.
        await this.driver.delete(paths.uploadDirectory(repository, id)).catch(() => undefined);
        throw error;
      }
      await this.driver.delete(paths.uploadDirectory(repository, id));
    } finally {
      if (finished) {
        // Committed, discarded or failed past the point of return: the session is over, and its
        // claim goes with the upload's directory.
        await this.forgetClaim(session);
        this.sessions.delete(session.key);
        this.keptHashes.delete(session.key);
        session.settle();
      } else {
        await this.release(session);
      }
    }
  }

  async cancel(repository: string, id: string): Promise<void> {
    const session = await this.acquire(repository, id);
    try {
      // Refused while another replica writes at the current size.
      await this.claim(session, session.writer.size);
    } catch (error) {
      await this.release(session);
      throw error;
    }
    await this.discard(session, repository, id);
  }

  /**
   * Removes uploads with no activity since `inactiveSince` that no request in this process is
   * using. Activity is the start or the last chunk stored (on shared storage by any replica), so
   * an upload another replica is still writing is kept. Returns how many were removed.
   */
  async purge(inactiveSince: Date): Promise<number> {
    let removed = 0;
    for await (const repository of walkRepositories(this.driver)) {
      for (const id of await listOrEmpty(this.driver, paths.uploadsRoot(repository))) {
        if (this.sessions.get(sessionKey(repository, id))?.busy) continue;
        const activeAt = await this.lastActivity(repository, id);
        if (activeAt !== undefined && activeAt >= inactiveSince) continue;
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

  /** The later of the upload's start and its data's last write; undefined without a start. */
  private async lastActivity(repository: string, id: string): Promise<Date | undefined> {
    const startedAt = await this.startedAt(repository, id);
    if (startedAt === undefined) return undefined;
    const data = await this.driver.stat(paths.uploadData(repository, id));
    return data && data.modifiedAt > startedAt ? data.modifiedAt : startedAt;
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
    // A chunk that would take storage past a registry-wide limit is cut off where it would.
    const budget = (await this.quotas?.writeBudget()) ?? Number.POSITIVE_INFINITY;
    await this.claim(session, before);
    // A hash that lags the upload (another replica appended) cannot follow this chunk.
    if (session.hashedBytes !== before) session.hash = undefined;
    let received = 0;
    try {
      await forEachChunk(body, (chunk) => {
        received += chunk.length;
        if (expect.length !== undefined && received > expect.length) {
          throw new OciError('SIZE_INVALID', 'chunk is longer than declared', {
            detail: { declared: expect.length },
          });
        }
        if (received > budget) throw budgetExhausted(budget);
        // A part starts uploading only inside `write`, so none starts once the claim may be lost.
        this.assertClaimHeld(session);
        session.hash?.update(chunk);
        noteTransientBytes(chunk.length);
        return session.writer.write(chunk);
      });
      if (expect.length !== undefined && received !== expect.length) {
        throw new OciError('SIZE_INVALID', 'chunk is shorter than declared', {
          detail: { declared: expect.length, received },
        });
      }
      // The flush records the chunk as part of the upload: only while no one took it over.
      await this.confirmClaim(session);
      await session.writer.flush();
      session.hashedBytes = session.writer.size;
      // A claim on bytes written is spent and stays, so that offset is never written again; an
      // empty chunk's is still held, for a commit at the same offset or to be given back.
      if (received > 0) await this.forgetClaim(session);
      return received;
    } catch (error) {
      // The running hash has seen bytes that are now cut off, so a resumed upload is hashed from
      // storage anyway: close the session, so a client that failed its chunk (a slow body cut
      // off, say) holds no file open. If storage refused the cut too (it went read-only), the
      // unacknowledged tail fails the next request's range or digest check.
      const cut = await session.writer.truncate(before).then(
        () => true,
        () => false,
      );
      // Once cut back, the offset is free again for the client's retry.
      if (cut) await this.unclaim(session);
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
    const size = session.writer.size;
    const running = algorithm === 'sha256' ? session.hash : undefined;
    session.hash = undefined;
    if (running && session.hashedBytes <= size) {
      // Only what other replicas appended is read back.
      await this.hashStored(repository, id, running, session.hashedBytes, size);
      return running.digest('hex');
    }
    const hash = createHash(algorithm);
    await this.hashStored(repository, id, hash, 0, size);
    return hash.digest('hex');
  }

  /** Feeds bytes `from`..`size - 1` of a committed upload, streamed from storage, to `hash`. */
  private async hashStored(
    repository: string,
    id: string,
    hash: Hash,
    from: number,
    size: number,
  ): Promise<void> {
    if (from >= size) return;
    const stream = await this.driver.reader(paths.uploadData(repository, id), {
      offset: from,
      end: size - 1,
    });
    for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
  }

  /**
   * Shared storage only: makes this request the one that changes the upload from `offset`, or
   * throws RANGE_INVALID when another request (in any replica) already has. A replica that read
   * the size before another appended can therefore never write over the appended bytes. A claim
   * stays once bytes were written under it; one whose change was undone or never made is given
   * back (`unclaim`) when the request ends.
   *
   * A claim whose holder stopped renewing it for a whole lease (its replica died, say) is taken
   * over by creating the next generation's key, `chunks/<offset>.<n>`, so of two takers one wins;
   * the taker then rereads the upload's state from storage, since the holder may have stored its
   * chunk before it stopped. A holder checks before each part and before storing its chunk that
   * it still holds the claim (`assertClaimHeld`, `confirmClaim`). Parts a dead holder uploaded
   * beyond the stored state are overwritten by the taker's, or left out when the upload is
   * completed, which lists only the parts in the state.
   */
  private async claim(session: Session, offset: number): Promise<void> {
    if (!this.shared || session.claim?.offset === offset) return;
    await this.forgetClaim(session);
    const path = claimPath(session.repository, session.id, offset);
    let generation = 0;
    if (!(await this.driver.createContent(path, new Date().toISOString()))) {
      generation = await this.takeOver(session, offset);
    }
    const claim: Claim = {
      offset,
      generation,
      base: path,
      path: generationPath(path, generation),
      renewedAt: performance.now(),
      lost: false,
      renewal: undefined,
      renewing: Promise.resolve(),
    };
    session.claim = claim;
    claim.renewal = setInterval(() => {
      claim.renewing = claim.renewing.then(() => this.renew(claim));
    }, this.leaseMillis / 6).unref();
    try {
      // An upload completed or cancelled while this request waited is not written again.
      await this.assertExists(session.repository, session.id);
      if (generation > 0) {
        // The holder may have stored its chunk (or more) before it stopped renewing.
        await session.writer.close();
        session.writer = await this.driver.writer(paths.uploadData(session.repository, session.id));
        if (session.writer.size !== offset) throw rangeTaken(offset);
      }
    } catch (error) {
      await this.unclaim(session);
      throw error;
    }
  }

  /**
   * Takes `offset` over from a holder whose lease ran out; returns the new generation, or throws
   * RANGE_INVALID while the latest holder's lease runs or when another taker won.
   */
  private async takeOver(session: Session, offset: number): Promise<number> {
    const directory = `${paths.uploadDirectory(session.repository, session.id)}/chunks`;
    const pattern = new RegExp(`^${offset}(?:\\.(\\d+))?$`);
    let latest = -1;
    for (const name of await listOrEmpty(this.driver, directory)) {
      const match = pattern.exec(name);
      if (match) latest = Math.max(latest, Number(match[1] ?? 0));
    }
    // The holder gave the claim back meanwhile: the caller may try again.
    if (latest < 0) throw rangeTaken(offset);
    const base = claimPath(session.repository, session.id, offset);
    const renewed = await this.driver
      .getContent(generationPath(base, latest))
      .then((bytes) => new Date(bytes.toString('utf8').trim()).getTime())
      .catch(() => Number.NaN);
    if (!(Date.now() - renewed > this.leaseMillis)) throw rangeTaken(offset);
    const generation = latest + 1;
    if (
      !(await this.driver.createContent(generationPath(base, generation), new Date().toISOString()))
    ) {
      throw rangeTaken(offset);
    }
    return generation;
  }

  /**
   * Rewrites the claim's key with the time, then looks for a taker; the claim counts as renewed
   * from when this started, and only if no later generation exists.
   */
  private async renew(claim: Claim): Promise<void> {
    if (claim.renewal === undefined || claim.lost) return;
    const started = performance.now();
    try {
      await this.driver.putContent(claim.path, new Date().toISOString());
      if (await this.takenOver(claim)) claim.lost = true;
      else claim.renewedAt = started;
    } catch {
      // Storage refused: the lease runs out unless a later renewal gets through.
    }
  }

  private async takenOver(claim: Claim): Promise<boolean> {
    const next = generationPath(claim.base, claim.generation + 1);
    return this.driver.getContent(next).then(
      () => true,
      (error: unknown) => {
        if (error instanceof PathNotFoundError) return false;
        throw error;
      },
    );
  }

  /** Throws unless the request's claim (if any) is held by its own clock: no storage request. */
  private assertClaimHeld(session: Session): void {
    const claim = session.claim;
    if (!claim) return;
    if (claim.lost || performance.now() - claim.renewedAt > this.leaseMillis / 2) {
      throw new OciError('RANGE_INVALID', `lost the claim on offset ${claim.offset}`, {
        detail: { offset: claim.offset },
      });
    }
  }

  /** `assertClaimHeld`, and storage shows no taker. */
  private async confirmClaim(session: Session): Promise<void> {
    const claim = session.claim;
    if (!claim) return;
    this.assertClaimHeld(session);
    if (await this.takenOver(claim)) claim.lost = true;
    this.assertClaimHeld(session);
  }

  /** Stops renewing the claim and forgets it, leaving its key. */
  private async forgetClaim(session: Session): Promise<Claim | undefined> {
    const claim = session.claim;
    if (!claim) return undefined;
    session.claim = undefined;
    clearInterval(claim.renewal);
    claim.renewal = undefined;
    await claim.renewing;
    return claim;
  }

  /**
   * Gives the claim back. A claim that may have been taken over keeps its key: with generation 0
   * gone, a new request could claim the offset beside the taker.
   */
  private async unclaim(session: Session): Promise<void> {
    const claim = await this.forgetClaim(session);
    if (!claim || claim.lost || performance.now() - claim.renewedAt > this.leaseMillis / 2) return;
    await this.driver.delete(claim.path).catch(() => undefined);
  }

  private async acquire(repository: string, id: string): Promise<Session> {
    if (!uploadIdPattern.test(id)) throw uploadUnknown(id);
    const key = sessionKey(repository, id);
    // On shared storage a session lives only as long as its request (see `release`).
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
        const kept = this.keptHashes.get(key);
        this.keptHashes.delete(key);
        const running =
          writer.size === 0
            ? { hash: createHash('sha256'), bytes: 0 }
            : kept && kept.bytes <= writer.size
              ? kept
              : undefined;
        session = {
          key,
          repository,
          id,
          writer,
          hash: running?.hash,
          hashedBytes: running?.bytes ?? 0,
          claim: undefined,
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

  /**
   * Ends a request's hold on a session, giving back a claim it did not spend. On shared storage
   * the writer is closed (the next request, here or in another replica, reopens it from storage)
   * and only the running hash is kept.
   */
  private async release(session: Session): Promise<void> {
    await this.unclaim(session);
    if (this.shared) {
      this.sessions.delete(session.key);
      if (session.hash) this.keepHash(session.key, session.hash, session.hashedBytes);
      await session.writer.close().catch(() => undefined);
    }
    session.busy = false;
    session.lastUsed = Date.now();
    session.settle();
  }

  /** Keeps at most `maxOpenSessions` hashes, forgetting the oldest. */
  private keepHash(key: string, hash: Hash, bytes: number): void {
    this.keptHashes.delete(key);
    this.keptHashes.set(key, { hash, bytes });
    for (const oldest of this.keptHashes.keys()) {
      if (this.keptHashes.size <= maxOpenSessions) break;
      this.keptHashes.delete(oldest);
    }
  }

  private async discard(session: Session, repository: string, id: string): Promise<void> {
    await this.forgetClaim(session);
    this.sessions.delete(session.key);
    this.keptHashes.delete(session.key);
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

/** Marks who changes an upload from `offset` on shared storage; removed with the upload. */
function claimPath(repository: string, id: string, offset: number): string {
  return `${paths.uploadDirectory(repository, id)}/chunks/${offset}`;
}

/** The key of a claim's generation: the first has the plain offset, takeovers a suffix. */
function generationPath(path: string, generation: number): string {
  return generation === 0 ? path : `${path}.${generation}`;
}

function rangeTaken(offset: number): OciError {
  return new OciError('RANGE_INVALID', `another request has written at offset ${offset}`, {
    detail: { offset },
  });
}

function sessionKey(repository: string, id: string): string {
  return `${repository}\u0000${id}`;
}

function uploadUnknown(id: string): OciError {
  return new OciError('BLOB_UPLOAD_UNKNOWN', undefined, { detail: { id } });
}
