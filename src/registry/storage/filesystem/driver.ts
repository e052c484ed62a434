import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import {
  assertStoragePath,
  PathNotFoundError,
  StorageUnavailableError,
  type FileInfo,
  type FileWriter,
  type StorageDriver,
} from '../driver.ts';

/** Reads blobs in large slices: with 64 KiB (Node's default) loopback pulls run at a third of the speed. */
const readChunkBytes = 1024 * 1024;
/** Buffers in flight per blob GET. */
const pipeRingSize = 4;
/** Small writes are gathered into one writev of about this size. */
const writeBatchBytes = 1024 * 1024;
/** Files are flushed to disk every this many bytes while uploads run, so commit has little left to sync. */
const syncEveryBytes = 64 * 1024 * 1024;

/** Temporary files live under this driver path, outside any repository. */
export const temporaryDirectory = '/_berth/tmp';

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/** How a filesystem refuses writes because of how it is set up: ownership, mode, a read-only mount. */
const notWritableCodes = new Set(['EACCES', 'EPERM', 'EROFS']);

/** The identity the kernel checks writes against; a hostPath volume ignores the pod's fsGroup. */
function processIdentity(): string {
  return `uid ${process.getuid?.() ?? '?'} (gid ${process.getgid?.() ?? '?'})`;
}

/** Stores everything as plain files under one root directory. */
export class FilesystemDriver implements StorageDriver {
  readonly name = 'filesystem';
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  private resolve(path: string): string {
    assertStoragePath(path);
    return join(this.root, path);
  }

  async stat(path: string): Promise<FileInfo | undefined> {
    try {
      const info = await stat(this.resolve(path));
      return { size: info.size, modifiedAt: info.mtime, isDirectory: info.isDirectory() };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async getContent(path: string): Promise<Buffer> {
    try {
      return await readFile(this.resolve(path));
    } catch (error) {
      if (isNotFound(error)) throw new PathNotFoundError(path);
      throw error;
    }
  }

  async putContent(path: string, content: Buffer | string): Promise<void> {
    const target = this.resolve(path);
    const temporary = this.resolve(`${temporaryDirectory}/${randomUUID()}`);
    try {
      await mkdir(dirname(temporary), { recursive: true });
      const handle = await open(temporary, 'w', 0o644);
      try {
        await handle.writeFile(content);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await this.renameInto(temporary, target);
    } catch (error) {
      throw this.writeFailure(error);
    }
  }

  async reader(
    path: string,
    range: { offset: number; end?: number } = { offset: 0 },
  ): Promise<Readable> {
    const file = this.resolve(path);
    // Open first so that a missing file is an error of this call, not of the stream.
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (error) {
      if (isNotFound(error)) throw new PathNotFoundError(path);
      throw error;
    }
    return createReadStream('', {
      fd: handle,
      start: range.offset,
      end: range.end,
      highWaterMark: readChunkBytes,
    });
  }

  async pipeTo(
    path: string,
    destination: Writable,
    range: { offset: number; end?: number } = { offset: 0 },
  ): Promise<void> {
    let handle: FileHandle;
    try {
      handle = await open(this.resolve(path), 'r');
    } catch (error) {
      if (isNotFound(error)) throw new PathNotFoundError(path);
      throw error;
    }
    try {
      const end = range.end ?? (await handle.stat()).size - 1;
      await copyRange(handle, range.offset, end, destination);
    } finally {
      await handle.close();
    }
  }

  async writer(path: string): Promise<FileWriter> {
    const file = this.resolve(path);
    let handle: FileHandle;
    try {
      await mkdir(dirname(file), { recursive: true });
      handle = await open(file, 'a', 0o644);
    } catch (error) {
      throw this.writeFailure(error);
    }
    const { size } = await handle.stat();
    return new FilesystemWriter(handle, size);
  }

  async list(path: string): Promise<string[]> {
    try {
      return await readdir(this.resolve(path));
    } catch (error) {
      if (isNotFound(error)) throw new PathNotFoundError(path);
      throw error;
    }
  }

  async move(source: string, destination: string): Promise<void> {
    try {
      await this.renameInto(this.resolve(source), this.resolve(destination));
    } catch (error) {
      if (isNotFound(error)) throw new PathNotFoundError(source);
      throw this.writeFailure(error);
    }
  }

  async delete(path: string): Promise<void> {
    const target = this.resolve(path);
    try {
      await rm(target, { recursive: true, force: true });
    } catch (error) {
      throw this.writeFailure(error);
    }
  }

  /**
   * The steps of every upload's first write: a file in the temporary directory, synced, renamed
   * (and the rename synced), then removed. A file left by a failed probe is swept with the other
   * stale temporary files at the next start.
   */
  async probe(): Promise<void> {
    const path = `${temporaryDirectory}/probe-${randomUUID()}`;
    try {
      await this.putContent(path, 'berth storage probe\n');
      await this.delete(path);
    } catch (error) {
      if (error instanceof StorageUnavailableError) throw error;
      throw new StorageUnavailableError(
        'StorageProbeFailed',
        `storage ${this.root} failed a write probe as ${processIdentity()}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /** A write refused by the filesystem's setup becomes StorageUnavailableError; others pass. */
  private writeFailure(error: unknown): unknown {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    if (code === undefined || !notWritableCodes.has(code)) return error;
    return new StorageUnavailableError(
      'StorageNotWritable',
      `storage ${this.root} is not writable by ${processIdentity()}: ${(error as Error).message}`,
      { cause: error },
    );
  }

  /** Renames, creating the target's directory when needed, and makes the rename durable. */
  private async renameInto(source: string, target: string): Promise<void> {
    try {
      await rename(source, target);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      // The target directory is missing (the source's absence surfaces again below).
      await mkdir(dirname(target), { recursive: true });
      await rename(source, target);
    }
    // Without this, a power loss can keep a link while losing the rename of what it names.
    const directory = await open(dirname(target), 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  }
}

/**
 * Copies a byte range from a file into a writable through a ring of reused buffers: no
 * allocation per chunk, and a buffer is refilled only once the destination has flushed it.
 * About twice as fast as piping a read stream (Node's HTTP/1.1 server has no sendfile).
 */
async function copyRange(
  handle: FileHandle,
  start: number,
  end: number,
  destination: Writable,
): Promise<void> {
  // A destroyed socket may drop write callbacks; its close ends every wait below.
  const closed = new Promise<void>((resolve) => destination.once('close', resolve));
  const ring = Array.from({ length: pipeRingSize }, () => ({
    buffer: Buffer.allocUnsafe(readChunkBytes),
    flushed: Promise.resolve() as Promise<unknown>,
  }));
  let position = start;
  for (let turn = 0; position <= end; turn += 1) {
    const slot = ring[turn % ring.length] as (typeof ring)[number];
    await Promise.race([slot.flushed, closed]);
    if (destination.destroyed) throw new Error('destination closed before the blob was sent');
    const length = Math.min(slot.buffer.length, end - position + 1);
    const { bytesRead } = await handle.read(slot.buffer, 0, length, position);
    if (bytesRead === 0) throw new Error('file ended before the requested range');
    position += bytesRead;
    const chunk =
      bytesRead === slot.buffer.length ? slot.buffer : slot.buffer.subarray(0, bytesRead);
    slot.flushed = new Promise((resolve) => destination.write(chunk, resolve));
    if (destination.writableNeedDrain) await Promise.race([drained(destination), closed]);
  }
  await Promise.race([Promise.all(ring.map((slot) => slot.flushed)), closed]);
}

function drained(destination: Writable): Promise<void> {
  return new Promise((resolve) => destination.once('drain', resolve));
}

/**
 * Appends through a file handle in batches: chunks from a socket (16-64 KiB) are gathered into
 * one writev of about a mebibyte, with at most one write in flight, so hashing the next chunks
 * overlaps with the disk.
 */
class FilesystemWriter implements FileWriter {
  private readonly handle: FileHandle;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private inFlight: Promise<void> | undefined;
  private failure: unknown;
  private written: number;
  private unsynced = 0;
  private buffered = 0;

  constructor(handle: FileHandle, size: number) {
    this.handle = handle;
    this.written = size;
  }

  get size(): number {
    return this.written + this.buffered;
  }

  write(chunk: Buffer): Promise<void> | undefined {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    this.buffered += chunk.length;
    if (this.batchBytes < writeBatchBytes) return undefined;
    if (!this.inFlight) {
      this.startWrite();
      return undefined;
    }
    return this.inFlight.then(() => {
      if (this.failure !== undefined) throw this.failure;
      if (this.batchBytes >= writeBatchBytes && !this.inFlight) this.startWrite();
    });
  }

  private startWrite(): void {
    const buffers = this.batch;
    const bytes = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    this.inFlight = this.writeAll(buffers, bytes).then(
      () => {
        this.written += bytes;
        this.buffered -= bytes;
        this.inFlight = undefined;
      },
      (error: unknown) => {
        this.failure = error;
        this.inFlight = undefined;
      },
    );
  }

  private async writeAll(buffers: Buffer[], bytes: number): Promise<void> {
    let remaining = buffers;
    let left = bytes;
    while (left > 0) {
      const { bytesWritten } = await this.handle.writev(remaining);
      left -= bytesWritten;
      if (left > 0) remaining = dropBytes(remaining, bytesWritten);
    }
    this.unsynced += bytes;
    if (this.unsynced >= syncEveryBytes) {
      this.unsynced = 0;
      await this.handle.datasync();
    }
  }

  async flush(): Promise<void> {
    // A write started by the continuation of an earlier `write()` may begin while this waits.
    while (this.inFlight || (this.batchBytes > 0 && this.failure === undefined)) {
      if (this.inFlight) await this.inFlight;
      else this.startWrite();
    }
    if (this.failure !== undefined) throw this.failure;
  }

  async truncate(size: number): Promise<void> {
    while (this.inFlight) await this.inFlight;
    this.batch = [];
    this.batchBytes = 0;
    this.buffered = 0;
    this.failure = undefined;
    await this.handle.truncate(size);
    this.written = size;
  }

  async commit(): Promise<void> {
    await this.flush();
    await this.handle.sync();
    this.unsynced = 0;
  }

  async close(): Promise<void> {
    if (this.inFlight) await this.inFlight.catch(() => undefined);
    await this.handle.close();
  }
}

function dropBytes(buffers: Buffer[], count: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = count;
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return rest;
}
