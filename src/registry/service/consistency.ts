import { createHash } from 'node:crypto';
import { parseDigest, type Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { listOrEmpty, readLink } from './links.ts';
import { parseManifest } from './manifest-schema.ts';
import { inferMediaType } from './manifest-schema.ts';
import { walkRepositories } from './repositories.ts';

export interface ConsistencyReport {
  /** Broken invariants: a link to missing content, content that does not match its digest. */
  readonly problems: string[];
  /**
   * Entries whose link was never written (a crash between creating the directory and renaming
   * the link into it). Readers treat them as absent, so they are not problems.
   */
  readonly incomplete: number;
  readonly repositories: number;
  readonly manifests: number;
  readonly blobs: number;
}

/**
 * Checks the invariants the registry promises to keep under any crash or bad request: every
 * link names content that exists (and, with `verifyContent`, hashes to its digest), every
 * manifest's blobs and children are in its repository, every tag points at a manifest of the
 * repository, and every upload has its start time.
 */
export async function checkConsistency(
  driver: StorageDriver,
  options: { verifyContent?: boolean } = {},
): Promise<ConsistencyReport> {
  const problems: string[] = [];
  let repositories = 0;
  let manifests = 0;
  let incomplete = 0;
  const verified = new Map<string, boolean>();

  const contentOk = async (digest: Digest): Promise<boolean> => {
    const known = verified.get(digest.value);
    if (known !== undefined) return known;
    const info = await driver.stat(paths.blobData(digest));
    let ok = info !== undefined && !info.isDirectory;
    if (ok && options.verifyContent) {
      const hash = createHash(digest.algorithm);
      for await (const chunk of (await driver.reader(
        paths.blobData(digest),
      )) as AsyncIterable<Buffer>)
        hash.update(chunk);
      ok = hash.digest('hex') === digest.hex;
      if (!ok) problems.push(`blob ${digest.value}: content does not match its digest`);
    }
    verified.set(digest.value, ok);
    return ok;
  };

  for await (const repository of walkRepositories(driver)) {
    repositories += 1;
    const layers = new Set<string>();
    for await (const entry of linkedEntries(driver, `${paths.repository(repository)}/_layers`)) {
      const where = `${repository}: layer ${entry.name}`;
      if (entry.state === 'incomplete') incomplete += 1;
      else if (entry.state === 'wrong') problems.push(`${where}: link missing or wrong`);
      else {
        if (!(await contentOk(entry.digest))) problems.push(`${where}: content missing`);
        layers.add(entry.digest.value);
      }
    }

    const revisions = new Set<string>();
    for await (const entry of linkedEntries(
      driver,
      `${paths.manifestsRoot(repository)}/revisions`,
    )) {
      const where = `${repository}: manifest ${entry.name}`;
      if (entry.state === 'incomplete') {
        incomplete += 1;
        continue;
      }
      if (entry.state === 'wrong') {
        problems.push(`${where}: link missing or wrong`);
        continue;
      }
      const digest = entry.digest;
      manifests += 1;
      revisions.add(digest.value);
      if (!(await contentOk(digest))) {
        problems.push(`${where}: content missing`);
        continue;
      }
      const bytes = await driver.getContent(paths.blobData(digest));
      if (createHash(digest.algorithm).update(bytes).digest('hex') !== digest.hex) {
        problems.push(`${where}: content does not match its digest`);
        continue;
      }
      let parsed;
      try {
        const json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
        if (json.schemaVersion === 1) continue;
        parsed = parseManifest(bytes, inferMediaType(json));
      } catch {
        problems.push(`${where}: not a valid manifest`);
        continue;
      }
      for (const blob of parsed.blobs) {
        if (
          !layers.has(blob.value) &&
          !(await readLink(driver, paths.layerLink(repository, blob)))
        ) {
          problems.push(`${where}: references blob ${blob.value}, which is not in the repository`);
        }
      }
      for (const child of parsed.manifests) {
        if (!(await readLink(driver, paths.revisionLink(repository, child)))) {
          problems.push(
            `${where}: references manifest ${child.value}, which is not in the repository`,
          );
        }
      }
    }

    for (const tag of await listOrEmpty(driver, paths.tagsRoot(repository))) {
      const current = await readLink(driver, paths.tagCurrentLink(repository, tag));
      if (!current) incomplete += 1;
      else if (!revisions.has(current.value))
        problems.push(`${repository}: tag ${tag} points at missing manifest ${current.value}`);
    }

    for (const id of await listOrEmpty(driver, paths.uploadsRoot(repository))) {
      if (!(await driver.stat(paths.uploadStartedAt(repository, id)))) {
        problems.push(`${repository}: upload ${id} has no start time`);
      }
    }
  }
  return { problems, incomplete, repositories, manifests, blobs: verified.size };
}

type LinkedEntry =
  | { name: string; state: 'ok'; digest: Digest }
  | { name: string; state: 'incomplete'; digest?: never }
  | { name: string; state: 'wrong'; digest?: never };

/**
 * The `<alg>/<hex>/link` entries under a directory (`_layers`, `_manifests/revisions`). An entry
 * without its link file is a write a crash interrupted; one whose link names another digest is
 * wrong.
 */
async function* linkedEntries(driver: StorageDriver, root: string): AsyncGenerator<LinkedEntry> {
  for (const algorithm of await listOrEmpty(driver, root)) {
    for (const hex of await listOrEmpty(driver, `${root}/${algorithm}`)) {
      const name = `${algorithm}:${hex}`;
      const link = `${root}/${algorithm}/${hex}/link`;
      if (!(await driver.stat(link))) {
        yield { name, state: 'incomplete' };
        continue;
      }
      const digest = await linkedDigest(driver, link, name);
      yield digest ? { name, state: 'ok', digest } : { name, state: 'wrong' };
    }
  }
}

async function linkedDigest(
  driver: StorageDriver,
  linkPath: string,
  expected: string,
): Promise<Digest | undefined> {
  let named: Digest;
  try {
    named = parseDigest(expected);
  } catch {
    return undefined;
  }
  const linked = await readLink(driver, linkPath).catch(() => undefined);
  return linked?.value === named.value ? named : undefined;
}
