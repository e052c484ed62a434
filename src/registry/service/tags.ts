import { ByteLru } from '../../util/byte-lru.ts';
import { OciError } from '../errors.ts';
import { isTag, type Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { listOrEmpty, readLink, writeLink } from './links.ts';
import { KeyedLock } from './locks.ts';

/** Memory for cached tags; each holds its key and a digest. */
const cacheBytes = 8 * 1024 * 1024;
/** Heap bytes of a Digest: its record and two strings of up to 135 characters. */
const digestBytes = 400;

/**
 * Tags of every repository: what each points at (cached), moving and removing them.
 *
 * Writes to one tag are linearizable. In this process every write holds the tag's lock, and a
 * read that fills the cache from storage holds it shared, so the cache never keeps a value a
 * finished write replaced. Across processes sharing storage (replicas on one bucket), a mutable
 * tag is a blind atomic replace, last writer wins, and an immutable tag is made with the
 * driver's conditional create, so exactly one push sets it wherever the pushes run. On shared
 * storage (`StorageDriver.shared`) tags are not cached at all: a tag moved through any replica
 * is served by every other on the next request.
 */
export class TagService {
  private readonly driver: StorageDriver;
  /** Absent on shared storage, where another process may move a tag at any time. */
  private readonly cache: ByteLru<Digest> | undefined;
  private readonly locks = new KeyedLock();

  constructor(driver: StorageDriver, cache: { ttlMillis: number }) {
    this.driver = driver;
    this.cache = driver.shared
      ? undefined
      : new ByteLru({ maxBytes: cacheBytes, ttlMillis: cache.ttlMillis });
  }

  /** What the tag points at. Throws MANIFEST_UNKNOWN. */
  async resolve(repository: string, tag: string): Promise<Digest> {
    const key = tagKey(repository, tag);
    const digest =
      this.cache?.get(key) ??
      (await this.locks.shared(key, async () => {
        const stored = await this.current(repository, tag);
        if (stored) this.cache?.set(key, stored, digestBytes);
        return stored;
      }));
    if (!digest) throw new OciError('MANIFEST_UNKNOWN', undefined, { detail: { tag } });
    return digest;
  }

  /** What the tag points at in storage, past the cache; undefined when it does not exist. */
  current(repository: string, tag: string): Promise<Digest | undefined> {
    return readLink(this.driver, paths.tagCurrentLink(repository, tag));
  }

  /** Runs `task` holding the write locks of the given tags, which `point` and `remove` need. */
  locked<T>(repository: string, tags: readonly string[], task: () => Promise<T>): Promise<T> {
    return this.locks.exclusiveAll(
      tags.map((tag) => tagKey(repository, tag)),
      task,
    );
  }

  /**
   * Refuses to move an immutable tag that points elsewhere, so that a refused push can stop
   * before writing anything. With the tag's lock held this decides for this process; `point`
   * decides again in storage, for writers elsewhere.
   */
  async assertMayPoint(
    repository: string,
    tag: string,
    digest: Digest,
    immutable: boolean,
  ): Promise<void> {
    if (!immutable) return;
    const current = await this.current(repository, tag);
    if (current && current.value !== digest.value) throw immutableTagMoved(tag, current);
  }

  /**
   * Points the tag at `digest`. An immutable tag is created, never replaced: pointing it again
   * at the same digest is allowed, at another is DENIED. Needs the tag's lock (`locked`).
   */
  async point(repository: string, tag: string, digest: Digest, immutable: boolean): Promise<void> {
    const key = tagKey(repository, tag);
    const link = paths.tagCurrentLink(repository, tag);
    // Until this write is done, readers go to storage: it may fail half way.
    this.cache?.delete(key);
    if (!immutable) {
      await writeLink(this.driver, link, digest);
    } else if (!(await this.driver.createContent(link, digest.value))) {
      const current = await this.current(repository, tag);
      if (current?.value !== digest.value) throw immutableTagMoved(tag, current);
    }
    await writeLink(this.driver, paths.tagIndexLink(repository, tag, digest), digest);
    this.cache?.set(key, digest, digestBytes);
  }

  /** Removes the tag. Needs the tag's lock (`locked`). */
  async remove(repository: string, tag: string): Promise<void> {
    this.cache?.delete(tagKey(repository, tag));
    await this.driver.delete(paths.tagDirectory(repository, tag));
  }

  /**
   * Sorted tag names of a repository. A tag directory without its `current/link` is a write
   * that never finished (a crash between mkdir and rename) and is not listed. Throws
   * NAME_UNKNOWN for a repository that has no manifests.
   */
  async list(repository: string): Promise<string[]> {
    const names = (await listOrEmpty(this.driver, paths.tagsRoot(repository))).filter(isTag);
    if (names.length === 0 && !(await this.driver.stat(paths.manifestsRoot(repository)))) {
      throw new OciError('NAME_UNKNOWN', undefined, { detail: { name: repository } });
    }
    const complete = await Promise.all(
      names.map(async (tag) =>
        (await this.driver.stat(paths.tagCurrentLink(repository, tag))) ? tag : undefined,
      ),
    );
    return complete.filter((tag): tag is string => tag !== undefined).sort();
  }
}

function tagKey(repository: string, tag: string): string {
  return `${repository}:${tag}`;
}

function immutableTagMoved(tag: string, current: Digest | undefined): OciError {
  return new OciError(
    'DENIED',
    `tag ${tag} is immutable and already points at ${current?.value ?? 'another manifest'}`,
    { detail: { tag, digest: current?.value } },
  );
}
