import type { StorageDriver } from '../storage/driver.ts';
import { paths, repositoryInternalDirectories } from '../storage/paths.ts';
import { listOrEmpty } from './links.ts';

/**
 * Every repository in storage, depth first in name order. A directory is a repository when it
 * holds `_manifests`, `_layers` or `_uploads`; a repository may itself contain nested ones
 * (`team/app` and `team/app/debug`).
 */
export async function* walkRepositories(
  driver: StorageDriver,
  prefix = '',
): AsyncGenerator<string> {
  const directory = prefix === '' ? paths.repositories : paths.repository(prefix);
  const children = (await listOrEmpty(driver, directory)).sort();
  if (prefix !== '' && children.some((child) => repositoryInternalDirectories.has(child))) {
    yield prefix;
  }
  for (const child of children) {
    if (child.startsWith('_') || child.startsWith('.')) continue;
    yield* walkRepositories(driver, prefix === '' ? child : `${prefix}/${child}`);
  }
}
