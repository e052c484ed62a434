import { createHash } from 'node:crypto';
import { isOciError, OciError } from '../errors.ts';
import { ByteLru } from '../../util/byte-lru.ts';
import { parseDigest, type Digest, type ManifestReference } from '../reference.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { blobUnknown, type BlobService } from './blobs.ts';
import { findDependent } from './dependents.ts';
import { listOrEmpty, readLink, writeLink } from './links.ts';
import type { StorageQuotas } from './quotas.ts';
import { KeyedLock } from './locks.ts';
import { inferMediaType, parseManifest, type ParsedManifest } from './manifest-schema.ts';
import type { TagService } from './tags.ts';

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
 * Manifests, and the rule that ties a repository together: every manifest's blobs and children
 * are in its repository, from a push (which checks them) until the manifest is deleted (nothing
 * it needs may leave before). Content is stored as a blob (so distribution can read it); a
 * revision link makes it part of a repository, and Berth records the pushed Content-Type beside
 * the link so the exact type comes back on pull. Reads are cached: manifests are small and hot.
 *
 * Each repository has a lock: pushes hold it shared, and what removes content a manifest may
 * need (a manifest or blob deleted by digest) holds it alone, so a push never checks a blob that
 * a delete then takes away. A read that fills the cache holds its revision's lock shared, which
 * a delete holds alone, so the cache keeps nothing a delete removed.
 */
export class ManifestService {
  private readonly driver: StorageDriver;
  private readonly blobs: BlobService;
  readonly tags: TagService;
  private readonly manifests: ByteLru<StoredManifest>;
  private readonly repositories = new KeyedLock();
  private readonly revisions = new KeyedLock();
  /** Quotas and registry-wide limits every push is held to; none when unset. */
  quotas: StorageQuotas | undefined;
  /** Called after any change to a repository's manifests or tags. */
  onChange: (repository: string) => void = () => undefined;

  constructor(
    driver: StorageDriver,
    blobs: BlobService,
    tags: TagService,
    cache: ManifestCacheOptions,
  ) {
    this.driver = driver;
    this.blobs = blobs;
    this.tags = tags;
    this.manifests = new ByteLru({ maxBytes: cache.maxBytes, ttlMillis: cache.ttlMillis });
  }

  async get(repository: string, reference: ManifestReference): Promise<StoredManifest> {
    if (reference.kind === 'digest') return this.getByDigest(repository, reference.digest);
    const digest = await this.tags.resolve(repository, reference.tag);
    // A delete removes the tags before the revision they name, so the tag just read named a
    // revision that was linked when it was read: storage need not be asked again.
    return this.getByDigest(repository, digest, { linked: true });
  }

  /** `linked`: the caller has just seen the revision linked (through a tag). */
  async getByDigest(
    repository: string,
    digest: Digest,
    options: { linked?: boolean } = {},
  ): Promise<StoredManifest> {
    const key = revisionKey(repository, digest);
    const cached = this.manifests.get(key);
    if (cached && (options.linked || (await this.stillLinked(repository, digest)))) return cached;
    return this.revisions.shared(key, async () => {
      const manifest = await this.read(repository, digest);
      this.manifests.set(key, manifest, manifest.bytes.length);
      return manifest;
    });
  }

  /**
   * A digest's bytes never change, but on shared storage another process may have deleted the
   * manifest from the repository since it was cached, so its link is asked for (one stat).
   */
  private async stillLinked(repository: string, digest: Digest): Promise<boolean> {
    if (!this.driver.shared) return true;
    if (await this.driver.stat(paths.revisionLink(repository, digest))) return true;
    this.manifests.delete(revisionKey(repository, digest));
    return false;
  }

  /**
   * Stores a manifest after checking that it is valid and that everything it references is in
   * the repository, and points the reference's tag and `extraTags` at it, holding their locks
   * throughout: of concurrent pushes to an immutable tag in this process, the first sets it and
   * the others are refused before they write anything (pushes in other processes are refused by
   * storage when they point the tag). Writes go content first, links last, so a crash leaves no
   * link to anything missing.
   */
  async put(
    repository: string,
    reference: ManifestReference,
    bytes: Buffer,
    contentType: string | undefined,
    options: {
      extraTags?: readonly string[];
      isImmutableTag?: (tag: string) => boolean;
      /**
       * A manifest copied from a mirror's upstream: what it references is fetched on first
       * pull, so it is not required to be present now.
       */
      mirrored?: boolean;
    } = {},
  ): Promise<{ digest: Digest; subject: Digest | undefined }> {
    const algorithm = reference.kind === 'digest' ? reference.digest.algorithm : 'sha256';
    const digest = parseDigest(`${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`);
    if (reference.kind === 'digest' && reference.digest.value !== digest.value) {
      throw new OciError('DIGEST_INVALID', 'manifest digest does not match the reference', {
        detail: { reference: reference.digest.value, computed: digest.value },
      });
    }
    const manifest = parseManifest(bytes, contentType);
    const extraTags = options.extraTags ?? [];
    const tags = reference.kind === 'tag' ? [reference.tag, ...extraTags] : extraTags;
    const immutable = options.isImmutableTag ?? (() => false);

    await this.repositories.shared(repository, () =>
      this.tags.locked(repository, tags, async () => {
        if (!options.mirrored) await this.assertReferencesPresent(repository, manifest);
        for (const tag of tags) {
          await this.tags.assertMayPoint(repository, tag, digest, immutable(tag));
        }
        const store = async (): Promise<void> => {
          if (!(await this.blobs.exists(digest)))
            await this.driver.putContent(paths.blobData(digest), bytes);
          await this.driver.putContent(
            paths.revisionMediaType(repository, digest),
            manifest.mediaType,
          );
          await writeLink(this.driver, paths.revisionLink(repository, digest), digest);
          if (manifest.subject) {
            await writeLink(
              this.driver,
              paths.referrerLink(repository, manifest.subject, digest),
              digest,
            );
          }
          for (const tag of tags) await this.tags.point(repository, tag, digest, immutable(tag));
        };
        // Refused before anything is written when the manifest's bytes do not fit.
        if (this.quotas) {
          await this.quotas.admit(repository, [{ digest, size: bytes.length }], store);
        } else {
          await store();
        }
        // Under the repository's lock: a delete of this digest cannot have run in between.
        const key = revisionKey(repository, digest);
        this.manifests.set(key, { digest, bytes, mediaType: manifest.mediaType }, bytes.length);
      }),
    );
    this.onChange(repository);
    return { digest, subject: manifest.subject };
  }

  /**
   * Deletes by tag (only the tag goes) or by digest (the manifest leaves the repository, with
   * every tag that points at it and its entry in the referrers of its subject). A manifest that
   * an index of the repository lists is not deleted by digest: UNSUPPORTED until the index goes.
   */
  async delete(
    repository: string,
    reference: ManifestReference,
    options: { isImmutableTag?: (tag: string) => boolean } = {},
  ): Promise<void> {
    const immutable = options.isImmutableTag ?? (() => false);
    if (reference.kind === 'tag') {
      const { tag } = reference;
      await this.repositories.shared(repository, () =>
        this.tags.locked(repository, [tag], async () => {
          if (!(await this.tags.current(repository, tag))) throw manifestUnknown({ tag });
          // Deleting and pushing again would move it all the same.
          if (immutable(tag)) throw immutableTag(tag);
          await this.tags.remove(repository, tag);
        }),
      );
      this.onChange(repository);
      return;
    }
    const { digest } = reference;
    await this.repositories.exclusive(repository, async () => {
      const manifest = await this.getByDigest(repository, digest);
      const tags = await listOrEmpty(this.driver, paths.tagsRoot(repository));
      for (const tag of tags.filter(immutable)) {
        const current = await this.tags.current(repository, tag);
        if (current?.value === digest.value) throw immutableTag(tag);
      }
      const index = await this.findDependent(repository, digest, 'manifest');
      if (index) throw stillNeeded('manifest', digest, index, 'GET, HEAD, PUT');
      // Tags go before the revision: a crash part way leaves a manifest without tags, never a
      // tag pointing at nothing.
      for (const tag of tags) {
        await this.tags.locked(repository, [tag], async () => {
          const current = await this.tags.current(repository, tag);
          if (current?.value === digest.value) await this.tags.remove(repository, tag);
        });
      }
      const key = revisionKey(repository, digest);
      await this.revisions.exclusive(key, async () => {
        await this.driver.delete(paths.revisionDirectory(repository, digest));
        this.manifests.delete(key);
      });
      const subject = this.parseStored(manifest)?.subject;
      if (subject) await this.driver.delete(paths.referrerEntry(repository, subject, digest));
    });
    this.onChange(repository);
  }

  /**
   * Removes a blob from a repository unless a manifest there still needs it (UNSUPPORTED,
   * naming the manifest): the other half of the reference check of a push. Its content stays
   * until garbage collection finds nothing linking it, as in distribution.
   */
  async deleteBlob(repository: string, digest: Digest): Promise<void> {
    await this.repositories.exclusive(repository, async () => {
      await this.blobs.stat(repository, digest);
      const manifest = await this.findDependent(repository, digest, 'blob');
      if (manifest) throw stillNeeded('blob', digest, manifest, 'GET, HEAD');
      await this.blobs.unlink(repository, digest);
    });
  }

  /**
   * Runs `task` holding the repository's lock alone, as a delete by digest does: meanwhile no
   * push of this process checks or links anything in the repository, and no tag of it moves.
   * For the garbage collector, which decides and removes under it.
   */
  whileExclusive<T>(repository: string, task: () => Promise<T>): Promise<T> {
    return this.repositories.exclusive(repository, task);
  }

  /**
   * Removes a revision (and its referrers entry) without the checks of `delete`, and drops it
   * from the cache. Only for the garbage collector, under `whileExclusive`, once it has decided
   * that nothing in the repository needs the manifest.
   */
  async forget(repository: string, digest: Digest, subject: Digest | undefined): Promise<void> {
    const key = revisionKey(repository, digest);
    await this.revisions.exclusive(key, async () => {
      await this.driver.delete(paths.revisionDirectory(repository, digest));
      this.manifests.delete(key);
    });
    if (subject) await this.driver.delete(paths.referrerEntry(repository, subject, digest));
  }

  /**
   * A manifest of the repository that needs `digest`. Reads the cache or storage, and fills no
   * cache: a search reads every manifest once and must not evict the hot ones.
   */
  private findDependent(
    repository: string,
    digest: Digest,
    as: 'blob' | 'manifest',
  ): Promise<Digest | undefined> {
    const read = async (candidate: Digest): Promise<ParsedManifest | undefined> => {
      try {
        const manifest =
          this.manifests.get(revisionKey(repository, candidate)) ??
          (await this.read(repository, candidate));
        return this.parseStored(manifest);
      } catch (error) {
        if (isOciError(error, 'MANIFEST_UNKNOWN')) return undefined;
        throw error;
      }
    };
    return findDependent(this.driver, read, repository, digest, as);
  }

  /** A manifest of the repository from storage. Throws MANIFEST_UNKNOWN. */
  private async read(repository: string, digest: Digest): Promise<StoredManifest> {
    const linked = await readLink(this.driver, paths.revisionLink(repository, digest));
    if (!linked) throw manifestUnknown({ digest: digest.value });
    let bytes: Buffer;
    try {
      bytes = await this.driver.getContent(paths.blobData(digest));
    } catch (error) {
      if (error instanceof PathNotFoundError) throw manifestUnknown({ digest: digest.value });
      throw error;
    }
    return {
      digest,
      bytes,
      mediaType: await readStoredMediaType(this.driver, repository, digest, bytes),
    };
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
}

/** The Content-Type a revision was pushed with, else what its content says it is. */
export async function readStoredMediaType(
  driver: StorageDriver,
  repository: string,
  digest: Digest,
  bytes: Buffer,
): Promise<string> {
  try {
    return (await driver.getContent(paths.revisionMediaType(repository, digest)))
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

function revisionKey(repository: string, digest: Digest): string {
  return `${repository}@${digest.value}`;
}

/**
 * Deleting what a manifest needs is refused as a DELETE this resource does not support now
 * (405, with the methods it does support in Allow), naming the manifest that needs it.
 */
function stillNeeded(
  what: 'blob' | 'manifest',
  digest: Digest,
  dependent: Digest,
  allow: string,
): OciError {
  return new OciError(
    'UNSUPPORTED',
    `${what} ${digest.value} is referenced by manifest ${dependent.value}; delete that manifest first`,
    { detail: { digest: digest.value, manifest: dependent.value }, headers: { Allow: allow } },
  );
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
