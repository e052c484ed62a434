import { setTimeout as sleep } from 'node:timers/promises';
import { parseDigest, type Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { entryDigests, listOrEmpty, writeLink } from '../service/links.ts';
import type { ManifestService } from '../service/manifests.ts';
import { walkRepositories } from '../service/repositories.ts';
import { concurrently } from './concurrently.ts';
import type { CollectorLease } from './lease.ts';
import type { RepositoryRetention } from '../../policy/compile.ts';
import {
  planRepository,
  type RepositoryPlan,
  type TagEntry,
  type UntaggedPolicy,
} from './repository-plan.ts';

/** Blobs on their way out: moved here, and back if a link to them appears before they go. */
export const trashDirectory = '/_berth/gc-trash';

/** Storage calls in flight at once when moving or deleting blobs, and when reading their sizes. */
const storageConcurrency = 16;

export interface CollectionOptions {
  /** Content written, linked or mounted more recently than this is kept. */
  readonly gracePeriodMillis: number;
  readonly untagged: UntaggedPolicy;
  /** Decide and report, remove nothing. */
  readonly dryRun: boolean;
  /** Per-repository retention and immutable tags (the live policy); none keeps every tag. */
  readonly policy?: RetentionSource | undefined;
}

/** What the collector needs of the policy; `Policy` is one. */
export interface RetentionSource {
  retentionFor(repository: string): RepositoryRetention | undefined;
  isImmutableTag(repository: string, tag: string): boolean;
}

export interface CollectionReport {
  readonly dryRun: boolean;
  readonly removedTags: { repository: string; tag: string; digest: string }[];
  readonly removedManifests: { repository: string; digest: string }[];
  readonly removedLinks: { repository: string; digest: string }[];
  readonly removedBlobs: { digest: string; size: number }[];
  /** Links or blobs put back because a push that raced the collector needed them. */
  readonly restored: number;
  readonly bytesFreed: number;
}

export class LeaseLostError extends Error {
  constructor() {
    super('the collector lease was lost; stopped before removing more');
    this.name = 'LeaseLostError';
  }
}

/**
 * One garbage collection over all of storage, while pushes go on:
 *
 * 1. Per repository, under its lock (`ManifestService.whileExclusive`, which every push,
 *    tag move and delete of this process also takes), plan (`planRepository`) and remove the
 *    untagged manifests and unneeded layer links it names. The plan's `keeps` join the mark.
 * 2. Every blob that nothing marked keeps and that was written before the grace period began
 *    is moved to the trash (a blob's data is never removed in place).
 * 3. After a settle pause (a push in another process that checked content before step 1 or 2
 *    has written its link by then), whatever a link now names is put back: a repository's new
 *    revisions that need a removed link or manifest get it back, and a trashed blob that any
 *    repository links is restored. The rest of the trash is deleted.
 *
 * Uploads in progress live under `_uploads`, which the collector never touches; a finished
 * upload's blob and link are younger than the grace period.
 */
export async function collectGarbage(
  driver: StorageDriver,
  manifests: ManifestService,
  lease: CollectorLease,
  options: CollectionOptions,
): Promise<CollectionReport> {
  const cutoff = Date.now() - options.gracePeriodMillis;
  const settleMillis = Math.min(options.gracePeriodMillis, 10_000);
  const report = {
    dryRun: options.dryRun,
    removedTags: [] as { repository: string; tag: string; digest: string }[],
    removedManifests: [] as { repository: string; digest: string }[],
    removedLinks: [] as { repository: string; digest: string }[],
    removedBlobs: [] as { digest: string; size: number }[],
    restored: 0,
    bytesFreed: 0,
  };
  const assertLease = async (): Promise<void> => {
    if (!options.dryRun && !(await lease.held())) throw new LeaseLostError();
  };
  if (!options.dryRun) report.restored += await restoreLeftoverTrash(driver);

  const marked = new Set<string>();
  const changed: RepositoryPlan[] = [];
  for await (const repository of walkRepositories(driver)) {
    await manifests.whileExclusive(repository, async () => {
      const plan = await planCollection(driver, repository, cutoff, options);
      for (const digest of plan.keeps) marked.add(digest);
      const removesNothing =
        plan.removeTags.length === 0 &&
        plan.removeManifests.length === 0 &&
        plan.removeLinks.length === 0;
      if (removesNothing) return;
      changed.push(plan);
      await assertLease();
      // Tags first: a crash part way leaves manifests without tags, never a tag pointing at
      // nothing. The next plans of this run see the tags gone.
      for (const entry of plan.removeTags) {
        if (!options.dryRun) await removeTag(driver, manifests, repository, entry);
        report.removedTags.push({ repository, tag: entry.tag, digest: entry.digest.value });
      }
      // Each removal is independent of the others (a delete on S3 is several round trips).
      await concurrently(plan.removeManifests, storageConcurrency, async (manifest) => {
        if (!options.dryRun) await manifests.forget(repository, manifest.digest, manifest.subject);
        report.removedManifests.push({ repository, digest: manifest.digest.value });
      });
      await concurrently(plan.removeLinks, storageConcurrency, async (digest) => {
        if (!options.dryRun) await driver.delete(paths.layerDirectory(repository, digest));
        report.removedLinks.push({ repository, digest: digest.value });
      });
    });
  }

  const trashed: { digest: Digest; size: number }[] = [];
  for await (const batch of storedBlobs(driver)) {
    const unmarked = batch.filter(
      (blob) => !marked.has(blob.digest.value) && blob.writtenAt < cutoff,
    );
    if (options.dryRun) {
      for (const blob of unmarked) {
        report.removedBlobs.push({ digest: blob.digest.value, size: blob.size });
        report.bytesFreed += blob.size;
      }
      continue;
    }
    if (unmarked.length === 0) continue;
    // One lease check per batch: a lease lasts far longer than one batch of moves takes.
    await assertLease();
    await concurrently(unmarked, storageConcurrency, async (blob) => {
      await driver.move(paths.blobData(blob.digest), trashPath(blob.digest));
      trashed.push(blob);
    });
  }
  if (options.dryRun || (changed.length === 0 && trashed.length === 0)) return report;

  await sleep(settleMillis);
  const needed = new Set<string>();
  for (const plan of changed) {
    report.restored += await restoreRacedPush(driver, manifests, plan, needed);
  }
  for (const digest of await linkedAnywhere(driver, trashed)) needed.add(digest);
  await concurrently(trashed, storageConcurrency, async (blob) => {
    if (needed.has(blob.digest.value)) {
      await restoreBlob(driver, blob.digest);
      report.restored += 1;
      return;
    }
    // Only the trashed copy: an upload may have stored the same content again meanwhile, so
    // the blob's directory stays (the next upload of this digest reuses it).
    await driver.delete(trashPath(blob.digest));
    report.removedBlobs.push({ digest: blob.digest.value, size: blob.size });
    report.bytesFreed += blob.size;
  });
  return report;
}

/**
 * The plan of one repository in a collection whose grace period began at `cutoff`, with the
 * retention and immutable tags of the policy. The collector and the retention forecast
 * (`retention-forecast.ts`) both plan through it, so a forecast is a dry run of the same plan.
 * The caller holds the repository's lock (`ManifestService.whileExclusive`).
 */
export function planCollection(
  driver: StorageDriver,
  repository: string,
  cutoff: number,
  options: Pick<CollectionOptions, 'untagged' | 'policy'>,
): Promise<RepositoryPlan> {
  const policy = options.policy;
  return planRepository(driver, repository, {
    cutoff,
    untagged: options.untagged,
    retention: policy?.retentionFor(repository),
    isImmutableTag: (tag) => policy?.isImmutableTag(repository, tag) ?? false,
  });
}

/**
 * Removes a tag retention gave up, unless it was set again since the plan read it (a push in
 * another process, which the repository's lock does not hold off): then it stays.
 */
async function removeTag(
  driver: StorageDriver,
  manifests: ManifestService,
  repository: string,
  entry: TagEntry,
): Promise<void> {
  await manifests.tags.locked(repository, [entry.tag], async () => {
    const info = await driver.stat(paths.tagCurrentLink(repository, entry.tag));
    const current = await manifests.tags.current(repository, entry.tag);
    if (info?.modifiedAt.getTime() !== entry.linkedAt || current?.value !== entry.digest.value)
      return;
    await manifests.tags.remove(repository, entry.tag);
  });
}

/**
 * A push elsewhere that checked the repository before its plan removed something, and linked
 * its manifest after: the new revision gets back the layer links and child manifests it needs.
 * Adds the digests it needs to `needed`, so their blobs leave the trash. Returns how many
 * entries it restored.
 */
async function restoreRacedPush(
  driver: StorageDriver,
  manifests: ManifestService,
  plan: RepositoryPlan,
  needed: Set<string>,
): Promise<number> {
  const { repository } = plan;
  return manifests.whileExclusive(repository, async () => {
    const revisionsRoot = `${paths.manifestsRoot(repository)}/revisions`;
    const raced = (await entryDigests(driver, revisionsRoot)).filter(
      (digest) => !plan.revisionsSeen.has(digest.value),
    );
    if (raced.length === 0) return 0;
    const now = await planRepository(driver, repository, { cutoff: Infinity, untagged: 'keep' });
    let restored = 0;
    for (const digest of plan.removeLinks) {
      if (!now.keeps.has(digest.value)) continue;
      needed.add(digest.value);
      await writeLink(driver, paths.layerLink(repository, digest), digest);
      restored += 1;
    }
    for (const manifest of plan.removeManifests) {
      if (!now.keeps.has(manifest.digest.value)) continue;
      needed.add(manifest.digest.value);
      await driver.putContent(
        paths.revisionMediaType(repository, manifest.digest),
        manifest.mediaType,
      );
      await writeLink(driver, paths.revisionLink(repository, manifest.digest), manifest.digest);
      restored += 1;
    }
    return restored;
  });
}

/** Which of `blobs` some repository links now, as a layer or as a manifest revision. */
async function linkedAnywhere(
  driver: StorageDriver,
  blobs: readonly { digest: Digest }[],
): Promise<string[]> {
  const wanted = new Set(blobs.map((blob) => blob.digest.value));
  const linked: string[] = [];
  if (wanted.size === 0) return linked;
  for await (const repository of walkRepositories(driver)) {
    for (const root of [
      `${paths.repository(repository)}/_layers`,
      `${paths.manifestsRoot(repository)}/revisions`,
    ]) {
      for (const digest of await entryDigests(driver, root)) {
        if (wanted.has(digest.value)) linked.push(digest.value);
      }
    }
  }
  return linked;
}

/** Puts a trashed blob back, unless an upload has meanwhile stored the same content again. */
async function restoreBlob(driver: StorageDriver, digest: Digest): Promise<void> {
  if (await driver.stat(paths.blobData(digest))) await driver.delete(trashPath(digest));
  else await driver.move(trashPath(digest), paths.blobData(digest));
}

/**
 * Trash a crashed or stopped collection left: every blob goes back to where it was, and this
 * run decides about it again.
 */
async function restoreLeftoverTrash(driver: StorageDriver): Promise<number> {
  let restored = 0;
  for (const algorithm of await listOrEmpty(driver, trashDirectory)) {
    for (const hex of await listOrEmpty(driver, `${trashDirectory}/${algorithm}`)) {
      let digest: Digest;
      try {
        digest = parseDigest(`${algorithm}:${hex}`);
      } catch {
        continue;
      }
      await restoreBlob(driver, digest);
      restored += 1;
    }
  }
  return restored;
}

interface StoredBlob {
  readonly digest: Digest;
  readonly size: number;
  readonly writtenAt: number;
}

/**
 * Every blob in storage with its size and when its data was written, a prefix directory
 * (`blobs/sha256/ab`) at a time, so memory holds one directory's blobs, not the store's.
 */
async function* storedBlobs(driver: StorageDriver): AsyncGenerator<StoredBlob[]> {
  for (const algorithm of await listOrEmpty(driver, paths.blobsRoot)) {
    for (const prefix of await listOrEmpty(driver, `${paths.blobsRoot}/${algorithm}`)) {
      const digests: Digest[] = [];
      for (const hex of await listOrEmpty(driver, `${paths.blobsRoot}/${algorithm}/${prefix}`)) {
        try {
          digests.push(parseDigest(`${algorithm}:${hex}`));
        } catch {
          // Not a blob: nothing to collect.
        }
      }
      const batch: StoredBlob[] = [];
      await concurrently(digests, storageConcurrency, async (digest) => {
        const info = await driver.stat(paths.blobData(digest));
        if (!info || info.isDirectory) return;
        batch.push({ digest, size: info.size, writtenAt: info.modifiedAt.getTime() });
      });
      yield batch;
    }
  }
}

function trashPath(digest: Digest): string {
  return `${trashDirectory}/${digest.algorithm}/${digest.hex}`;
}
