import { KubeApiError, type KubeObject } from '../../src/kube/client.ts';
import { createLogger } from '../../src/observability/logger.ts';
import type { ChangeType } from '../../src/kube/informer.ts';
import type { ApiWriter, Cache, EventSink } from '../../src/operator/cluster.ts';
import type { GrantChange, GrantView } from '../../src/operator/grant-tracker.ts';
import type { GrantTable } from '../../src/operator/grants.ts';
import type { RegistryResource } from '../../src/operator/api/registry-resource.ts';

/**
 * Fakes of the seam between the controllers and the API server (src/operator/cluster.ts), so a
 * reconcile runs in-process: caches a test fills, an API that keeps what is applied and records
 * every call, and an Event sink that records what it is told.
 */

function cacheKeyOf(object: KubeObject): string {
  return object.metadata.namespace
    ? `${object.metadata.namespace}/${object.metadata.name}`
    : object.metadata.name;
}

export class FakeCache<T extends KubeObject> implements Cache<T> {
  private readonly objects = new Map<string, T>();
  private readonly listeners: ((type: ChangeType, object: T) => void)[] = [];

  constructor(objects: readonly T[] = []) {
    for (const object of objects) this.objects.set(cacheKeyOf(object), object);
  }

  /** Stores the object, as a watch event would, and tells the listeners. */
  put(object: T): void {
    const key = cacheKeyOf(object);
    const type = this.objects.has(key) ? 'modified' : 'added';
    this.objects.set(key, object);
    for (const listener of this.listeners) listener(type, object);
  }

  get(key: string): T | undefined {
    return this.objects.get(key);
  }

  list(): T[] {
    return [...this.objects.values()];
  }

  listNamespace(namespace: string): T[] {
    return this.list().filter((object) => object.metadata.namespace === namespace);
  }

  onChange(listener: (type: ChangeType, object: T) => void): void {
    this.listeners.push(listener);
  }
}

export interface ApiCall {
  readonly verb: 'get' | 'apply' | 'mergePatch' | 'delete';
  readonly path: string;
  readonly body?: unknown;
}

/** An API server of one map: apply merges the top-level fields sent, get answers 404 for none. */
export class FakeApi implements ApiWriter {
  readonly objects = new Map<string, KubeObject>();
  readonly calls: ApiCall[] = [];

  /** Every call that writes, in order. */
  get writes(): ApiCall[] {
    return this.calls.filter((call) => call.verb !== 'get');
  }

  get<T extends KubeObject>(path: string): Promise<T> {
    this.calls.push({ verb: 'get', path });
    const object = this.objects.get(path);
    if (!object) return Promise.reject(new KubeApiError(404, 'NotFound', `${path} not found`, {}));
    return Promise.resolve(object as T);
  }

  apply<T extends KubeObject>(path: string, object: KubeObject): Promise<T> {
    this.calls.push({ verb: 'apply', path, body: object });
    const stored = { ...this.objects.get(path), ...storedForm(object) };
    this.objects.set(path, stored);
    return Promise.resolve(stored as T);
  }

  mergePatch<T extends KubeObject>(path: string, patch: unknown): Promise<T> {
    this.calls.push({ verb: 'mergePatch', path, body: patch });
    const stored = { ...this.objects.get(path), ...(patch as object) } as KubeObject;
    this.objects.set(path, stored);
    return Promise.resolve(stored as T);
  }

  delete(path: string): Promise<void> {
    this.calls.push({ verb: 'delete', path });
    this.objects.delete(path);
    return Promise.resolve();
  }
}

/** What the API server stores: a Secret's `stringData` becomes base64 `data`. */
function storedForm(object: KubeObject & { stringData?: Record<string, string> }): KubeObject {
  if (object.kind !== 'Secret' || !object.stringData) return object;
  const { stringData, ...rest } = object;
  const data = Object.fromEntries(
    Object.entries(stringData).map(([key, value]) => [key, Buffer.from(value).toString('base64')]),
  );
  return { ...rest, data: { ...(rest as { data?: object }).data, ...data } } as KubeObject;
}

export interface RecordedEvent {
  readonly object: string;
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
}

export class FakeEvents implements EventSink {
  readonly recorded: RecordedEvent[] = [];

  record(
    object: KubeObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void> {
    this.recorded.push({ object: cacheKeyOf(object), type, reason, message });
    return Promise.resolve();
  }
}

/** A grant tracker's view whose table a test sets, and whose changes it announces. */
export class FakeGrants implements GrantView {
  registries: ReadonlyMap<string, RegistryResource> = new Map();
  table: GrantTable = { secrets: new Map(), repositories: new Map() };
  nodePortConflicts: ReadonlyMap<string, string> = new Map();
  private readonly listeners: ((change: GrantChange) => void)[] = [];

  onChange(listener: (change: GrantChange) => void): void {
    this.listeners.push(listener);
  }

  announce(change: Partial<GrantChange>): void {
    const full: GrantChange = {
      registries: new Set(),
      namespaces: new Set(),
      repositories: new Set(),
      registryAccess: false,
      ...change,
    };
    for (const listener of this.listeners) listener(full);
  }
}

/** A logger that drops everything, for controllers under test. */
export const silentLogger = createLogger('silent', 'test');
