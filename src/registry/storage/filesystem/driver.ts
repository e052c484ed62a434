import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { copyFileRange } from '../../../util/file-range.ts';
import {
  assertStoragePath,
  PathNotFoundError,
  StorageUnavailableError,
  type FileInfo,
  type FileWriter,
  type StorageDriver,
} from '../driver.ts';

/** Read streams read in large slices: 64 KiB (Node's default) runs at a third of the speed. */
const readChunkBytes = 1024 * 1024;
/** Small writes are gathered into one writev of about this size. */
const writeBatchBytes = 1024 * 1024;
/** Files are flushed to disk every this many bytes while uploads run, so commit has little left to sync. */
const syncEveryBytes = 64 * 1024 * 1024;

/** Temporary files live under this driver path, outside any repository. */
export const temporaryDirectory = '/_berth/tmp';

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** Absent: no such entry, or a path that goes on below a file (`/file/below`), as S3 has it too. */
function isNotFound(error: unknown): boolean {
  const code = errnoCode(error);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** How a filesystem refuses writes because of how it is set up: ownership, mode, a read-only mount. */
const notWritableCodes = new Set(['EACCES', 'EPERM', 'EROFS']);
/** How it refuses them for want of room: no blocks or inodes left, or a quota reached. */
const fullCodes = new Set(['ENOSPC', 'EDQUOT']);

/** The identity the kernel checks writes against; a hostPath volume ignores the pod's fsGroup. */
function processIdentity(): string {
  return `uid ${process.getuid?.() ?? '?'} (gid ${process.getgid?.() ?? '?'})`;
}

/**
 * A write the filesystem refused by its setup or for want of room becomes
 * StorageUnavailableError, naming the storage; any other error passes unchanged.
 */
function writeFailure(root: string, error: unknown): unknown {
  const code = errnoCode(error);
  const cause = (error as Error | undefined)?.message;
  if (code !== undefined && notWritableCodes.has(code)) {
    return new StorageUnavailableError(
      'StorageNotWritable',
      `storage ${root} is not writable by ${processIdentity()}: ${cause}`,
      { cause: error },
    );
  }
  if (code !== undefined && fullCodes.has(code)) {
    return new StorageUnavailableError('StorageFull', `storage ${root} is full: ${cause}`, {
      cause: error,
    });
  }
  return error;
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
    await this.throughTemporaryFile(content, (temporary) => placeInto(rename, temporary, target));
  }

  /** A hard link of a complete temporary file: the name appears with all its content or not at all. */
  async createContent(path: string, content: Buffer | string): Promise<boolean> {
    const target = this.resolve(path);
    return this.throughTemporaryFile(content, async (temporary) => {
      try {
        await placeInto(link, temporary, target);
        return true;
      } catch (error) {
        if (errnoCode(error) === 'EEXIST') return false;
        throw error;
      }
    });
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
      await copyFileRange(handle, range.offset, end, destination);
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
      throw writeFailure(this.root, error);
    }
    try {
      const { size } = await handle.stat();
      return new FilesystemWriter(handle, size, (error) => writeFailure(this.root, error));
    } catch (error) {
      await handle.close();
      throw error;
    }
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
      await placeInto(rename, this.resolve(source), this.resolve(destination));
    } catch (error) {
      if (isNotFound(error)) throw new PathNotFoundError(source);
      throw writeFailure(this.root, error);
    }
  }

  async delete(path: string): Promise<void> {
    const target = this.resolve(path);
    try {
      await rm(target, { recursive: true, force: true });
    } catch (error) {
      throw writeFailure(this.root, error);
    }
  }

  /**
   * The steps of every upload's first write: a file in the temporary directory, synced, renamed
   * (and the rename synced), then removed. A failed probe leaves nothing, as any failed write.
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

  /**
   * Writes `content` to a new temporary file, synced, and lets `place` rename or link it into
   * the tree. The temporary name never outlives the call, whether `place` took it, failed or
   * was never reached; only storage that refuses even the removal keeps it, until the stale
   * temporary files are swept at the next start.
   */
  private async throughTemporaryFile<T>(
    content: Buffer | string,
    place: (temporary: string) => Promise<T>,
  ): Promise<T> {
    const temporary = this.resolve(`${temporaryDirectory}/${randomUUID()}`);
    try {
      await mkdir(dirname(temporary), { recursive: true });
      const handle = await open(temporary, 'wx', 0o644);
      try {
        await handle.writeFile(content);
        await handle.sync();
      } finally {
        await handle.close();
      }
      return await place(temporary);
    } catch (error) {
      throw writeFailure(this.root, error);
    } finally {
      // After a rename there is nothing left to remove: ENOENT, ignored like any failure here.
      await unlink(temporary).catch(() => undefined);
    }
  }
}

/**
 * Renames or links `source` to `target`, creating the target's directory when needed, and makes
 * the new name durable.
 */
async function placeInto(
  operation: (source: string, target: string) => Promise<void>,
  source: string,
  target: string,
): Promise<void> {
  try {
    await operation(source, target);
  } catch (error) {
    if (!isNotFound(error)) throw error;
    // The target directory is missing (the source's absence surfaces again below).
    await mkdir(dirname(target), { recursive: true });
    await operation(source, target);
  }
  // Without this, a power loss can keep a link while losing the rename of what it names.
  const directory = await open(dirname(target), 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/**
 * Appends through a file handle in batches: chunks from a socket (16-64 KiB) are gathered into
 * one writev of about a mebibyte, with at most one write in flight, so hashing the next chunks
 * overlaps with the disk.
 */
class FilesystemWriter implements FileWriter {
  private readonly handle: FileHandle;
  /** Maps a failed write to the driver's error for it. */
  private readonly failed: (error: unknown) => unknown;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private inFlight: Promise<void> | undefined;
  private failure: unknown;
  private written: number;
  private unsynced = 0;
  /**
   * The periodic flush running beside the writes. Awaited in the write path, it paused the
   * socket for as long as the disk took to take 64 MiB; the writes that follow only need it
   * done before `commit` syncs, or before the file is cut or closed.
   */
  private syncing: Promise<void> | undefined;
  private buffered = 0;

  constructor(handle: FileHandle, size: number, failed: (error: unknown) => unknown) {
    this.handle = handle;
    this.written = size;
    this.failed = failed;
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
        this.failure = this.failed(error);
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
    if (this.unsynced >= syncEveryBytes && !this.syncing) {
      this.unsynced = 0;
      this.syncing = this.handle.datasync().then(
        () => {
          this.syncing = undefined;
        },
        (error: unknown) => {
          this.syncing = undefined;
          this.failure ??= this.failed(error);
        },
      );
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
    await this.syncing;
    this.batch = [];
    this.batchBytes = 0;
    this.buffered = 0;
    this.failure = undefined;
    try {
      await this.handle.truncate(size);
    } catch (error) {
      throw this.failed(error);
    }
    this.written = size;
  }

  async commit(): Promise<void> {
    await this.flush();
    await this.syncing;
    if (this.failure !== undefined) throw this.failure;
    try {
      await this.handle.sync();
    } catch (error) {
      throw this.failed(error);
    }
    this.unsynced = 0;
  }

  async close(): Promise<void> {
    if (this.inFlight) await this.inFlight.catch(() => undefined);
    await this.syncing;
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
