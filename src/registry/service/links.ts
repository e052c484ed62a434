import { parseDigest, type Digest } from '../reference.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/driver.ts';

/** Reads a `link` file; undefined when it does not exist. */
export async function readLink(driver: StorageDriver, path: string): Promise<Digest | undefined> {
  try {
    const content = await driver.getContent(path);
    return parseDigest(content.toString('utf8').trim());
  } catch (error) {
    if (error instanceof PathNotFoundError) return undefined;
    throw error;
  }
}

export async function writeLink(
  driver: StorageDriver,
  path: string,
  digest: Digest,
): Promise<void> {
  await driver.putContent(path, digest.value);
}

/** Lists a directory, treating a missing one as empty. */
export async function listOrEmpty(driver: StorageDriver, path: string): Promise<string[]> {
  try {
    return await driver.list(path);
  } catch (error) {
    if (error instanceof PathNotFoundError) return [];
    throw error;
  }
}

/**
 * The digests named by `<alg>/<hex>` directories under `root` (`_layers`,
 * `_manifests/revisions`), without reading their links: what a listing alone can say.
 */
export async function entryDigests(driver: StorageDriver, root: string): Promise<Digest[]> {
  const digests: Digest[] = [];
  for (const algorithm of await listOrEmpty(driver, root)) {
    for (const hex of await listOrEmpty(driver, `${root}/${algorithm}`)) {
      try {
        digests.push(parseDigest(`${algorithm}:${hex}`));
      } catch {
        // Not written by Berth or distribution: it names nothing.
      }
    }
  }
  return digests;
}
