import { createHash } from 'node:crypto';
import { isOciError } from '../errors.ts';
import { parseDigest, type ManifestReference } from '../reference.ts';
import { parseManifest } from '../service/manifest-schema.ts';
import { mediaTypes } from '../service/media-types.ts';
import {
  maxManifestBytes,
  type ManifestService,
  type StoredManifest,
} from '../service/manifests.ts';
import type { MirroredRepository } from './mirrors.ts';
import { isStorageRefusal } from './storage-refusal.ts';
import { readBody } from './upstream-client.ts';
import { UpstreamError } from './upstream-error.ts';

/** Every manifest kind Berth stores, so upstream never converts one for an older client. */
const accept = [
  mediaTypes.ociIndex,
  mediaTypes.ociManifest,
  mediaTypes.dockerManifestList,
  mediaTypes.dockerManifest,
].join(', ');

function manifestPath(target: MirroredRepository, reference: string): string {
  return `/v2/${target.upstreamName}/manifests/${reference}`;
}

/** What a tag points at upstream (one HEAD, which Docker Hub does not count against limits). */
export async function upstreamDigest(
  target: MirroredRepository,
  tag: string,
): Promise<string | undefined> {
  const response = await target.mirror.client.send(
    'HEAD',
    target.upstreamName,
    manifestPath(target, tag),
    { accept },
  );
  response.resume();
  const digest = response.headers['docker-content-digest'];
  return typeof digest === 'string' ? digest : undefined;
}

/**
 * GETs a manifest upstream and stores it in the mirrored repository as a push would (by tag:
 * pointing the tag at it), without requiring its blobs yet. The digest is computed from the
 * bytes (and must equal a requested one), never taken from upstream's headers. Storage that
 * refuses it (full, or past a quota or limit, which hold mirrored content like pushed content:
 * isStorageRefusal) does not fail the pull: the manifest is served as fetched, `stored` false.
 */
export async function fetchManifest(
  target: MirroredRepository,
  reference: ManifestReference,
  manifests: ManifestService,
): Promise<{ manifest: StoredManifest; stored: boolean }> {
  const upstream = target.mirror.client.name;
  const wanted = reference.kind === 'digest' ? reference.digest.value : reference.tag;
  const response = await target.mirror.client.send(
    'GET',
    target.upstreamName,
    manifestPath(target, wanted),
    { accept },
  );
  let bytes: Buffer;
  try {
    bytes = await readBody(response, maxManifestBytes);
  } catch {
    throw new UpstreamError(
      upstream,
      'bad-response',
      'sent a manifest it did not finish or that is too large',
    );
  }
  const contentType = response.headers['content-type']?.split(';')[0]?.trim();
  let digest;
  try {
    ({ digest } = await manifests.put(target.repository, reference, bytes, contentType, {
      mirrored: true,
    }));
  } catch (error) {
    if (isOciError(error, 'DIGEST_INVALID') || isOciError(error, 'MANIFEST_INVALID'))
      throw new UpstreamError(upstream, 'bad-response', `sent an invalid manifest for ${wanted}`);
    if (isStorageRefusal(error)) {
      // put validated it (digest and schema) before storage refused it.
      const algorithm = reference.kind === 'digest' ? reference.digest.algorithm : 'sha256';
      return {
        manifest: {
          digest: parseDigest(`${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`),
          mediaType: parseManifest(bytes, contentType).mediaType,
          bytes,
        },
        stored: false,
      };
    }
    throw error;
  }
  return { manifest: await manifests.getByDigest(target.repository, digest), stored: true };
}
