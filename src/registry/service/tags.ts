import { OciError } from '../errors.ts';
import { isTag } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { listOrEmpty } from './links.ts';

/** Sorted tag names of a repository. Throws NAME_UNKNOWN for a repository that has no manifests. */
export async function listTags(driver: StorageDriver, repository: string): Promise<string[]> {
  const tags = await listOrEmpty(driver, paths.tagsRoot(repository));
  if (tags.length === 0 && !(await driver.stat(paths.manifestsRoot(repository)))) {
    throw new OciError('NAME_UNKNOWN', undefined, { detail: { name: repository } });
  }
  return tags.filter(isTag).sort();
}
