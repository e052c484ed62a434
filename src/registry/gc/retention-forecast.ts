import type { GcConfig } from '../../config/registry.ts';
import { retentionForecastNames, type RetentionForecast } from '../../policy/source.ts';
import type { ManifestService } from '../service/manifests.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { planCollection, type RetentionSource } from './collector.ts';

/** The settings of the collection a forecast predicts: those of the registry's schedule. */
export type CollectionSettings = Pick<GcConfig, 'gracePeriod' | 'untagged'>;

/** The repositories one Repository governs, with what their content measures. */
export interface ForecastScope {
  readonly repositories: readonly string[];
  /** Size of each digest linked in them, as the Repository's usage counts it. */
  readonly sizes: ReadonlyMap<string, number>;
}

/**
 * What a collection started now would remove from `scope`'s repositories: each is planned by
 * `planCollection` under its lock, as the collector plans it, and nothing is removed. Reads
 * their tags, manifests and layer links only, never the blob store. `bytes` is how much the
 * usage drops: the sizes of removed digests no repository of the scope links after the run.
 * Blobs the collector then deletes are shared storage and not counted here.
 */
export async function forecastRetention(
  driver: StorageDriver,
  manifests: Pick<ManifestService, 'whileExclusive'>,
  settings: CollectionSettings,
  policy: RetentionSource,
  scope: ForecastScope,
): Promise<RetentionForecast> {
  const evaluatedAt = new Date();
  const cutoff = evaluatedAt.getTime() - settings.gracePeriod;
  const tags: string[] = [];
  const untagged: string[] = [];
  let manifestCount = 0;
  const removed = new Set<string>();
  const stillLinked = new Set<string>();
  for (const repository of scope.repositories) {
    const plan = await manifests.whileExclusive(repository, () =>
      planCollection(driver, repository, cutoff, { untagged: settings.untagged, policy }),
    );
    const gone = new Set([
      ...plan.removeManifests.map((manifest) => manifest.digest.value),
      ...plan.removeLinks.map((digest) => digest.value),
    ]);
    for (const digest of gone) removed.add(digest);
    for (const digest of plan.linked) if (!gone.has(digest)) stillLinked.add(digest);
    const tagged = new Set(plan.removeTags.map((entry) => entry.digest.value));
    for (const entry of plan.removeTags) tags.push(`${repository}:${entry.tag}`);
    for (const manifest of plan.removeManifests) {
      if (!tagged.has(manifest.digest.value))
        untagged.push(`${repository}@${manifest.digest.value}`);
    }
    manifestCount += plan.removeManifests.length;
  }
  let bytes = 0;
  for (const digest of removed) {
    if (!stillLinked.has(digest)) bytes += scope.sizes.get(digest) ?? 0;
  }
  return {
    evaluatedAt: evaluatedAt.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    tags: tags.length,
    manifests: manifestCount,
    bytes,
    wouldDelete: [...tags.sort(), ...untagged.sort()].slice(0, retentionForecastNames),
  };
}
