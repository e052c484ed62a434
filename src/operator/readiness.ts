import type { KubeClient } from '../kube/client.ts';
import type { Logger } from '../observability/logger.ts';

/** How often the API server is asked, and how long one answer may take. */
const checkIntervalMillis = 5_000;
const checkTimeoutMillis = 3_000;

export type OperatorReadinessState =
  | { readonly ready: true }
  | {
      readonly ready: false;
      readonly reason: 'CachesNotSynced' | 'ApiUnreachable';
      readonly message: string;
    };

/**
 * The operator's `/readyz`: ready once every watch cache has synced and while the API server
 * answers. A standby replica is ready too: it keeps the same caches, so it can lead at once.
 * The API is asked in the background, never per probe, so probes cannot load the API server.
 */
export class OperatorReadiness {
  private readonly client: KubeClient;
  private readonly logger: Logger;
  private synced = false;
  private api: { reachable: true } | { reachable: false; message: string } = {
    reachable: false,
    message: 'not checked yet',
  };
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(client: KubeClient, caches: readonly { synced: Promise<void> }[], logger: Logger) {
    this.client = client;
    this.logger = logger;
    void Promise.all(caches.map((cache) => cache.synced)).then(() => (this.synced = true));
  }

  start(): void {
    void this.check();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  current(): OperatorReadinessState {
    if (!this.synced)
      return { ready: false, reason: 'CachesNotSynced', message: 'watch caches are still syncing' };
    if (!this.api.reachable)
      return {
        ready: false,
        reason: 'ApiUnreachable',
        message: `the API server does not answer: ${this.api.message}`,
      };
    return { ready: true };
  }

  private async check(): Promise<void> {
    const before = this.api.reachable;
    try {
      await this.client.request('GET', '/version', { timeoutMs: checkTimeoutMillis });
      this.api = { reachable: true };
      if (!before) this.logger.info('API server reachable');
    } catch (error) {
      this.api = {
        reachable: false,
        message: error instanceof Error ? error.message : String(error),
      };
      if (before) this.logger.warn({ err: error }, 'API server unreachable');
    }
    if (!this.stopped)
      this.timer = setTimeout(() => void this.check(), checkIntervalMillis).unref();
  }
}
