import type { Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { entryDigests, readLink } from '../service/links.ts';
import { concurrently } from './concurrently.ts';

/** Links read at once: independent round trips on S3. */
const readConcurrency = 16;

export interface LinkedEntry {
  readonly digest: Digest;
  /** When the link was last written: by a push, a mount or an upload of the same content. */
  readonly linkedAt: number;
}

/**
 * The entries under `root` whose link is written and names the entry's own digest, with the
 * link's modification time. An entry without its link (a crash mid-write) is left alone.
 */
export async function linkedEntries(driver: StorageDriver, root: string): Promise<LinkedEntry[]> {
  const entries: LinkedEntry[] = [];
  await concurrently(await entryDigests(driver, root), readConcurrency, async (digest) => {
    const link = `${root}/${digest.algorithm}/${digest.hex}/link`;
    const info = await driver.stat(link);
    if (!info) return;
    const named = await readLink(driver, link).catch(() => undefined);
    if (named?.value === digest.value)
      entries.push({ digest, linkedAt: info.modifiedAt.getTime() });
  });
  // In listing order, whatever order the reads finished in.
  return entries.sort((a, b) => (a.digest.value < b.digest.value ? -1 : 1));
}
