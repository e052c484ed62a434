import { randomUUID } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';
import {
  assertStoragePath,
  PathNotFoundError,
  StorageUnavailableError,
  type FileInfo,
  type FileWriter,
  type StorageDriver,
} from '../driver.ts';
import { S3Client, S3Error, type S3ClientOptions } from './client.ts';
import {
  maximumCopyBytes,
  minimumPartBytes,
  openS3Writer,
  readWriterState,
  sizeOf,
  type WriterLocation,
} from './writer.ts';

export interface S3DriverOptions extends S3ClientOptions {
  /** Key prefix every path goes under, like distribution's `rootdirectory`. */
  readonly prefix?: string | undefined;
  /** Part size of multipart uploads: memory per upload is about twice this. */
  readonly partBytes?: number;
}

/** Distribution's default chunk size; its minimum is S3's, 5 MiB. */
const defaultPartBytes = 10 * 1024 * 1024;
/** Part size of server-side copies of objects above 5 GiB. */
const copyPartBytes = 1024 * 1024 * 1024;
/** Writers' state, outside distribution's layout so that no listing of it ever shows it. */
const writersRoot = '/_berth/writers';

/**
 * StorageDriver over an S3 bucket. A path maps to the key `<prefix><path>` without the leading
 * slash, as CNCF distribution's s3-aws driver maps it under its root directory, so a bucket
 * written by registry:2 is served as it is. Directories are key prefixes: a directory exists
 * while a key is below it. `createContent` is a conditional put (`If-None-Match: *`), which
 * decides races between replicas; `move` is a server-side copy and a delete, like
 * distribution's. A file being written is a multipart upload plus a small tail and state under
 * `/_berth/writers<path>/`; it becomes an object on `commit`.
 */
export class S3Driver implements StorageDriver {
  readonly name = 's3';
  /** A bucket is what replicas share. */
  readonly shared = true;
  private readonly client: S3Client;
  private readonly prefix: string;
  private readonly partBytes: number;
  private readonly description: string;

  constructor(options: S3DriverOptions) {
    this.client = new S3Client(options);
    this.prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.partBytes = options.partBytes ?? defaultPartBytes;
    if (this.partBytes < minimumPartBytes) {
      throw new Error(`S3 parts must be at least ${minimumPartBytes} bytes`);
    }
    this.description = `s3://${options.bucket}/${this.prefix}`;
  }

  async stat(path: string): Promise<FileInfo | undefined> {
    const key = this.key(path);
    const object = await this.client.head(key);
    if (object) return { size: object.size, modifiedAt: object.modifiedAt, isDirectory: false };
    const page = await this.client.listPage(`${key}/`, { maxKeys: 1 });
    const child = page.keys[0];
    if (child) return { size: 0, modifiedAt: child.modifiedAt, isDirectory: true };
    // A file still being written is not an object yet; its state is recorded on every flush.
    const location = this.writerLocation(path);
    const state = await readWriterState(this.client, location);
    if (!state) return undefined;
    const recorded = await this.client.head(`${location.area}state`);
    return {
      size: sizeOf(state),
      modifiedAt: recorded?.modifiedAt ?? new Date(),
      isDirectory: false,
    };
  }

  async getContent(path: string): Promise<Buffer> {
    const bytes = await this.client.getBuffer(this.key(path));
    if (!bytes) throw new PathNotFoundError(path);
    return bytes;
  }

  async putContent(path: string, content: Buffer | string): Promise<void> {
    await this.writing(() => this.client.put(this.key(path), Buffer.from(content)));
  }

  async createContent(path: string, content: Buffer | string): Promise<boolean> {
    return this.writing(() =>
      this.client.put(this.key(path), Buffer.from(content), { ifNoneMatch: true }),
    );
  }

  async reader(path: string, range?: { offset: number; end?: number }): Promise<Readable> {
    const key = this.key(path);
    try {
      const stream = await this.client.get(key, range);
      if (!stream) throw new PathNotFoundError(path);
      return stream;
    } catch (error) {
      if (await this.emptyRange(error, key)) return Readable.from([]);
      throw error;
    }
  }

  async pipeTo(
    path: string,
    destination: Writable,
    range?: { offset: number; end?: number },
  ): Promise<void> {
    const key = this.key(path);
    try {
      if (!(await this.client.pipe(key, destination, range))) throw new PathNotFoundError(path);
    } catch (error) {
      if (await this.emptyRange(error, key)) return;
      throw error;
    }
  }

  /**
   * Whether a GET's error is S3's 416 for a range starting at the end of an object that exists
   * (a zero-byte one, say): an empty read, not an error.
   */
  private async emptyRange(error: unknown, key: string): Promise<boolean> {
    return (
      error instanceof S3Error &&
      error.status === 416 &&
      (await this.client.head(key)) !== undefined
    );
  }

  async writer(path: string): Promise<FileWriter> {
    return this.writing(() => openS3Writer(this.client, this.writerLocation(path), this.partBytes));
  }

  async list(path: string): Promise<string[]> {
    const prefix = `${this.key(path)}/`;
    const names: string[] = [];
    for await (const page of this.client.list(prefix, '/')) {
      for (const entry of page.keys) names.push(entry.key.slice(prefix.length));
      for (const child of page.prefixes) names.push(child.slice(prefix.length, -1));
    }
    if (names.length === 0) throw new PathNotFoundError(path);
    return names;
  }

  async move(source: string, destination: string): Promise<void> {
    const from = this.key(source);
    const to = this.key(destination);
    const object = await this.client.head(from);
    if (!object) throw new PathNotFoundError(source);
    await this.writing(async () => {
      if (object.size <= maximumCopyBytes) await this.client.copy(from, to);
      else await this.copyInParts(from, to, object.size);
      await this.client.delete(from);
    });
    await this.deletePrefix(`${this.key(`${writersRoot}${source}`)}/`);
  }

  async delete(path: string): Promise<void> {
    const key = this.key(path);
    await this.client.delete(key);
    await this.deletePrefix(`${key}/`);
    await this.deletePrefix(`${this.key(`${writersRoot}${path}`)}/`);
  }

  async probe(): Promise<void> {
    const key = this.key(`/_berth/probe/${randomUUID()}`);
    try {
      await this.client.put(key, Buffer.from('probe'));
      await this.client.delete(key);
    } catch (error) {
      throw unavailable(this.description, error, 'StorageProbeFailed');
    }
  }

  /** Every key below `prefix`, and the multipart uploads in progress there. */
  private async deletePrefix(prefix: string): Promise<void> {
    for await (const page of this.client.list(prefix)) {
      await this.client.deleteMany(page.keys.map((entry) => entry.key));
    }
    for await (const upload of this.client.multipartUploads(prefix)) {
      await this.client.abortMultipart(upload.key, upload.uploadId);
    }
    // The writer of a file is in progress under the file's own key, not below it.
    const file = prefix.slice(0, -1);
    for await (const upload of this.client.multipartUploads(file)) {
      if (upload.key === file) await this.client.abortMultipart(upload.key, upload.uploadId);
    }
  }

  private async copyInParts(from: string, to: string, size: number): Promise<void> {
    const uploadId = await this.client.createMultipart(to);
    try {
      const parts = [];
      for (let offset = 0, number = 1; offset < size; offset += copyPartBytes, number += 1) {
        const end = Math.min(offset + copyPartBytes, size) - 1;
        const etag = await this.client.uploadPartCopy(to, uploadId, number, from, { offset, end });
        parts.push({ number, etag });
      }
      await this.client.completeMultipart(to, uploadId, parts);
    } catch (error) {
      await this.client.abortMultipart(to, uploadId).catch(() => undefined);
      throw error;
    }
  }

  /** Runs a write, turning S3's refusals (permission, quota) into StorageUnavailableError. */
  private async writing<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (error instanceof S3Error && refusals.has(error.code)) {
        throw unavailable(
          this.description,
          error,
          refusals.get(error.code) ?? 'StorageProbeFailed',
        );
      }
      throw error;
    }
  }

  private key(path: string): string {
    assertStoragePath(path);
    return this.prefix ? `${this.prefix}${path}` : path.slice(1);
  }

  private writerLocation(path: string): WriterLocation {
    return { key: this.key(path), area: `${this.key(`${writersRoot}${path}`)}/_writer/` };
  }
}

const refusals = new Map<string, 'StorageNotWritable' | 'StorageFull'>([
  ['AccessDenied', 'StorageNotWritable'],
  ['InvalidAccessKeyId', 'StorageNotWritable'],
  ['SignatureDoesNotMatch', 'StorageNotWritable'],
  ['QuotaExceeded', 'StorageFull'],
  ['EntityTooLarge', 'StorageFull'],
]);

function unavailable(
  description: string,
  error: unknown,
  fallback: 'StorageNotWritable' | 'StorageFull' | 'StorageProbeFailed',
): StorageUnavailableError {
  const reason = error instanceof S3Error ? (refusals.get(error.code) ?? fallback) : fallback;
  return new StorageUnavailableError(
    reason,
    `storage ${description} refused a write: ${(error as Error).message}`,
    { cause: error },
  );
}
