import type { Digest } from '../reference.ts';
import { parseDigest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { isOciError } from '../errors.ts';
import { listOrEmpty } from './links.ts';
import type { ManifestService } from './manifests.ts';
import { mediaTypes } from './media-types.ts';

export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ReferrersIndex {
  schemaVersion: 2;
  mediaType: typeof mediaTypes.ociIndex;
  manifests: ReferrerDescriptor[];
}

/**
 * The referrers API: manifests in a repository whose `subject` is a digest. An unknown subject
 * has an empty list, never a 404, because clients read a 404 as "no referrers API here".
 */
export class ReferrerService {
  private readonly driver: StorageDriver;
  private readonly manifests: ManifestService;

  constructor(driver: StorageDriver, manifests: ManifestService) {
    this.driver = driver;
    this.manifests = manifests;
  }

  /** The referrers of `subject`, as an OCI index; only those of `artifactType` when given. */
  async list(
    repository: string,
    subject: Digest,
    artifactType: string | undefined,
  ): Promise<ReferrersIndex> {
    const { driver, manifests } = this;
    const descriptors: ReferrerDescriptor[] = [];
    const subjectDirectory = paths.referrersOf(repository, subject);
    for (const algorithm of (await listOrEmpty(driver, subjectDirectory)).sort()) {
      for (const hex of (await listOrEmpty(driver, `${subjectDirectory}/${algorithm}`)).sort()) {
        let digest: Digest;
        try {
          digest = parseDigest(`${algorithm}:${hex}`);
        } catch {
          continue;
        }
        let stored;
        try {
          stored = await manifests.getByDigest(repository, digest);
        } catch (error) {
          // Deleted since it was indexed: not a referrer any more.
          if (isOciError(error, 'MANIFEST_UNKNOWN')) continue;
          throw error;
        }
        const parsed = manifests.parseStored(stored);
        if (!parsed || parsed.subject?.value !== subject.value) continue;
        if (artifactType !== undefined && parsed.artifactType !== artifactType) continue;
        const descriptor: ReferrerDescriptor = {
          mediaType: stored.mediaType,
          digest: digest.value,
          size: stored.bytes.length,
        };
        if (parsed.artifactType !== undefined) descriptor.artifactType = parsed.artifactType;
        if (parsed.annotations !== undefined) descriptor.annotations = { ...parsed.annotations };
        descriptors.push(descriptor);
      }
    }
    return { schemaVersion: 2, mediaType: mediaTypes.ociIndex, manifests: descriptors };
  }
}
