import { createHash } from 'node:crypto';
import { OciError } from '../errors.ts';
import { parseDigest, type Digest, type ManifestReference } from '../reference.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { blobUnknown, type BlobService } from './blobs.ts';
import { LruCache } from './cache.ts';
import { listOrEmpty, readLink, writeLink } from './links.ts';
import { inferMediaType, parseManifest, type ParsedManifest } from './manifest-schema.ts';

/** distribution's cap, which every client already respects. */
export const maxManifestBytes = 4 * 1024 * 1024;

export interface StoredManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly bytes: Buffer;
}

export interface ManifestCacheOptions {
  /** Bytes of manifest content kept in memory. */
  readonly maxBytes: number;
  /** How long a cached tag or manifest is trusted without asking storage. */
  readonly ttlMillis: number;
}

/**
 * Manifests and tags. Content is stored as a blob (so distribution can read it); a revision link
 * makes it part of a repository, and Berth records the pushed Content-Type beside the link so
 * the exact type comes back on pull. Reads are cached: manifests are small and hot.
 */
export class ManifestService {
  private readonly driver: StorageDriver;
  private readonly blobs: BlobService;
  private readonly manifests: LruCache<string, StoredManifest>;
  private readonly tags: LruCache<string, Digest>;
  /** Called after any change to a repository's manifests or tags. */
  onChange: (repository: string) => void = () => undefined;

  constructor(driver: StorageDriver, blobs: BlobService, cache: ManifestCacheOptions) {
    this.driver = driver;
    this.blobs = blobs;
    this.manifests = new LruCache({ maxWeight: cache.maxBytes, ttlMillis: cache.ttlMillis });
    this.tags = new LruCache({ maxWeight: 100_000, ttlMillis: cache.ttlMillis });
  }

  async get(repository: string, reference: ManifestReference): Promise<StoredManifest> {
    const digest =
      reference.kind === 'digest'
        ? reference.digest
        : await this.resolveTag(repository, reference.tag);
    return this.getByDigest(repository, digest);
  }

  async resolveTag(repository: string, tag: string): Promise<Digest> {
    const key = `${repository}:${tag}`;
    const cached = this.tags.get(key);
    if (cached) return cached;
    const digest = await readLink(this.driver, paths.tagCurrentLink(repository, tag));
    if (!digest) throw manifestUnknown({ tag });
    this.tags.set(key, digest);
    return digest;
  }

  async getByDigest(repository: string, digest: Digest): Promise<StoredManifest> {
    const key = `${repository}@${digest.value}`;
    const cached = this.manifests.get(key);
    if (cached) return cached;
    const linked = await readLink(this.driver, paths.revisionLink(repository, digest));
    if (!linked) throw manifestUnknown({ digest: digest.value });
    let bytes: Buffer;
    try {
      bytes = await this.driver.getContent(paths.blobData(digest));
    } catch (error) {
      if (error instanceof PathNotFoundError) throw manifestUnknown({ digest: digest.value });
      throw error;
    }
    const manifest = {
      digest,
      bytes,
      mediaType: await this.storedMediaType(repository, digest, bytes),
    };
    this.manifests.set(key, manifest, bytes.length + key.length);
    return manifest;
  }

  /**
   * Stores a manifest after checking that it is valid and that everything it references is in
   * the repository, and points the reference's tag and `extraTags` at it. Writes go content first, links last, so a crash leaves no link to anything
   * missing.
   */
  async put(
    repository: string,
    reference: ManifestReference,
    bytes: Buffer,
    contentType: string | undefined,
    options: { extraTags?: readonly string[]; isImmutableTag?: (tag: string) => boolean } = {},
  ): Promise<{ digest: Digest; subject: Digest | undefined }> {
    const algorithm = reference.kind === 'digest' ? reference.digest.algorithm : 'sha256';
    const digest = parseDigest(`${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`);
    if (reference.kind === 'digest' && reference.digest.value !== digest.value) {
      throw new OciError('DIGEST_INVALID', 'manifest digest does not match the reference', {
        detail: { reference: reference.digest.value, computed: digest.value },
      });
    }
    const manifest = parseManifest(bytes, contentType);
    await this.assertReferencesPresent(repository, manifest);
    const extraTags = options.extraTags ?? [];
    const tags = reference.kind === 'tag' ? [reference.tag, ...extraTags] : extraTags;
    for (const tag of tags) {
      if (!options.isImmutableTag?.(tag)) continue;
      const current = await readLink(this.driver, paths.tagCurrentLink(repository, tag));
      if (current && current.value !== digest.value) {
        throw new OciError(
          'DENIED',
          `tag ${tag} is immutable and already points at ${current.value}`,
          {
            detail: { tag, digest: current.value },
          },
        );
      }
    }

    if (!(await this.blobs.exists(digest)))
      await this.driver.putContent(paths.blobData(digest), bytes);
    await this.driver.putContent(paths.revisionMediaType(repository, digest), manifest.mediaType);
    await writeLink(this.driver, paths.revisionLink(repository, digest), digest);
    if (manifest.subject) {
      await writeLink(
        this.driver,
        paths.referrerLink(repository, manifest.subject, digest),
        digest,
      );
    }
    for (const tag of tags) {
      await writeLink(this.driver, paths.tagCurrentLink(repository, tag), digest);
      await writeLink(this.driver, paths.tagIndexLink(repository, tag, digest), digest);
      this.tags.set(`${repository}:${tag}`, digest);
    }
    const key = `${repository}@${digest.value}`;
    this.manifests.set(
      key,
      { digest, bytes, mediaType: manifest.mediaType },
      bytes.length + key.length,
    );
    this.onChange(repository);
    return { digest, subject: manifest.subject };
  }

  /**
   * Deletes by tag (only the tag goes) or by digest (the manifest leaves the repository, with
   * every tag that points at it and its entry in the referrers of its subject).
   */
  async delete(
    repository: string,
    reference: ManifestReference,
    options: { isImmutableTag?: (tag: string) => boolean } = {},
  ): Promise<void> {
    const immutable = options.isImmutableTag ?? (() => false);
    if (reference.kind === 'tag') {
      await this.resolveTag(repository, reference.tag);
      // Deleting and pushing again would move it all the same.
      if (immutable(reference.tag)) throw immutableTag(reference.tag);
      await this.driver.delete(paths.tagDirectory(repository, reference.tag));
      this.tags.delete(`${repository}:${reference.tag}`);
      this.onChange(repository);
      return;
    }
    const { digest } = reference;
    const manifest = await this.getByDigest(repository, digest);
    const tags = await listOrEmpty(this.driver, paths.tagsRoot(repository));
    for (const tag of tags.filter(immutable)) {
      const current = await readLink(this.driver, paths.tagCurrentLink(repository, tag));
      if (current?.value === digest.value) throw immutableTag(tag);
    }
    // The revision goes first: a push that tags this digest meanwhile then fails its reference
    // check or recreates the revision, and no tag is left pointing at nothing.
    await this.driver.delete(paths.revisionDirectory(repository, digest));
    for (const tag of tags) {
      const current = await readLink(this.driver, paths.tagCurrentLink(repository, tag));
      if (current?.value === digest.value) {
        await this.driver.delete(paths.tagDirectory(repository, tag));
        this.tags.delete(`${repository}:${tag}`);
      }
    }
    const subject = this.parseStored(manifest)?.subject;
    if (subject) await this.driver.delete(paths.referrerEntry(repository, subject, digest));
    this.manifests.delete(`${repository}@${digest.value}`);
    this.onChange(repository);
  }

  /** A stored manifest parsed for its references; undefined for content Berth would not accept today. */
  parseStored(manifest: StoredManifest): ParsedManifest | undefined {
    try {
      return parseManifest(manifest.bytes, manifest.mediaType);
    } catch {
      return undefined;
    }
  }

  private async assertReferencesPresent(
    repository: string,
    manifest: ParsedManifest,
  ): Promise<void> {
    for (const digest of manifest.blobs) {
      try {
        await this.blobs.stat(repository, digest);
      } catch (error) {
        if (error instanceof OciError && error.code === 'BLOB_UNKNOWN')
          throw manifestBlobUnknown(digest);
        throw error;
      }
    }
    for (const digest of manifest.manifests) {
      const linked = await readLink(this.driver, paths.revisionLink(repository, digest));
      if (!linked) throw manifestBlobUnknown(digest);
    }
  }

  private async storedMediaType(
    repository: string,
    digest: Digest,
    bytes: Buffer,
  ): Promise<string> {
    try {
      return (await this.driver.getContent(paths.revisionMediaType(repository, digest)))
        .toString('utf8')
        .trim();
    } catch (error) {
      if (!(error instanceof PathNotFoundError)) throw error;
    }
    // Written by distribution, which keeps no Content-Type: the content says what it is.
    try {
      return inferMediaType(JSON.parse(bytes.toString('utf8')) as Record<string, unknown>);
    } catch {
      return 'application/octet-stream';
    }
  }
}

function immutableTag(tag: string): OciError {
  return new OciError('DENIED', `tag ${tag} is immutable`, { detail: { tag } });
}

function manifestUnknown(detail: Record<string, string>): OciError {
  return new OciError('MANIFEST_UNKNOWN', undefined, { detail });
}

function manifestBlobUnknown(digest: Digest): OciError {
  const unknown = blobUnknown(digest);
  return new OciError('MANIFEST_BLOB_UNKNOWN', unknown.message, { detail: unknown.detail });
}
