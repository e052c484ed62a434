import type { RegistryConfig } from '../config/registry.ts';
import type { Logger } from '../observability/logger.ts';
import { MetricsRegistry } from '../observability/metrics.ts';
import { MirrorMetrics } from './mirror/metrics.ts';
import { MirrorService } from './mirror/mirrors.ts';
import { BlobService } from './service/blobs.ts';
import { CatalogService } from './service/catalog.ts';
import { ManifestService } from './service/manifests.ts';
import { StorageQuotas } from './service/quotas.ts';
import { ReferrerService } from './service/referrers.ts';
import { TagService } from './service/tags.ts';
import { UploadService } from './service/uploads.ts';
import type { StorageDriver } from './storage/driver.ts';

/** Everything the HTTP layer calls; built once per process over one storage driver. */
export interface RegistryServices {
  readonly driver: StorageDriver;
  readonly blobs: BlobService;
  readonly uploads: UploadService;
  readonly manifests: ManifestService;
  readonly tags: TagService;
  readonly referrers: ReferrerService;
  readonly catalog: CatalogService;
  /** Repository quotas and registry-wide storage limits; the server gives it the live policy. */
  readonly quotas: StorageQuotas;
  /** Pull-through mirrors; resolves no repository when none is configured. */
  readonly mirrors: MirrorService;
}

export function createRegistryServices(
  driver: StorageDriver,
  config: RegistryConfig,
  observe: { metrics?: MetricsRegistry; logger?: Logger } = {},
): RegistryServices {
  const blobs = new BlobService(driver);
  const uploads = new UploadService(driver, blobs);
  const tags = new TagService(driver, { ttlMillis: config.cache.ttl });
  const manifests = new ManifestService(driver, blobs, tags, {
    maxBytes: config.cache.manifestBytes,
    ttlMillis: config.cache.ttl,
  });
  const referrers = new ReferrerService(driver, manifests);
  const quotas = new StorageQuotas(
    driver,
    config.limits.storage,
    config.storage.filesystem?.rootDirectory,
  );
  blobs.quotas = quotas;
  uploads.quotas = quotas;
  manifests.quotas = quotas;
  const catalog = new CatalogService(driver, 30_000);
  manifests.onChange = (repository) => catalog.touched(repository);
  const mirrors = new MirrorService(config.mirrors, {
    blobs,
    uploads,
    manifests,
    metrics: new MirrorMetrics(observe.metrics ?? new MetricsRegistry()),
    logger: observe.logger,
  });
  return { driver, blobs, uploads, manifests, tags, referrers, catalog, mirrors, quotas };
}
