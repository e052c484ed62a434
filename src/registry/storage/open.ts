import type { RegistryConfig } from '../../config/registry.ts';
import type { StorageDriver } from './driver.ts';
import { FilesystemDriver } from './filesystem/driver.ts';
import { loadS3Credentials } from './s3/credentials.ts';
import { S3Driver } from './s3/driver.ts';

/** The driver `storage` configures. S3 credentials are read now, so that their absence fails start. */
export function openStorage(storage: RegistryConfig['storage']): StorageDriver {
  if (storage.s3) {
    const credentials = loadS3Credentials();
    return new S3Driver({ ...storage.s3, credentials: () => credentials });
  }
  return new FilesystemDriver(storage.filesystem?.rootDirectory ?? './data');
}

/** Where storage is, for logs: a directory or `s3://bucket/prefix` (never a credential). */
export function describeStorage(storage: RegistryConfig['storage']): string {
  if (storage.s3) return `s3://${storage.s3.bucket}/${storage.s3.prefix ?? ''}`;
  return storage.filesystem?.rootDirectory ?? './data';
}
