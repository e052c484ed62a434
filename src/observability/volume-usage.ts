import { statfs } from 'node:fs/promises';
import { Gauge, type MetricsRegistry } from './metrics.ts';

/**
 * `berth_registry_storage_capacity_bytes` and `berth_registry_storage_available_bytes` of the
 * filesystem that holds `directory` (statfs(2), read when scraped): the volume's size and what an
 * unprivileged writer can still use. Alert on their ratio before pushes get 507. The capacity is
 * the volume's, not a quota: a registry sharing its volume sees the other users' bytes too.
 */
export function registerVolumeUsage(metrics: MetricsRegistry, directory: string): void {
  const read = async (field: 'capacity' | 'available'): Promise<number> => {
    const info = await statfs(directory).catch(() => undefined);
    if (!info) return Number.NaN;
    return (field === 'capacity' ? info.blocks : info.bavail) * info.bsize;
  };
  metrics.register(
    new Gauge(
      'berth_registry_storage_capacity_bytes',
      'Size of the filesystem that holds the storage directory, in bytes.',
      () => read('capacity'),
    ),
  );
  metrics.register(
    new Gauge(
      'berth_registry_storage_available_bytes',
      'Bytes still available to the registry on the filesystem of the storage directory.',
      () => read('available'),
    ),
  );
}
