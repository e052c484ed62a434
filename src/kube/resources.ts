import type { KubeObject } from './client.ts';

/** REST collection of each kind Berth writes. */
const collections: Record<string, { group: string; plural: string }> = {
  'v1/ServiceAccount': { group: '/api/v1', plural: 'serviceaccounts' },
  'v1/ConfigMap': { group: '/api/v1', plural: 'configmaps' },
  'v1/Secret': { group: '/api/v1', plural: 'secrets' },
  'v1/Service': { group: '/api/v1', plural: 'services' },
  'v1/PersistentVolumeClaim': { group: '/api/v1', plural: 'persistentvolumeclaims' },
  'v1/Event': { group: '/api/v1', plural: 'events' },
  'apps/v1/Deployment': { group: '/apis/apps/v1', plural: 'deployments' },
  'apps/v1/DaemonSet': { group: '/apis/apps/v1', plural: 'daemonsets' },
  'policy/v1/PodDisruptionBudget': { group: '/apis/policy/v1', plural: 'poddisruptionbudgets' },
  'berth.dev/v1alpha1/Registry': { group: '/apis/berth.dev/v1alpha1', plural: 'registries' },
  'berth.dev/v1alpha1/Repository': { group: '/apis/berth.dev/v1alpha1', plural: 'repositories' },
};

/** The collection path of a kind in a namespace, or across all namespaces. */
export function collectionPath(apiVersion: string, kind: string, namespace?: string): string {
  const collection = collections[`${apiVersion}/${kind}`];
  if (!collection) throw new Error(`no REST mapping for ${apiVersion} ${kind}`);
  return namespace
    ? `${collection.group}/namespaces/${namespace}/${collection.plural}`
    : `${collection.group}/${collection.plural}`;
}

/** The path of one namespaced object. */
export function objectPath(object: KubeObject): string {
  if (!object.apiVersion || !object.kind || !object.metadata.namespace)
    throw new Error('object needs apiVersion, kind and namespace');
  return `${collectionPath(object.apiVersion, object.kind, object.metadata.namespace)}/${object.metadata.name}`;
}
