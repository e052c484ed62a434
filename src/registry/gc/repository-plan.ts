import type { Digest } from '../reference.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { listOrEmpty, readLink } from '../service/links.ts';
import { parseManifest, type ParsedManifest } from '../service/manifest-schema.ts';
import { readStoredMediaType } from '../service/manifests.ts';
import type { RepositoryRetention } from '../../policy/compile.ts';
import { concurrently } from './concurrently.ts';
import { linkedEntries } from './entries.ts';

export type UntaggedPolicy = 'keep' | 'delete';

export interface PlanOptions {
  /** The grace period's start: content linked (or a tag set) since is kept. */
  readonly cutoff: number;
  readonly untagged: UntaggedPolicy;
  /** The Repository's retention; without it every tag is kept. */
  readonly retention?: RepositoryRetention | undefined;
  readonly isImmutableTag?: (tag: string) => boolean;
  /** The time retention's durations count back from. */
  readonly now?: number;
}

/** A tag as the plan read it: what it pointed at and when it was last set. */
export interface TagEntry {
  readonly tag: string;
  readonly digest: Digest;
  readonly linkedAt: number;
}

/** A manifest revision the collector may remove, with what restoring it would need. */
export interface RemovableManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly subject: Digest | undefined;
}

/** What one repository keeps and gives up, decided from one consistent reading of it. */
export interface RepositoryPlan {
  readonly repository: string;
  /** Tags retention deletes; removed before the manifests. */
  readonly removeTags: TagEntry[];
  readonly removeManifests: RemovableManifest[];
  /** Layer links that no kept manifest needs and that are older than the grace period. */
  readonly removeLinks: Digest[];
  /** Every digest the repository still holds or needs after the plan: the mark. */
  readonly keeps: Set<string>;
  /** Revisions present when the plan was made: one written later is a push that raced it. */
  readonly revisionsSeen: Set<string>;
  /** Every digest the repository linked (revisions and layers) when the plan was made. */
  readonly linked: Set<string>;
}

interface Revision {
  readonly digest: Digest;
  readonly linkedAt: number;
  readonly mediaType: string;
  /** Undefined when the content is missing or Berth cannot parse it. */
  readonly parsed: ParsedManifest | undefined;
}

/**
 * Decides, for one repository, what garbage collection removes. First the tags: with a
 * retention that sets keepLast or keepTags, a tag goes unless it is among the keepLast most
 * recently set (ties by name), matches keepTags, is immutable or was set after `cutoff`.
 * Kept manifests: those a kept tag points at; untagged ones linked after `cutoff` (the grace
 * period) or that Berth cannot read; other untagged ones as retention.untaggedAfter, else
 * `untagged`, says (with `keep`, not those whose tags retention removes, nor, with
 * deleteOrphanReferrers, referrers); and, transitively, the children of a kept index and the
 * referrers of a kept manifest (those whose `subject` is kept). A layer link goes when no kept
 * manifest needs its blob and it was written before `cutoff`. A manifest Berth cannot read
 * names blobs the collector cannot know, so a repository holding one gives up no layer link.
 * The caller holds the repository's lock, so no push of this process changes it meanwhile.
 */
export async function planRepository(
  driver: StorageDriver,
  repository: string,
  options: PlanOptions,
): Promise<RepositoryPlan> {
  const revisions = new Map<string, Revision>();
  const revisionsRoot = `${paths.manifestsRoot(repository)}/revisions`;
  const entries = await linkedEntries(driver, revisionsRoot);
  const read = new Map<string, Revision>();
  await concurrently(entries, 16, async (entry) => {
    read.set(entry.digest.value, await readRevision(driver, repository, entry));
  });
  // In listing order, whatever order the reads finished in.
  for (const entry of entries)
    revisions.set(entry.digest.value, read.get(entry.digest.value) as Revision);

  const kept = new Set<string>();
  const keep = (digest: string): void => {
    if (revisions.has(digest)) kept.add(digest);
  };
  const tags = await readTags(driver, repository);
  const removeTags = tagsToRemove(tags, options);
  const removed = new Set(removeTags.map((entry) => entry.tag));
  for (const entry of tags) if (!removed.has(entry.tag)) keep(entry.digest.value);
  const dropped = new Set(removeTags.map((entry) => entry.digest.value));
  const retention = options.retention;
  const now = options.now ?? Date.now();
  for (const revision of revisions.values()) {
    const digest = revision.digest.value;
    if (revision.linkedAt >= options.cutoff || !revision.parsed) keep(digest);
    else if (retention?.deleteOrphanReferrers && revision.parsed.subject) continue;
    else if (retention?.untaggedAfter !== undefined) {
      if (revision.linkedAt >= now - retention.untaggedAfter) keep(digest);
    } else if (options.untagged === 'keep' && !dropped.has(digest)) keep(digest);
  }
  // Children of kept indexes and referrers of kept manifests, until nothing more is added.
  for (let grew = true; grew;) {
    grew = false;
    for (const revision of revisions.values()) {
      const before = kept.size;
      const parsed = revision.parsed;
      if (kept.has(revision.digest.value)) {
        for (const child of parsed?.manifests ?? []) keep(child.value);
      } else if (parsed?.subject && kept.has(parsed.subject.value)) {
        keep(revision.digest.value);
      }
      if (kept.size !== before) grew = true;
    }
  }

  const keeps = new Set<string>(kept);
  let opaque = false;
  for (const digest of kept) {
    const revision = revisions.get(digest) as Revision;
    if (!revision.parsed) opaque = true;
    for (const blob of revision.parsed?.blobs ?? []) keeps.add(blob.value);
    for (const child of revision.parsed?.manifests ?? []) keeps.add(child.value);
  }
  const removeLinks: Digest[] = [];
  const linked = new Set(revisions.keys());
  for (const link of await linkedEntries(driver, `${paths.repository(repository)}/_layers`)) {
    linked.add(link.digest.value);
    if (opaque || keeps.has(link.digest.value) || link.linkedAt >= options.cutoff) {
      keeps.add(link.digest.value);
    } else {
      removeLinks.push(link.digest);
    }
  }
  const removeManifests = [...revisions.values()]
    .filter((revision) => !kept.has(revision.digest.value))
    .map((revision) => ({
      digest: revision.digest,
      mediaType: revision.mediaType,
      subject: revision.parsed?.subject,
    }));
  return {
    repository,
    removeTags,
    removeManifests,
    removeLinks,
    keeps,
    revisionsSeen: new Set(revisions.keys()),
    linked,
  };
}

/** The repository's tags whose current link is readable, with when each was last set. */
async function readTags(driver: StorageDriver, repository: string): Promise<TagEntry[]> {
  const entries: TagEntry[] = [];
  for (const tag of await listOrEmpty(driver, paths.tagsRoot(repository))) {
    const link = paths.tagCurrentLink(repository, tag);
    const info = await driver.stat(link);
    if (!info) continue;
    const digest = await readLink(driver, link).catch(() => undefined);
    if (digest) entries.push({ tag, digest, linkedAt: info.modifiedAt.getTime() });
  }
  return entries;
}

function tagsToRemove(tags: readonly TagEntry[], options: PlanOptions): TagEntry[] {
  const retention = options.retention;
  if (!retention || (retention.keepLast === undefined && retention.keepTags.length === 0)) {
    return [];
  }
  const newestFirst = [...tags].sort(
    (a, b) => b.linkedAt - a.linkedAt || (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0),
  );
  const recent = new Set(newestFirst.slice(0, retention.keepLast ?? 0).map((entry) => entry.tag));
  const immutable = options.isImmutableTag ?? (() => false);
  return tags.filter(
    (entry) =>
      !recent.has(entry.tag) &&
      !retention.keepTags.some((pattern) => pattern.test(entry.tag)) &&
      !immutable(entry.tag) &&
      entry.linkedAt < options.cutoff,
  );
}

async function readRevision(
  driver: StorageDriver,
  repository: string,
  entry: { digest: Digest; linkedAt: number },
): Promise<Revision> {
  const { digest, linkedAt } = entry;
  let bytes: Buffer;
  try {
    bytes = await driver.getContent(paths.blobData(digest));
  } catch (error) {
    if (error instanceof PathNotFoundError)
      return { digest, linkedAt, mediaType: '', parsed: undefined };
    throw error;
  }
  const mediaType = await readStoredMediaType(driver, repository, digest, bytes);
  let parsed: ParsedManifest | undefined;
  try {
    parsed = parseManifest(bytes, mediaType);
  } catch {
    parsed = undefined;
  }
  return { digest, linkedAt, mediaType, parsed };
}
