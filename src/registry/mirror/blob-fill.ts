import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { VerifiedSender } from '../../util/client-writes.ts';
import { forEachChunk } from '../../util/streams.ts';
import type { Digest } from '../reference.ts';
import type { UploadService } from '../service/uploads.ts';
import type { MirroredRepository } from './mirrors.ts';
import { isStorageRefusal } from './storage-refusal.ts';
import { UpstreamError } from './upstream-error.ts';

/** Bytes queued towards storage before the upstream read waits for it. */
const storageQueueBytes = 1 << 20;

/** The upload a fill writes into, or undefined when storage refused to start one. */
interface StorageSide {
  readonly id: string;
  readonly input: PassThrough;
  readonly stored: Promise<void>;
  /** Settles when `stored` does, never rejecting. */
  readonly settled: Promise<void>;
  failed: boolean;
}

async function openStorage(
  uploads: UploadService,
  target: MirroredRepository,
  digest: Digest,
  length: number | undefined,
): Promise<StorageSide | undefined> {
  let id: string;
  try {
    id = await uploads.start(target.repository);
  } catch (error) {
    if (isStorageRefusal(error)) return undefined;
    throw error;
  }
  const input = new PassThrough({ highWaterMark: storageQueueBytes });
  const stored = uploads.complete(
    target.repository,
    id,
    digest,
    input,
    length === undefined ? {} : { length },
  );
  const side: StorageSide = {
    id,
    input,
    stored,
    settled: stored.then(
      () => undefined,
      () => {
        side.failed = true;
      },
    ),
    failed: false,
  };
  return side;
}

/**
 * Streams a blob from upstream to the client and, at the same time, into an upload of the
 * mirrored repository, so the client's first byte does not wait for the whole blob. The upload
 * is completed with the digest, so storage verifies it before the blob becomes visible; the
 * client's last chunk is held back until the digest is known here (VerifiedSender), so bad bytes
 * end in a cut connection. The client going away does not stop the fill: other pulls wait on it.
 * Storage that refuses the blob (a quota or storage limit: isStorageRefusal), at the start or
 * part way, does not stop the client's copy; the fill then ends `stored` false, keeping nothing.
 * Returns the bytes sent. Throws UpstreamError when upstream fails, before or during the body.
 */
export async function fillBlob(
  target: MirroredRepository,
  digest: Digest,
  res: ServerResponse,
  deps: { readonly uploads: UploadService },
): Promise<{ sent: number; stored: boolean }> {
  const { uploads } = deps;
  const upstream = target.mirror.client.name;
  const response = await target.mirror.client.send(
    'GET',
    target.upstreamName,
    `/v2/${target.upstreamName}/blobs/${digest.value}`,
  );
  const length = Number(response.headers['content-length']);
  const known = response.headers['content-length'] !== undefined && Number.isSafeInteger(length);

  let storage: StorageSide | undefined;
  try {
    storage = await openStorage(uploads, target, digest, known ? length : undefined);
  } catch (error) {
    response.destroy();
    throw error;
  }
  const cancel = async (): Promise<void> => {
    if (!storage) return;
    await storage.settled;
    await uploads.cancel(target.repository, storage.id).catch(() => undefined);
  };

  res.writeHead(200, {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest.value,
    ...(known ? { 'Content-Length': length } : {}),
  });
  const client = new VerifiedSender(res);
  const hash = createHash(digest.algorithm);
  let received = 0;
  try {
    await forEachChunk(response, (chunk) => {
      hash.update(chunk);
      received += chunk.length;
      const network = client.write(chunk);
      const side = storage;
      const disk =
        !side || side.failed || side.input.write(chunk)
          ? undefined
          : Promise.race([once(side.input, 'drain'), side.settled]).then(() => undefined);
      if (!disk) return network;
      return network ? Promise.all([network, disk]).then(() => undefined) : disk;
    });
  } catch {
    client.finish(false);
    storage?.input.destroy(new Error('upstream stopped sending'));
    await cancel();
    throw new UpstreamError(upstream, 'unreachable', `stopped sending ${digest.value}`);
  }
  storage?.input.end();
  const verified = hash.digest('hex') === digest.hex && (!known || received === length);
  client.finish(verified);
  if (!verified) {
    await cancel();
    throw new UpstreamError(upstream, 'bad-response', `sent bytes that are not ${digest.value}`);
  }
  if (!storage) return { sent: received, stored: false };
  // The client has good bytes either way; a storage failure fails only pulls waiting on this one.
  try {
    await storage.stored;
  } catch (error) {
    if (!isStorageRefusal(error)) throw error;
    await uploads.cancel(target.repository, storage.id).catch(() => undefined);
    return { sent: received, stored: false };
  }
  return { sent: received, stored: true };
}
