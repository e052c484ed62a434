import type { QueueResult } from '../kube/queue.ts';
import { registryAccessBinding } from './render/registry-access.ts';

/** What the work queue holds: one key per thing a controller reconciles, typed by its kind. */
export type WorkKey =
  | { readonly kind: 'Registry'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'Repository'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'Namespace'; readonly name: string }
  /** The one ClusterRoleBinding that lets every Registry's pods read their policy. */
  | { readonly kind: 'RegistryAccess' };

export type WorkKind = WorkKey['kind'];
export type KeyOf<K extends WorkKind> = Extract<WorkKey, { readonly kind: K }>;

/** The object a key names, as logs and caches name it: `namespace/name` or `name`. */
export function keyObjectName(key: WorkKey): string {
  switch (key.kind) {
    case 'Registry':
    case 'Repository':
      return cacheKey(key);
    case 'Namespace':
      return key.name;
    case 'RegistryAccess':
      return registryAccessBinding;
  }
}

/** The queue's identity of a key: equal keys are one queue entry. */
export function workKeyId(key: WorkKey): string {
  return `${key.kind}:${keyObjectName(key)}`;
}

/** `namespace/name` of a namespaced key: how caches and the grant table name the object. */
export function cacheKey(key: { readonly namespace: string; readonly name: string }): string {
  return `${key.namespace}/${key.name}`;
}

/** The key of a namespaced object of a kind, from its `namespace/name`. */
export function namespacedKey<K extends 'Registry' | 'Repository'>(
  kind: K,
  key: string,
): { readonly kind: K; readonly namespace: string; readonly name: string } {
  const separator = key.indexOf('/');
  return { kind, namespace: key.slice(0, separator), name: key.slice(separator + 1) };
}

/** Anything that announces changes: an informer, the grant tracker. */
export interface EventSource<A extends unknown[]> {
  onChange(listener: (...event: A) => void): void;
}

/** One source a controller watches and the keys each of its events means. */
export interface Watch {
  subscribe(enqueue: (key: WorkKey) => void): void;
}

export function watch<A extends unknown[]>(
  source: EventSource<A>,
  keys: (...event: A) => Iterable<WorkKey>,
): Watch {
  return {
    subscribe: (enqueue) =>
      source.onChange((...event) => {
        for (const key of keys(...event)) enqueue(key);
      }),
  };
}

/**
 * A controller, as controller-runtime has it: it declares what it watches and which keys an
 * event maps to, names every key it owns (a new leader reconciles each once), and reconciles one
 * key at a time, level-based: from the current state, whatever event woke it.
 */
export interface Controller<K extends WorkKind> {
  readonly kind: K;
  readonly watches: readonly Watch[];
  keys(): Iterable<KeyOf<K>>;
  reconcile(key: KeyOf<K>): Promise<QueueResult>;
}
