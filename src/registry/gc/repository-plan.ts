import type { Digest } from '../reference.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { listOrEmpty, readLink } from '../service/links.ts';
import { parseManifest, type ParsedManifest } from '../service/manifest-schema.ts';
import { readStoredMediaType } from '../service/manifests.ts';
import { linkedEntries } from './entries.ts';

export type UntaggedPolicy = 'keep' | 'delete';

/** A manifest revision the collector may remove, with what restoring it would need. */
export interface RemovableManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly subject: Digest | undefined;
}

/** What one repository keeps and gives up, decided from one consistent reading of it. */
export interface RepositoryPlan {
  readonly repository: string;
  readonly removeManifests: RemovableManifest[];
  /** Layer links that no kept manifest needs and that are older than the grace period. */
  readonly removeLinks: Digest[];
  /** Every digest the repository still holds or needs after the plan: the mark. */
  readonly keeps: Set<string>;
  /** Revisions present when the plan was made: one written later is a push that raced it. */
  readonly revisionsSeen: Set<string>;
}

interface Revision {
  readonly digest: Digest;
  readonly linkedAt: number;
  readonly mediaType: string;
  /** Undefined when the content is missing or Berth cannot parse it. */
  readonly parsed: ParsedManifest | undefined;
}

/**
 * Decides, for one repository, what garbage collection removes. Kept manifests: those a tag
 * points at, every revision when untagged ones are kept, revisions linked after `cutoff` (the
 * grace period), and, transitively, the children of a kept index and the referrers of a kept
 * manifest (those whose `subject` is kept). A layer link goes when no kept manifest needs its
 * blob and it was written before `cutoff`. A manifest Berth cannot read names blobs the
 * collector cannot know, so a repository holding one gives up no layer link at all.
 * The caller holds the repository's lock, so no push of this process changes it meanwhile.
 */
export async function planRepository(
  driver: StorageDriver,
  repository: string,
  options: { cutoff: number; untagged: UntaggedPolicy },
): Promise<RepositoryPlan> {
  const revisions = new Map<string, Revision>();
  const revisionsRoot = `${paths.manifestsRoot(repository)}/revisions`;
  for (const entry of await linkedEntries(driver, revisionsRoot)) {
    revisions.set(entry.digest.value, await readRevision(driver, repository, entry));
  }

  const kept = new Set<string>();
  const keep = (digest: string): void => {
    if (revisions.has(digest)) kept.add(digest);
  };
  for (const tag of await listOrEmpty(driver, paths.tagsRoot(repository))) {
    const current = await readLink(driver, paths.tagCurrentLink(repository, tag)).catch(
      () => undefined,
    );
    if (current) keep(current.value);
  }
  for (const revision of revisions.values()) {
    const young = revision.linkedAt >= options.cutoff;
    if (options.untagged === 'keep' || young || !revision.parsed) keep(revision.digest.value);
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
  for (const link of await linkedEntries(driver, `${paths.repository(repository)}/_layers`)) {
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
    removeManifests,
    removeLinks,
    keeps,
    revisionsSeen: new Set(revisions.keys()),
  };
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
