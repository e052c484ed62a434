import type { V1ClusterRoleBinding } from '@kubernetes/client-node';
import type { KubeObject } from '../../kube/client.ts';
import { fieldManager, registryObjectNames } from './labels.ts';

/** deploy/rbac.yaml defines both; the operator may patch this one binding and nothing else. */
export const registryAccessRole = 'berth-registry';
export const registryAccessBinding = 'berth-registries';

/**
 * The ClusterRoleBinding that lets every Registry's pods watch Repositories and Namespaces for
 * their policy: one subject per Registry's ServiceAccount, sorted so the same Registries always
 * render the same object. Pure.
 */
export function renderRegistryAccessBinding(
  registries: readonly { readonly name: string; readonly namespace: string }[],
): KubeObject {
  const subjects = registries
    .map((registry) => ({
      kind: 'ServiceAccount',
      name: registryObjectNames(registry.name).serviceAccount,
      namespace: registry.namespace,
    }))
    .sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: {
      name: registryAccessBinding,
      labels: {
        'app.kubernetes.io/name': 'berth',
        'app.kubernetes.io/component': 'registry',
        'app.kubernetes.io/part-of': fieldManager,
      },
    },
    roleRef: {
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'ClusterRole',
      name: registryAccessRole,
    },
    subjects,
  } satisfies V1ClusterRoleBinding;
}
