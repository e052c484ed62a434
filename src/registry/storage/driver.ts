import type { Readable, Writable } from 'node:stream';

/**
 * The seam between the registry's services and where bytes live. Paths are absolute,
 * slash-separated and driver-relative (`/docker/registry/v2/...`); a driver maps them onto its
 * medium. Every driver must pass the shared suite in `testsuite.ts`. A write that fails, for
 * whatever reason, leaves no temporary file or object of its own behind.
 */
export interface StorageDriver {
  readonly name: string;
  /**
   * True when other processes (replicas) may read and write the same storage at the same time,
   * so nothing a process remembers about a mutable file (an upload's size or writer) stays true
   * after it lets go of it. Absent means false.
   */
  readonly shared?: boolean;
  /** Size and kind of what is at `path`, or undefined when nothing is. */
  stat(path: string): Promise<FileInfo | undefined>;
  /** The whole content of a small file. Throws PathNotFoundError. */
  getContent(path: string): Promise<Buffer>;
  /** Replaces a small file atomically and durably: a reader sees the old or the new content. */
  putContent(path: string, content: Buffer | string): Promise<void>;
  /**
   * Creates a small file atomically and durably unless something is already at `path`: true
   * when this call created it, false (nothing written) when it existed. The one conditional
   * write, and what decides races between writers that may run in different processes or
   * replicas: of any number of concurrent calls on one path exactly one returns true, and every
   * reader sees either nothing or that call's whole content, never a partial file. Every other
   * write is a blind replace, last writer wins. The filesystem driver links a synced temporary
   * file into place (`link(2)` fails with EEXIST); an object store would use a conditional put
   * (`If-None-Match: *`).
   */
  createContent(path: string, content: Buffer | string): Promise<boolean>;
  /**
   * A stream of the file from `offset` to `end` (inclusive) or to its end. Throws
   * PathNotFoundError before the stream is returned, never through it.
   */
  reader(path: string, range?: { offset: number; end?: number }): Promise<Readable>;
  /**
   * Writes the file, or the range `offset`..`end` (inclusive), into `destination`, honouring its
   * backpressure. Resolves once every byte was accepted by the destination. Throws
   * PathNotFoundError before writing anything. This is the serving path for blob GETs, so a
   * driver should make it as cheap as it can (the filesystem driver reads into buffers shared by
   * every GET, and reuses a chunk's memory once the destination has called back its write).
   */
  pipeTo(
    path: string,
    destination: Writable,
    range?: { offset: number; end?: number },
  ): Promise<void>;
  /**
   * A writer that appends to the file at `path`, creating it when absent. Content becomes
   * durable on `commit`.
   */
  writer(path: string): Promise<FileWriter>;
  /** Names (not paths) of the direct children of a directory. Throws PathNotFoundError. */
  list(path: string): Promise<string[]>;
  /** Moves a file to `destination` atomically, replacing what was there. */
  move(source: string, destination: string): Promise<void>;
  /** Removes a file or a whole directory tree. Missing paths are not an error. */
  delete(path: string): Promise<void>;
  /**
   * Proves that storage takes writes the way uploads make them, leaving nothing behind. Cheap
   * enough to run every few seconds. Throws StorageUnavailableError saying what is wrong.
   */
  probe(): Promise<void>;
}

export interface FileInfo {
  readonly size: number;
  /** Last write; for a file still being written, the last `flush` or `commit`. */
  readonly modifiedAt: Date;
  readonly isDirectory: boolean;
}

/** An append-only writer for one file, used for blob uploads. */
export interface FileWriter {
  /** Bytes in the file, counting those written through this writer. */
  readonly size: number;
  /**
   * Appends a chunk. Returns a promise only when the caller must wait before writing more (the
   * writer's buffer is full); earlier chunks may still be in flight, and a failed write rejects
   * a later call or `flush`. The chunk must not be modified afterwards.
   */
  write(chunk: Buffer): Promise<void> | undefined;
  /** Waits for every pending write. */
  flush(): Promise<void>;
  /** Cuts the file back to `size` bytes, discarding a tail that was never acknowledged. */
  truncate(size: number): Promise<void>;
  /** Flushes and makes the content durable. The writer stays usable. */
  commit(): Promise<void>;
  /** Releases the writer's resources without removing the file. */
  close(): Promise<void>;
}

export class PathNotFoundError extends Error {
  readonly path: string;
  constructor(path: string) {
    super(`path not found: ${path}`);
    this.name = 'PathNotFoundError';
    this.path = path;
  }
}

/**
 * Why storage cannot serve the registry: `StorageNotWritable` when it refuses writes by
 * permission or a read-only medium, `StorageFull` when it has no room (space, inodes or quota)
 * left, `StorageProbeFailed` when a probe failed for another reason.
 */
export type StorageUnavailableReason = 'StorageNotWritable' | 'StorageFull' | 'StorageProbeFailed';

/**
 * Storage, not the request, is at fault, and no retry fixes it until the medium is set up
 * again or has room. The message is for operators: it names the storage and, when it refused
 * by permission, the identity it refused. Drivers throw it for writes refused this way, also
 * from a FileWriter, so that every write path reports the same reasons.
 */
export class StorageUnavailableError extends Error {
  readonly reason: StorageUnavailableReason;
  constructor(
    reason: StorageUnavailableReason,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options);
    this.name = 'StorageUnavailableError';
    this.reason = reason;
  }
}

export class InvalidPathError extends Error {
  constructor(path: string) {
    super(`invalid storage path: ${path}`);
    this.name = 'InvalidPathError';
  }
}

/** Rejects paths a driver must never see: relative, `..` or empty components. */
export function assertStoragePath(path: string): void {
  if (!path.startsWith('/') || path.length < 2) throw new InvalidPathError(path);
  for (const part of path.slice(1).split('/')) {
    if (part === '' || part === '.' || part === '..') throw new InvalidPathError(path);
  }
}
