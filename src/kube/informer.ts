import type { IncomingMessage } from 'node:http';
import type { Logger } from '../observability/logger.ts';
import { KubeApiError, type KubeClient, type KubeObject } from './client.ts';

export type ChangeType = 'added' | 'modified' | 'deleted';

export interface InformerOptions {
  /** Collection path, e.g. `/apis/berth.dev/v1alpha1/registries` or `/api/v1/namespaces`. */
  readonly path: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** A watch that delivers nothing, not even a bookmark, for this long is abandoned. */
  readonly inactivityTimeoutMillis?: number;
  /** Longest wait between reconnects; the backoff doubles up to it. */
  readonly maxBackoffMillis?: number;
}

/** Key of an object in caches and work queues: `namespace/name`, or `name` if cluster-scoped. */
export function objectKey(object: KubeObject): string {
  return object.metadata.namespace
    ? `${object.metadata.namespace}/${object.metadata.name}`
    : object.metadata.name;
}

/**
 * A list-watch cache. It lists, then watches from the list's resourceVersion with bookmarks;
 * a 410 Gone (history compacted) relists and reports what changed meanwhile, including
 * deletions; any other failure reconnects with exponential backoff; a watch that stays silent
 * past the inactivity timeout is dropped and reopened. It never stops on its own: unlike the
 * stock informer, an error is a reason to retry, not to end.
 */
export class Informer<T extends KubeObject> {
  private readonly client: KubeClient;
  private readonly options: Required<Omit<InformerOptions, 'labelSelector' | 'fieldSelector'>> &
    Pick<InformerOptions, 'labelSelector' | 'fieldSelector'>;
  private readonly logger: Logger;
  private readonly store = new Map<string, T>();
  /** The same objects by namespace, so per-namespace reads do not scan the whole cache. */
  private readonly byNamespace = new Map<string, Map<string, T>>();
  private readonly handlers: ((type: ChangeType, object: T) => void)[] = [];
  private resourceVersion = '';
  private abort = new AbortController();
  private stopped = false;
  private syncedResolve!: () => void;
  /** Resolves once the first list has filled the cache. */
  readonly synced: Promise<void>;
  /** Counts for metrics and tests. */
  readonly stats = { lists: 0, watches: 0, events: 0, errors: 0, expired: 0 };

  /** The collection it lists and watches. */
  get path(): string {
    return this.options.path;
  }

  constructor(client: KubeClient, options: InformerOptions, logger: Logger) {
    this.client = client;
    this.options = { inactivityTimeoutMillis: 90_000, maxBackoffMillis: 30_000, ...options };
    this.logger = logger.child({ informer: options.path });
    this.synced = new Promise((resolve) => (this.syncedResolve = resolve));
  }

  /** Registers a handler for every change; handlers should only enqueue work. */
  onChange(handler: (type: ChangeType, object: T) => void): void {
    this.handlers.push(handler);
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }

  list(): T[] {
    return [...this.store.values()];
  }

  /** The cached objects in one namespace. */
  listNamespace(namespace: string): T[] {
    return [...(this.byNamespace.get(namespace)?.values() ?? [])];
  }

  private put(key: string, object: T): void {
    const stored = withoutManagedFields(object);
    this.store.set(key, stored);
    const namespace = stored.metadata.namespace ?? '';
    let objects = this.byNamespace.get(namespace);
    if (!objects) this.byNamespace.set(namespace, (objects = new Map()));
    objects.set(key, stored);
  }

  private remove(key: string): void {
    const namespace = this.store.get(key)?.metadata.namespace ?? '';
    this.store.delete(key);
    const objects = this.byNamespace.get(namespace);
    objects?.delete(key);
    if (objects?.size === 0) this.byNamespace.delete(namespace);
  }

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
  }

  private async run(): Promise<void> {
    let backoff = 250;
    while (!this.stopped) {
      try {
        if (!this.resourceVersion) await this.relist();
        backoff = 250;
        await this.watch();
      } catch (error) {
        if (this.stopped) return;
        this.stats.errors += 1;
        if (error instanceof KubeApiError && error.code === 410) {
          // Our resourceVersion is older than the server keeps: start over from a fresh list.
          this.logger.info({ resourceVersion: this.resourceVersion }, 'watch expired; relisting');
          this.stats.expired += 1;
          this.resourceVersion = '';
          continue;
        }
        this.logger.warn({ err: error, retryInMs: backoff }, 'watch failed; reconnecting');
        await sleep(backoff + Math.random() * backoff * 0.2);
        backoff = Math.min(backoff * 2, this.options.maxBackoffMillis);
      }
    }
  }

  private async relist(): Promise<void> {
    const { items, resourceVersion } = await this.client.list<T>(this.options.path, {
      labelSelector: this.options.labelSelector,
      fieldSelector: this.options.fieldSelector,
    });
    this.stats.lists += 1;
    const seen = new Set<string>();
    for (const item of items) {
      const key = objectKey(item);
      seen.add(key);
      const previous = this.store.get(key);
      this.put(key, item);
      if (!previous) this.emit('added', item);
      else if (previous.metadata.resourceVersion !== item.metadata.resourceVersion)
        this.emit('modified', item);
    }
    for (const [key, object] of this.store) {
      if (!seen.has(key)) {
        this.remove(key);
        this.emit('deleted', object);
      }
    }
    this.resourceVersion = resourceVersion;
    this.syncedResolve();
  }

  /** One watch connection, until the server ends it (then the loop reconnects from where it was). */
  private async watch(): Promise<void> {
    this.abort = new AbortController();
    const response = await this.client.openWatch(
      this.options.path,
      {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        // The server ends each watch after 5-6 minutes, so connections are renewed regularly.
        timeoutSeconds: 300 + Math.floor(Math.random() * 60),
        labelSelector: this.options.labelSelector,
        fieldSelector: this.options.fieldSelector,
      },
      this.abort.signal,
    );
    this.stats.watches += 1;
    await this.consume(response);
  }

  private consume(response: IncomingMessage): Promise<void> {
    return new Promise((resolve, reject) => {
      let buffered = '';
      let timer: NodeJS.Timeout | undefined;
      const arm = (): void => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          response.destroy(new Error('watch went silent'));
        }, this.options.inactivityTimeoutMillis);
      };
      arm();
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        arm();
        buffered += chunk;
        let newline = buffered.indexOf('\n');
        while (newline >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line) {
            try {
              this.handleEvent(JSON.parse(line) as { type: string; object: T });
            } catch (error) {
              clearTimeout(timer);
              response.destroy();
              reject(error);
              return;
            }
          }
          newline = buffered.indexOf('\n');
        }
      });
      response.on('end', () => {
        clearTimeout(timer);
        resolve();
      });
      response.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      response.on('close', () => {
        clearTimeout(timer);
        if (!response.complete) reject(new Error('watch connection closed'));
      });
    });
  }

  private handleEvent(event: { type: string; object: T }): void {
    this.stats.events += 1;
    const { type, object } = event;
    if (type === 'ERROR') {
      const status = object as unknown as { code?: number; reason?: string; message?: string };
      throw new KubeApiError(
        status.code ?? 500,
        status.reason ?? 'Unknown',
        status.message ?? 'watch error',
        status,
      );
    }
    if (object?.metadata?.resourceVersion) this.resourceVersion = object.metadata.resourceVersion;
    if (type === 'BOOKMARK') return;
    const key = objectKey(object);
    if (type === 'DELETED') {
      this.remove(key);
      this.emit('deleted', object);
    } else if (type === 'ADDED' || type === 'MODIFIED') {
      const existed = this.store.has(key);
      this.put(key, object);
      this.emit(existed ? 'modified' : 'added', object);
    }
  }

  private emit(type: ChangeType, object: T): void {
    for (const handler of this.handlers) {
      try {
        handler(type, object);
      } catch (error) {
        this.logger.error({ err: error }, 'informer handler failed');
      }
    }
  }
}

function sleep(millis: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, millis));
}

/**
 * managedFields are often the larger half of an object and no controller here reads them
 * (server-side apply tracks them on the server); dropping them keeps large caches small.
 */
function withoutManagedFields<T extends KubeObject>(object: T): T {
  if (!object.metadata?.managedFields) return object;
  const { managedFields: _dropped, ...metadata } = object.metadata;
  return { ...object, metadata };
}
