import { OciError } from '../errors.ts';
import { StorageUnavailableError } from '../storage/driver.ts';

/**
 * Storage declining to keep content: a Repository quota or a registry-wide limit
 * (`limits.storage`) would be exceeded, or the volume is full. Mirrored content counts against
 * quotas and limits like pushed content, but only pushes are refused: a mirror then serves what
 * upstream sent without keeping it, so pulls go on while the cache is full.
 */
export function isStorageRefusal(error: unknown): boolean {
  if (error instanceof StorageUnavailableError) return error.reason === 'StorageFull';
  return (
    error instanceof OciError && (error.kind === 'QUOTA_EXCEEDED' || error.kind === 'STORAGE_FULL')
  );
}
