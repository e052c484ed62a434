import { OciError } from '../errors.ts';
import { isTag } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { listOrEmpty } from './links.ts';

/**
 * Sorted tag names of a repository. A tag directory without its `current/link` is a write that
 * never finished (a crash between mkdir and rename) and is not listed. Throws NAME_UNKNOWN for a
 * repository that has no manifests.
 */
export async function listTags(driver: StorageDriver, repository: string): Promise<string[]> {
  const names = (await listOrEmpty(driver, paths.tagsRoot(repository))).filter(isTag);
  if (names.length === 0 && !(await driver.stat(paths.manifestsRoot(repository)))) {
    throw new OciError('NAME_UNKNOWN', undefined, { detail: { name: repository } });
  }
  const complete = await Promise.all(
    names.map(async (tag) =>
      (await driver.stat(paths.tagCurrentLink(repository, tag))) ? tag : undefined,
    ),
  );
  return complete.filter((tag): tag is string => tag !== undefined).sort();
}
