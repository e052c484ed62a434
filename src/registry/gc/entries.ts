import type { Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { entryDigests, readLink } from '../service/links.ts';

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
  for (const digest of await entryDigests(driver, root)) {
    const link = `${root}/${digest.algorithm}/${digest.hex}/link`;
    const info = await driver.stat(link);
    if (!info) continue;
    const named = await readLink(driver, link).catch(() => undefined);
    if (named?.value === digest.value)
      entries.push({ digest, linkedAt: info.modifiedAt.getTime() });
  }
  return entries;
}
