import type { GcConfig } from '../../config/registry.ts';
import type { StorageDriver } from '../storage/driver.ts';
import type { ManifestService } from '../service/manifests.ts';
import { collectGarbage, type CollectionReport, type RetentionSource } from './collector.ts';
import { CollectorLease } from './lease.ts';

/** How long a collector's lease lasts unrenewed: a crashed collector blocks others this long. */
export const leaseTtlMillis = 30_000;

export type CollectionOutcome =
  | { readonly result: 'success'; readonly report: CollectionReport }
  /** Another process sharing the storage holds the lease and is collecting. */
  | { readonly result: 'skipped' };

/** One collection under the storage-wide lease; a dry run takes it too, so it sees a still store. */
export async function runCollection(
  driver: StorageDriver,
  manifests: ManifestService,
  settings: Pick<GcConfig, 'gracePeriod' | 'untagged'>,
  options: { dryRun: boolean; policy?: RetentionSource | undefined },
): Promise<CollectionOutcome> {
  const lease = new CollectorLease(driver, leaseTtlMillis);
  if (!(await lease.acquire())) return { result: 'skipped' };
  try {
    const report = await collectGarbage(driver, manifests, lease, {
      gracePeriodMillis: settings.gracePeriod,
      untagged: settings.untagged,
      dryRun: options.dryRun,
      policy: options.policy,
    });
    return { result: 'success', report };
  } finally {
    await lease.release();
  }
}
