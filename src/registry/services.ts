import type { RegistryConfig } from '../config/registry.ts';
import { BlobService } from './service/blobs.ts';
import { CatalogService } from './service/catalog.ts';
import { ManifestService } from './service/manifests.ts';
import { TagService } from './service/tags.ts';
import { UploadService } from './service/uploads.ts';
import type { StorageDriver } from './storage/driver.ts';

/** Everything the HTTP layer calls; built once per process over one storage driver. */
export interface RegistryServices {
  readonly driver: StorageDriver;
  readonly blobs: BlobService;
  readonly uploads: UploadService;
  readonly manifests: ManifestService;
  readonly catalog: CatalogService;
}

export function createRegistryServices(
  driver: StorageDriver,
  config: RegistryConfig,
): RegistryServices {
  const blobs = new BlobService(driver);
  const uploads = new UploadService(driver, blobs);
  const tags = new TagService(driver, { ttlMillis: config.cache.ttl });
  const manifests = new ManifestService(driver, blobs, tags, {
    maxBytes: config.cache.manifestBytes,
    ttlMillis: config.cache.ttl,
  });
  const catalog = new CatalogService(driver, 30_000);
  manifests.onChange = (repository) => catalog.touched(repository);
  return { driver, blobs, uploads, manifests, catalog };
}
