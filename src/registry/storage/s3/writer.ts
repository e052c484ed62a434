import { randomUUID } from 'node:crypto';
import type { FileWriter } from '../driver.ts';
import type { S3Client } from './client.ts';

/** S3's smallest part but the last. */
export const minimumPartBytes = 5 * 1024 * 1024;
/**
 * Parts of one writer travelling to S3 at once while the next fills; memory per writer is this
 * many parts plus the one filling. Against a local S3 server two in flight measured no faster
 * than one (the registry's CPU is the bound there) and cost a part of memory more.
 */
export const partsInFlight = 1;
/** S3's largest CopyObject; larger objects are copied part by part. */
export const maximumCopyBytes = 5 * 1024 * 1024 * 1024;

interface Part {
  readonly number: number;
  readonly etag: string;
  readonly size: number;
}

/**
 * What a writer has made durable, stored as JSON beside it (`<writer area>/state`), so that any
 * process can continue the file. The content is either the committed object itself (`base`),
 * or the parts of a multipart upload followed by a tail object smaller than a part.
 * `generation` is also written as metadata on the object a commit makes: a state whose
 * generation the object carries was committed, and is stale.
 */
export interface WriterState {
  readonly generation: string;
  readonly base?: { readonly size: number };
  readonly uploadId?: string;
  readonly parts: readonly Part[];
  readonly tail?: { readonly key: string; readonly size: number };
}

const metadataName = 'berth-writer';

/** Bytes of the file a state describes. */
export function sizeOf(state: WriterState): number {
  return state.base?.size ?? partsSize(state.parts) + (state.tail?.size ?? 0);
}

function partsSize(parts: readonly Part[]): number {
  return parts.reduce((sum, part) => sum + part.size, 0);
}

/** Where a writer keeps its state and tails: `area` is a key prefix ending in `/`. */
export interface WriterLocation {
  readonly key: string;
  readonly area: string;
}

/**
 * The durable state of the file at `location`: its writer state, the committed object, or
 * undefined when neither exists.
 */
export async function readWriterState(
  client: S3Client,
  location: WriterLocation,
): Promise<WriterState | undefined> {
  const [stateBytes, object] = await Promise.all([
    client.getBuffer(`${location.area}state`),
    client.head(location.key),
  ]);
  const state = stateBytes ? (JSON.parse(stateBytes.toString('utf8')) as WriterState) : undefined;
  if (state && object?.metadata[metadataName] !== state.generation) return state;
  if (object) return { generation: randomUUID(), base: { size: object.size }, parts: [] };
  return undefined;
}

export async function openS3Writer(
  client: S3Client,
  location: WriterLocation,
  partBytes: number,
): Promise<FileWriter> {
  const state = (await readWriterState(client, location)) ?? {
    generation: randomUUID(),
    parts: [],
  };
  return new S3Writer(client, location, partBytes, state);
}

/**
 * An append-only file as an S3 multipart upload. Bytes collect in a part-sized buffer; a full
 * buffer is uploaded as the next part while the following one fills, up to `partsInFlight` at a
 * time, and its memory is reused for a later part once S3 has it, so memory is at most
 * `partsInFlight + 1` parts and a long upload makes no garbage of them. `flush` stores what is
 * left, smaller than a part, as a tail object and records the state, then lets go of the buffer:
 * a small chunk costs a write of at most one part, never a copy of the whole file, and an idle
 * writer holds no memory. `commit` completes the upload with the tail as its last part (or puts
 * a file smaller than a part as one object).
 */
class S3Writer implements FileWriter {
  private readonly client: S3Client;
  private readonly location: WriterLocation;
  private readonly partBytes: number;
  private durable: WriterState;
  private uploadId: string | undefined;
  private parts: Part[];
  /** Bytes after the last part; only meaningful while `loaded`. */
  private buffer: Buffer | undefined;
  private buffered = 0;
  /** Whether the durable tail (or base object) has been read into `buffer`/`parts`. */
  private loaded = false;
  private dirty = false;
  /** Part uploads under way, by part number. */
  private readonly uploading = new Map<number, { bytes: number; done: Promise<void> }>();
  /** Part buffers S3 has taken, for the next parts to fill. */
  private spare: Buffer[] = [];
  private nextPart: number;
  private failure: unknown;
  /** The CreateMultipartUpload the first part of a new upload waits for. */
  private creating: Promise<string> | undefined;

  constructor(client: S3Client, location: WriterLocation, partBytes: number, state: WriterState) {
    this.client = client;
    this.location = location;
    this.partBytes = partBytes;
    this.durable = state;
    this.uploadId = state.uploadId;
    this.parts = [...state.parts];
    this.nextPart = this.parts.length + 1;
  }

  get size(): number {
    if (!this.loaded) return sizeOf(this.durable);
    let uploading = 0;
    for (const part of this.uploading.values()) uploading += part.bytes;
    return partsSize(this.parts) + uploading + this.buffered;
  }

  write(chunk: Buffer): Promise<void> | undefined {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.loaded && this.buffer && this.buffered + chunk.length < this.partBytes) {
      chunk.copy(this.buffer, this.buffered);
      this.buffered += chunk.length;
      this.dirty = true;
      return undefined;
    }
    return this.writeSlowly(chunk);
  }

  private async writeSlowly(chunk: Buffer): Promise<void> {
    await this.load();
    let offset = 0;
    while (offset < chunk.length) {
      const buffer = (this.buffer ??= this.spare.pop() ?? Buffer.allocUnsafe(this.partBytes));
      const copied = chunk.copy(buffer, this.buffered, offset);
      this.buffered += copied;
      offset += copied;
      this.dirty = true;
      if (this.buffered === this.partBytes) {
        await this.waitForSlot();
        this.startUpload(buffer);
        this.buffer = undefined;
        this.buffered = 0;
      }
    }
  }

  async flush(): Promise<void> {
    await this.settleUpload();
    if (!this.dirty) return;
    let tail: WriterState['tail'];
    if (this.buffered > 0 && this.buffer) {
      tail = { key: `${this.location.area}tail-${randomUUID()}`, size: this.buffered };
      await this.client.put(tail.key, this.buffer.subarray(0, this.buffered));
    }
    await this.record({
      generation: this.durable.generation,
      ...(this.uploadId ? { uploadId: this.uploadId } : {}),
      parts: this.parts,
      ...(tail ? { tail } : {}),
    });
  }

  async truncate(size: number): Promise<void> {
    await this.settleUpload().catch(() => undefined);
    this.reset();
    const durableSize = sizeOf(this.durable);
    if (size === durableSize) return;
    if (size > durableSize) throw new Error(`cannot truncate ${this.location.key} to grow it`);
    await this.load();
    const boundary = partsSize(this.parts);
    if (size < boundary) {
      throw new Error(
        `cannot truncate ${this.location.key} to ${size}: bytes up to ${boundary} are in uploaded parts`,
      );
    }
    this.buffered = size - boundary;
    this.dirty = true;
    await this.flush();
  }

  async commit(): Promise<void> {
    await this.settleUpload();
    if (!this.dirty && this.durable.base) return;
    await this.load();
    const generation = this.durable.generation;
    const tail = this.buffer?.subarray(0, this.buffered) ?? Buffer.alloc(0);
    if (this.uploadId === undefined) {
      await this.client.put(this.location.key, tail, { metadata: { [metadataName]: generation } });
    } else {
      if (tail.length > 0 || this.parts.length === 0) {
        const number = this.parts.length + 1;
        const etag = await this.client.uploadPart(this.location.key, this.uploadId, number, tail);
        this.parts.push({ number, etag, size: tail.length });
      }
      await this.client.completeMultipart(this.location.key, this.uploadId, this.parts);
    }
    const size = partsSize(this.parts) + tail.length;
    const stale = this.durable.tail?.key;
    this.durable = { generation: randomUUID(), base: { size }, parts: [] };
    this.reset();
    // The object carries the generation, so a crash here leaves a state that reads as stale.
    await this.client.delete(`${this.location.area}state`);
    if (stale) await this.client.delete(stale);
  }

  async close(): Promise<void> {
    await this.settleUpload().catch(() => undefined);
    this.buffer = undefined;
    this.buffered = 0;
    this.spare = [];
  }

  /** Forgets everything not durable, as after a failure. Only called with no upload under way. */
  private reset(): void {
    this.failure = undefined;
    this.uploading.clear();
    this.spare = [];
    this.buffer = undefined;
    this.buffered = 0;
    this.loaded = false;
    this.dirty = false;
    this.uploadId = this.durable.uploadId;
    this.parts = [...this.durable.parts];
    this.nextPart = this.parts.length + 1;
  }

  /** Reads the durable tail into the buffer, or turns a committed object into part 1. */
  private async load(): Promise<void> {
    if (this.loaded) return;
    const { base, tail } = this.durable;
    if (base && base.size >= minimumPartBytes) {
      this.uploadId = await this.client.createMultipart(this.location.key, {
        [metadataName]: this.durable.generation,
      });
      const etag = await this.client.uploadPartCopy(
        this.location.key,
        this.uploadId,
        1,
        this.location.key,
        { offset: 0, end: base.size - 1 },
      );
      this.parts = [{ number: 1, etag, size: base.size }];
      this.nextPart = 2;
    } else if ((base && base.size > 0) || tail) {
      const bytes = await this.client.getBuffer(base ? this.location.key : (tail?.key ?? ''));
      if (!bytes) throw new Error(`the tail of ${this.location.key} is missing`);
      this.buffer = Buffer.allocUnsafe(this.partBytes);
      this.buffered = bytes.copy(this.buffer, 0, 0, base?.size ?? tail?.size);
    }
    this.loaded = true;
  }

  private startUpload(part: Buffer): void {
    const number = this.nextPart;
    this.nextPart += 1;
    // The first part creates the multipart upload; the others wait for its id.
    const created =
      this.uploadId !== undefined
        ? Promise.resolve(this.uploadId)
        : (this.creating ??= this.client.createMultipart(this.location.key, {
            [metadataName]: this.durable.generation,
          }));
    const done = (async () => {
      const uploadId = await created;
      this.uploadId = uploadId;
      const etag = await this.client.uploadPart(this.location.key, uploadId, number, part);
      // In one step, so that `size` never counts the part twice.
      this.parts.push({ number, etag, size: part.length });
      this.parts.sort((a, b) => a.number - b.number);
      this.uploading.delete(number);
      if (part.length === this.partBytes && this.spare.length < partsInFlight)
        this.spare.push(part);
    })().catch((error: unknown) => {
      // A failed part stays counted in `size` until `truncate` or `reset` forgets it.
      this.failure ??= error;
    });
    this.uploading.set(number, { bytes: part.length, done });
  }

  /** Waits until fewer than `partsInFlight` parts are under way; throws a failed upload's error. */
  private async waitForSlot(): Promise<void> {
    while (this.uploading.size >= partsInFlight && this.failure === undefined) {
      await Promise.race([...this.uploading.values()].map((part) => part.done));
    }
    if (this.failure !== undefined) throw this.failure;
  }

  private async settleUpload(): Promise<void> {
    await Promise.all([...this.uploading.values()].map((part) => part.done));
    this.creating = undefined;
    if (this.failure !== undefined) throw this.failure;
  }

  private async record(state: WriterState): Promise<void> {
    const stale = this.durable.tail?.key;
    await this.client.put(`${this.location.area}state`, Buffer.from(JSON.stringify(state)));
    this.durable = state;
    this.reset();
    if (stale && stale !== state.tail?.key) await this.client.delete(stale);
  }
}
