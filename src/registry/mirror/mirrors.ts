import type { ServerResponse } from 'node:http';
import type { MirrorConfig } from '../../config/registry.ts';
import type { Logger } from '../../observability/logger.ts';
import { ByteLru } from '../../util/byte-lru.ts';
import { SingleFlight } from '../../util/single-flight.ts';
import { isOciError, OciError } from '../errors.ts';
import type { Digest, ManifestReference } from '../reference.ts';
import type { BlobService } from '../service/blobs.ts';
import type { ManifestService, StoredManifest } from '../service/manifests.ts';
import type { UploadService } from '../service/uploads.ts';
import { fillBlob } from './blob-fill.ts';
import type { MirrorMetrics } from './metrics.ts';
import { fetchManifest, upstreamDigest } from './manifest-fetch.ts';
import { UpstreamClient } from './upstream-client.ts';
import { UpstreamError } from './upstream-error.ts';

/** Memory for the times tags were last confirmed upstream. */
const freshTagBytes = 4 * 1024 * 1024;

/** One configured upstream and what this process knows of it. */
export class Mirror {
  readonly prefix: string;
  readonly client: UpstreamClient;
  /** Tags confirmed upstream within their TTL, by repository and tag. */
  readonly freshTags: ByteLru<true>;

  constructor(config: MirrorConfig) {
    this.prefix = config.prefix;
    this.client = new UpstreamClient(config);
    this.freshTags = new ByteLru({ maxBytes: freshTagBytes, ttlMillis: config.tagTTL });
  }
}

/** A repository of Berth that a mirror serves, and its name upstream. */
export interface MirroredRepository {
  readonly mirror: Mirror;
  readonly repository: string;
  readonly upstreamName: string;
}

export interface MirrorDependencies {
  readonly blobs: BlobService;
  readonly uploads: UploadService;
  readonly manifests: ManifestService;
  readonly metrics: MirrorMetrics;
  readonly logger: Logger | undefined;
}

/**
 * Pull-through mirrors: what a mirrored repository lacks is fetched from its upstream and stored
 * like pushed content. Manifests by digest and blobs, once stored, never ask upstream again; a
 * tag is asked again (HEAD) once its TTL has passed. When upstream is down or rate-limits, what
 * is stored is served; what is not fails naming the upstream's problem.
 */
export class MirrorService {
  private readonly mirrors: readonly Mirror[];
  private readonly deps: MirrorDependencies;
  private readonly manifestFlights = new SingleFlight<StoredManifest>();
  private readonly blobFlights = new SingleFlight<{ sent: number; stored: boolean }>();

  constructor(configs: readonly MirrorConfig[], deps: MirrorDependencies) {
    this.mirrors = configs.map((config) => new Mirror(config));
    this.deps = deps;
  }

  /** The mirror serving `repository`, if any. */
  resolve(repository: string): MirroredRepository | undefined {
    for (const mirror of this.mirrors) {
      if (repository.startsWith(`${mirror.prefix}/`)) {
        return { mirror, repository, upstreamName: repository.slice(mirror.prefix.length + 1) };
      }
    }
    return undefined;
  }

  /**
   * containerd's `?ns=<upstream host>`: a request for `library/nginx` with `ns=docker.io` is
   * for the mirror whose prefix is `docker.io`. Other names are left as they are.
   */
  withNamespace(repository: string, ns: unknown): string {
    if (typeof ns !== 'string') return repository;
    return this.mirrors.some((mirror) => mirror.prefix === ns) ? `${ns}/${repository}` : repository;
  }

  /** A manifest of a mirrored repository, from storage or (on a miss, or a stale tag) upstream. */
  async getManifest(
    target: MirroredRepository,
    reference: ManifestReference,
  ): Promise<StoredManifest> {
    const { manifests } = this.deps;
    const name = target.mirror.prefix;
    const local = await manifests.get(target.repository, reference).catch((error: unknown) => {
      if (isOciError(error, 'MANIFEST_UNKNOWN')) return undefined;
      throw error;
    });
    const key =
      reference.kind === 'digest'
        ? `${target.repository}@${reference.digest.value}`
        : `${target.repository}:${reference.tag}`;
    if (local && (reference.kind === 'digest' || target.mirror.freshTags.get(key))) {
      this.deps.metrics.outcome(name, 'manifest', 'hit');
      return local;
    }
    return this.manifestFlights.run(key, async () => {
      try {
        if (local && reference.kind === 'tag') {
          const current = await upstreamDigest(target, reference.tag);
          if (current === local.digest.value) {
            target.mirror.freshTags.set(key, true, key.length * 2);
            this.deps.metrics.outcome(name, 'manifest', 'hit');
            return local;
          }
        }
        const { manifest, stored } = await fetchManifest(target, reference, manifests);
        if (!stored) {
          this.storageRefused(target, 'manifest');
          return manifest;
        }
        if (reference.kind === 'tag') target.mirror.freshTags.set(key, true, key.length * 2);
        this.deps.metrics.outcome(name, 'manifest', 'miss');
        return manifest;
      } catch (error) {
        if (!(error instanceof UpstreamError)) throw error;
        this.upstreamFailed(target, error);
        if (local && error.transient) {
          this.deps.metrics.outcome(name, 'manifest', 'stale');
          return local;
        }
        throw error.toOciError('MANIFEST_UNKNOWN');
      }
    });
  }

  /** Size of a blob upstream, for a HEAD of one not stored yet. */
  async headBlob(target: MirroredRepository, digest: Digest): Promise<number> {
    try {
      const response = await target.mirror.client.send(
        'HEAD',
        target.upstreamName,
        `/v2/${target.upstreamName}/blobs/${digest.value}`,
      );
      response.resume();
      const size = Number(response.headers['content-length']);
      if (!Number.isSafeInteger(size) || size < 0)
        throw new UpstreamError(target.mirror.client.name, 'bad-response', 'sent no blob size');
      return size;
    } catch (error) {
      if (!(error instanceof UpstreamError)) throw error;
      this.upstreamFailed(target, error);
      throw error.toOciError('BLOB_UNKNOWN');
    }
  }

  /**
   * A blob not stored yet. The first pull streams it from upstream to its client while storing
   * it (`streamed`: the bytes sent); pulls meanwhile wait for that one fetch and are then served
   * from storage by the caller (`streamed` undefined).
   */
  async fetchBlob(
    target: MirroredRepository,
    digest: Digest,
    res: ServerResponse,
  ): Promise<{ streamed: number | undefined }> {
    const key = `${target.repository}@${digest.value}`;
    // A fill that storage refused to keep leaves nothing to serve: who waited on it fills anew.
    for (let running = this.blobFlights.current(key); running;) {
      if ((await running).stored) return { streamed: undefined };
      running = this.blobFlights.current(key);
    }
    const { sent } = await this.blobFlights.run(key, async () => {
      try {
        const filled = await fillBlob(target, digest, res, this.deps);
        if (filled.stored) this.deps.metrics.outcome(target.mirror.prefix, 'blob', 'miss');
        else this.storageRefused(target, 'blob');
        return filled;
      } catch (error) {
        if (!(error instanceof UpstreamError)) throw error;
        this.upstreamFailed(target, error);
        throw error.toOciError('BLOB_UNKNOWN');
      }
    });
    return { streamed: sent };
  }

  /** Counts a blob of a mirrored repository served from storage. */
  servedFromStorage(target: MirroredRepository, bytes: number): void {
    this.deps.metrics.outcome(target.mirror.prefix, 'blob', 'hit');
    this.deps.metrics.servedFromCache(target.mirror.prefix, bytes);
  }

  /** Pushes and deletes in a mirrored repository are refused: upstream owns its content. */
  refuseWrite(repository: string): void {
    const target = this.resolve(repository);
    if (!target) return;
    throw new OciError(
      'DENIED',
      `${repository} is a pull-through mirror of ${target.mirror.client.name}; it cannot be pushed to or deleted from`,
      { detail: { name: repository, upstream: target.mirror.client.name } },
    );
  }

  close(): void {
    for (const mirror of this.mirrors) mirror.client.close();
  }

  private storageRefused(target: MirroredRepository, kind: 'manifest' | 'blob'): void {
    this.deps.metrics.outcome(target.mirror.prefix, kind, 'uncached');
    this.deps.logger?.warn(
      { mirror: target.mirror.prefix, repository: target.repository, kind },
      'mirror served content storage refused to keep',
    );
  }

  private upstreamFailed(target: MirroredRepository, error: UpstreamError): void {
    this.deps.metrics.upstreamError(target.mirror.prefix, error.problem);
    if (error.problem !== 'not-found')
      this.deps.logger?.warn(
        {
          mirror: target.mirror.prefix,
          upstream: error.upstream,
          problem: error.problem,
          status: error.status,
        },
        'mirror upstream failed',
      );
  }
}
