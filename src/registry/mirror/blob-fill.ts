import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { VerifiedSender } from '../../util/client-writes.ts';
import { forEachChunk } from '../../util/streams.ts';
import type { Digest } from '../reference.ts';
import type { UploadService } from '../service/uploads.ts';
import type { MirroredRepository } from './mirrors.ts';
import { UpstreamError } from './upstream-error.ts';

/** Bytes queued towards storage before the upstream read waits for it. */
const storageQueueBytes = 1 << 20;

/**
 * Streams a blob from upstream to the client and, at the same time, into an upload of the
 * mirrored repository, so the client's first byte does not wait for the whole blob. The upload
 * is completed with the digest, so storage verifies it before the blob becomes visible; the
 * client's last chunk is held back until the digest is known here (VerifiedSender), so bad bytes
 * end in a cut connection. The client going away does not stop the fill: other pulls wait on it.
 * Returns the bytes sent. Throws UpstreamError when upstream fails, before or during the body.
 */
export async function fillBlob(
  target: MirroredRepository,
  digest: Digest,
  res: ServerResponse,
  deps: { readonly uploads: UploadService },
): Promise<number> {
  const { uploads } = deps;
  const upstream = target.mirror.client.name;
  const response = await target.mirror.client.send(
    'GET',
    target.upstreamName,
    `/v2/${target.upstreamName}/blobs/${digest.value}`,
  );
  const length = Number(response.headers['content-length']);
  const known = response.headers['content-length'] !== undefined && Number.isSafeInteger(length);

  const id = await uploads.start(target.repository);
  const toStorage = new PassThrough({ highWaterMark: storageQueueBytes });
  const stored = uploads.complete(
    target.repository,
    id,
    digest,
    toStorage,
    known ? { length } : {},
  );
  let storageFailed = false;
  const storageSettled = stored.then(
    () => undefined,
    () => {
      storageFailed = true;
    },
  );

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
      const disk =
        storageFailed || toStorage.write(chunk)
          ? undefined
          : Promise.race([once(toStorage, 'drain'), storageSettled]).then(() => undefined);
      if (!disk) return network;
      return network ? Promise.all([network, disk]).then(() => undefined) : disk;
    });
  } catch {
    client.finish(false);
    toStorage.destroy(new Error('upstream stopped sending'));
    await storageSettled;
    await uploads.cancel(target.repository, id).catch(() => undefined);
    throw new UpstreamError(upstream, 'unreachable', `stopped sending ${digest.value}`);
  }
  toStorage.end();
  const verified = hash.digest('hex') === digest.hex && (!known || received === length);
  client.finish(verified);
  if (!verified) {
    await storageSettled;
    await uploads.cancel(target.repository, id).catch(() => undefined);
    throw new UpstreamError(upstream, 'bad-response', `sent bytes that are not ${digest.value}`);
  }
  // The client has good bytes either way; a storage failure fails only pulls waiting on this one.
  await stored;
  return received;
}
