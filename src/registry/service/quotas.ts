import { statfs } from 'node:fs/promises';
import type { StorageLimits } from '../../config/registry.ts';
import type { Policy, RepositoryQuota } from '../../policy/compile.ts';
import { OciError } from '../errors.ts';
import { parseDigest, type Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { entryDigests, listOrEmpty } from './links.ts';
import { KeyedLock } from './locks.ts';
import { walkRepositories } from './repositories.ts';

/** What the quotas (and the collector, which reads the live policy here) need of it. */
export type QuotaPolicy = Pick<
  Policy,
  'quotaFor' | 'governedBy' | 'retentionFor' | 'isImmutableTag'
>;

/** The repositories one Repository governs: its source and its path (a name or `prefix/*`). */
export interface UsageScope {
  readonly source: string;
  readonly path: string;
}

/** What one Repository's repositories hold, as its quota counts it. */
export interface ScopeUsage {
  /** Bytes of unique content: each digest once. */
  readonly bytes: number;
  /** The size of each digest linked (as a layer or a manifest revision) in them. */
  readonly sizes: ReadonlyMap<string, number>;
  /** The repositories the Repository governs that exist, in walk order. */
  readonly repositories: readonly string[];
}

/** Content a push is about to link into a repository. */
export interface Addition {
  readonly digest: Digest;
  readonly size: number;
}

/** How long a measured registry-wide total is trusted, with what this process stored since. */
const storedTotalTtlMillis = 30_000;

/**
 * Storage quotas. Per Repository (`spec.quota.size`): the bytes of unique content linked (as a
 * layer or a manifest revision) in the repositories it governs, each digest counted once; a push
 * that would take that past the quota is refused with QUOTA_EXCEEDED (403 DENIED) before it
 * links anything. Registry-wide (`limits.storage`): a total size of blobs and a free-space floor
 * of the filesystem volume, refused with STORAGE_FULL (507). Only pushes are checked, so pulls,
 * deletes and garbage collection always go on.
 *
 * Checks and links of one quota are serialized in this process (`admit`); replicas sharing
 * storage may each admit one push past the quota at the same moment.
 */
export class StorageQuotas {
  readonly driver: StorageDriver;
  private readonly limits: StorageLimits;
  /** The filesystem root for the free-space floor; undefined on S3 (the config refuses it). */
  private readonly volume: string | undefined;
  private readonly scopes = new KeyedLock();
  private stored: { bytes: number; measuredAt: number } | undefined;
  /** The live policy; until it is set (an open registry), only the registry-wide limits apply. */
  policy: () => QuotaPolicy | undefined = () => undefined;

  constructor(driver: StorageDriver, limits: StorageLimits = {}, volume?: string) {
    this.driver = driver;
    this.limits = limits;
    this.volume = volume;
  }

  /**
   * Bytes a push may still write before a registry-wide limit stops it (Infinity without
   * limits). Throws STORAGE_FULL when it may write none: a new upload or chunk is refused at once.
   */
  async writeBudget(): Promise<number> {
    let budget = Number.POSITIVE_INFINITY;
    if (this.limits.minFree !== undefined && this.volume !== undefined) {
      const stats = await statfs(this.volume);
      const free = stats.bavail * stats.bsize;
      if (free <= this.limits.minFree) {
        throw storageFull(
          `registry storage is full: the volume has ${free} bytes free, below limits.storage.minFree ${this.limits.minFree}`,
          { free, minFree: this.limits.minFree },
        );
      }
      budget = free - this.limits.minFree;
    }
    if (this.limits.size !== undefined) {
      const stored = await this.storedBytes();
      if (stored >= this.limits.size) throw sizeLimitReached(this.limits.size, stored, 0);
      budget = Math.min(budget, this.limits.size - stored);
    }
    return budget;
  }

  /**
   * Runs `store`, which links `additions` into `repository`, if neither the repository's quota
   * nor a registry-wide limit is exceeded by what is new there; throws before `store` otherwise.
   */
  async admit<T>(
    repository: string,
    additions: readonly Addition[],
    store: () => Promise<T>,
  ): Promise<T> {
    const quota = this.policy()?.quotaFor(repository);
    if (!quota && this.limits.size === undefined && this.limits.minFree === undefined) {
      return store();
    }
    return this.scopes.exclusive(quota?.source ?? '', async () => {
      if (this.limits.minFree !== undefined) await this.writeBudget();
      if (quota) {
        const { bytes: usage, sizes } = await this.measure(quota);
        const adds = sum(additions.filter((addition) => !sizes.has(addition.digest.value)));
        if (adds > 0 && usage + adds > quota.bytes)
          throw quotaExceeded(repository, quota, usage, adds);
      }
      let added = 0;
      if (this.limits.size !== undefined) {
        const fresh: Addition[] = [];
        for (const addition of additions) {
          if (!(await this.exists(addition.digest))) fresh.push(addition);
        }
        added = sum(fresh);
        const stored = await this.storedBytes();
        if (added > 0 && stored + added > this.limits.size) {
          throw sizeLimitReached(this.limits.size, stored, added);
        }
      }
      const result = await store();
      if (this.stored) this.stored.bytes += added;
      return result;
    });
  }

  /** Bytes of unique content in the repositories one Repository governs, and their digests. */
  async measure(scope: UsageScope): Promise<ScopeUsage> {
    const policy = this.policy();
    const sizes = new Map<string, number>();
    const repositories: string[] = [];
    let bytes = 0;
    const start = scope.path.endsWith('/*') ? scope.path.slice(0, -2) : scope.path;
    for await (const repository of walkRepositories(this.driver, start)) {
      if (policy?.governedBy(repository) !== scope.source) continue;
      repositories.push(repository);
      for (const root of [
        `${paths.repository(repository)}/_layers`,
        `${paths.manifestsRoot(repository)}/revisions`,
      ]) {
        for (const digest of await entryDigests(this.driver, root)) {
          if (sizes.has(digest.value)) continue;
          const info = await this.driver.stat(paths.blobData(digest));
          if (!info || info.isDirectory) continue;
          sizes.set(digest.value, info.size);
          bytes += info.size;
        }
      }
    }
    return { bytes, sizes, repositories };
  }

  private async exists(digest: Digest): Promise<boolean> {
    const info = await this.driver.stat(paths.blobData(digest));
    return info !== undefined && !info.isDirectory;
  }

  /** Bytes of every blob in storage: measured at most every 30 s, plus what was admitted since. */
  private async storedBytes(): Promise<number> {
    if (this.stored && Date.now() - this.stored.measuredAt < storedTotalTtlMillis) {
      return this.stored.bytes;
    }
    let bytes = 0;
    for (const algorithm of await listOrEmpty(this.driver, paths.blobsRoot)) {
      for (const prefix of await listOrEmpty(this.driver, `${paths.blobsRoot}/${algorithm}`)) {
        const directory = `${paths.blobsRoot}/${algorithm}/${prefix}`;
        for (const hex of await listOrEmpty(this.driver, directory)) {
          let digest: Digest;
          try {
            digest = parseDigest(`${algorithm}:${hex}`);
          } catch {
            continue;
          }
          const info = await this.driver.stat(paths.blobData(digest));
          if (info && !info.isDirectory) bytes += info.size;
        }
      }
    }
    this.stored = { bytes, measuredAt: Date.now() };
    return bytes;
  }
}

function sum(additions: readonly Addition[]): number {
  return additions.reduce((total, addition) => total + addition.size, 0);
}

function quotaExceeded(
  repository: string,
  quota: RepositoryQuota,
  usage: number,
  adds: number,
): OciError {
  return new OciError(
    'QUOTA_EXCEEDED',
    `quota exceeded: Repository ${quota.source} (path ${quota.path}) has quota.size ${quota.size} (${quota.bytes} bytes) and uses ${usage} bytes; this push to ${repository} adds ${adds} bytes`,
    {
      detail: {
        repository,
        quota: { repository: quota.source, path: quota.path, size: quota.size, bytes: quota.bytes },
        usage,
        adds,
      },
    },
  );
}

function sizeLimitReached(limit: number, stored: number, adds: number): OciError {
  return storageFull(
    `registry storage is full: limits.storage.size is ${limit} bytes and ${stored} are stored; this push adds ${adds}`,
    { size: limit, stored, adds },
  );
}

function storageFull(message: string, detail: Record<string, number>): OciError {
  return new OciError('STORAGE_FULL', message, { detail: { limit: 'limits.storage', ...detail } });
}

/** A chunk stopped part way: it would have written past what a registry-wide limit leaves. */
export function budgetExhausted(budget: number): OciError {
  return storageFull(
    `registry storage is full: this chunk would write past limits.storage, which leaves room for ${budget} bytes`,
    { budget },
  );
}
