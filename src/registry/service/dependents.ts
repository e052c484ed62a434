import type { Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { entryDigests } from './links.ts';
import type { ParsedManifest } from './manifest-schema.ts';

/** Manifests read at once while searching: enough to overlap storage latency, few enough to share it. */
const parallelReads = 8;

/**
 * A manifest of `repository` that needs `digest` to be in it: as its config or a layer
 * (`as: 'blob'`), or as a child of an index (`as: 'manifest'`); undefined when none does. A
 * push checks that a manifest names only content of its own repository, so only that
 * repository's manifests are read, each once (through `read`, which should serve hot ones from
 * memory), until one is found. A `subject` is not a need: a referrer may outlive its subject.
 * `read` answers undefined for a manifest that is gone or that Berth cannot parse.
 */
export async function findDependent(
  driver: StorageDriver,
  read: (digest: Digest) => Promise<ParsedManifest | undefined>,
  repository: string,
  digest: Digest,
  as: 'blob' | 'manifest',
): Promise<Digest | undefined> {
  const candidates = await revisions(driver, repository);
  let found: Digest | undefined;
  const worker = async (): Promise<void> => {
    for (let next = candidates.pop(); next && !found; next = candidates.pop()) {
      const manifest = await read(next);
      const needs = as === 'blob' ? manifest?.blobs : manifest?.manifests;
      if (needs?.some((needed) => needed.value === digest.value)) found ??= next;
    }
  };
  await Promise.all(Array.from({ length: parallelReads }, worker));
  return found;
}

/** Digests of every manifest revision in the repository. */
function revisions(driver: StorageDriver, repository: string): Promise<Digest[]> {
  return entryDigests(driver, `${paths.manifestsRoot(repository)}/revisions`);
}
