import type { Writable } from 'node:stream';
import { OciError } from '../errors.ts';
import type { Digest } from '../reference.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { readLink, writeLink } from './links.ts';
import type { StorageQuotas } from './quotas.ts';

export interface BlobRange {
  /** First byte, inclusive. */
  readonly start: number;
  /** Last byte, inclusive. */
  readonly end: number;
}

/**
 * Blobs as a repository sees them: content is shared across repositories, but a repository can
 * read only the blobs linked into it, so one tenant's digest never leaks into another's name.
 */
export class BlobService {
  private readonly driver: StorageDriver;
  /** Quotas a mount is held to; none when unset. */
  quotas: StorageQuotas | undefined;

  constructor(driver: StorageDriver) {
    this.driver = driver;
  }

  /** Size of a blob linked into the repository. Throws BLOB_UNKNOWN. */
  async stat(repository: string, digest: Digest): Promise<number> {
    const linked = await readLink(this.driver, paths.layerLink(repository, digest));
    if (!linked || linked.value !== digest.value) throw blobUnknown(digest);
    const info = await this.driver.stat(paths.blobData(digest));
    if (!info || info.isDirectory) throw blobUnknown(digest);
    return info.size;
  }

  /** Sends the blob's bytes, whole or in the given range, into `destination`. */
  async send(digest: Digest, destination: Writable, range?: BlobRange): Promise<void> {
    await this.driver.pipeTo(
      paths.blobData(digest),
      destination,
      range ? { offset: range.start, end: range.end } : { offset: 0 },
    );
  }

  /** Whether the content exists at all, in any repository. */
  async exists(digest: Digest): Promise<boolean> {
    const info = await this.driver.stat(paths.blobData(digest));
    return info !== undefined && !info.isDirectory;
  }

  /** Links existing content into a repository. */
  async link(repository: string, digest: Digest): Promise<void> {
    await writeLink(this.driver, paths.layerLink(repository, digest), digest);
  }

  /**
   * Cross-repository mount: links a blob that `source` can read into `target`. Returns false
   * when the source does not have it, so the caller can fall back to an upload session. A
   * mount counts against the target's quota like an upload of the same content.
   */
  async mount(target: string, source: string, digest: Digest): Promise<boolean> {
    let size: number;
    try {
      size = await this.stat(source, digest);
    } catch (error) {
      if (error instanceof OciError && error.code === 'BLOB_UNKNOWN') return false;
      throw error;
    }
    if (this.quotas)
      await this.quotas.admit(target, [{ digest, size }], () => this.link(target, digest));
    else await this.link(target, digest);
    return true;
  }

  /**
   * Unlinks a blob from a repository; ManifestService.deleteBlob decides whether it may go.
   * The content itself stays until garbage collection finds nothing linking it.
   */
  async unlink(repository: string, digest: Digest): Promise<void> {
    await this.driver.delete(paths.layerDirectory(repository, digest));
  }
}

export function blobUnknown(digest: Digest): OciError {
  return new OciError('BLOB_UNKNOWN', undefined, { detail: { digest: digest.value } });
}
