import type { KubeClient, KubeObject } from '../kube/client.ts';
import type { ChangeType } from '../kube/informer.ts';
import type { EventRecorder } from './events.ts';

/**
 * The seam between a controller and the API server. Controllers read informer caches, write
 * through these calls and record Events, so a reconcile runs in-process against fakes of the
 * three as well as against a real API server.
 */

/** An informer's cache, by `namespace/name` (or `name` for cluster-scoped objects). */
export interface Cache<T extends KubeObject> {
  get(key: string): T | undefined;
  list(): T[];
  listNamespace(namespace: string): T[];
  onChange(listener: (type: ChangeType, object: T) => void): void;
}

/** The API calls a reconcile makes. */
export type ApiWriter = Pick<KubeClient, 'get' | 'apply' | 'mergePatch' | 'delete'>;

/** Where a controller records Events. */
export type EventSink = Pick<EventRecorder, 'record'>;
