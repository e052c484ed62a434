import type { V1ClusterRole, V1ClusterRoleBinding } from '@kubernetes/client-node';
import type { KubeObject } from '../../kube/client.ts';
import type { RegistryResource } from '../api/registry-resource.ts';
import { fieldManager, registryObjectNames } from './labels.ts';

/**
 * deploy/rbac.yaml defines the role and the node binding; the operator may patch the rules of
 * `berth-node-token-audiences` and the subjects of `berth-registry-token-review`, and no other.
 */
export const tokenReviewRole = 'berth-registry-token-review';
export const tokenReviewBinding = 'berth-registry-token-review';
export const nodeAudienceRole = 'berth-node-token-audiences';

/** The RBAC verb the API server checks when a node asks for a token of a non-default audience. */
export const requestAudienceVerb = 'request-serviceaccounts-token-audience';

/** Whether pods of this Registry's tenants authenticate with their own ServiceAccount tokens. */
export function acceptsServiceAccountTokens(registry: RegistryResource): boolean {
  return registry.spec.pullSecrets.mode !== 'Secrets';
}

/** Whether Berth writes pull Secrets and ServiceAccount entries for this Registry. */
export function writesPullSecrets(registry: RegistryResource): boolean {
  return registry.spec.pullSecrets.mode !== 'CredentialProvider';
}

/**
 * The audience kubelets request tokens for and the registry accepts: `pullSecrets.audience`,
 * else `berth.dev/<namespace>/<name>`; undefined in mode Secrets. Pure.
 */
export function tokenAudience(registry: RegistryResource): string | undefined {
  if (!acceptsServiceAccountTokens(registry)) return undefined;
  const { namespace, name } = registry.metadata;
  return registry.spec.pullSecrets.audience ?? `berth.dev/${namespace}/${name}`;
}

function specAudiences(registry: RegistryResource): readonly string[] {
  const audience = tokenAudience(registry);
  return audience ? [audience] : [];
}

const labels = {
  'app.kubernetes.io/name': 'berth',
  'app.kubernetes.io/component': 'registry',
  'app.kubernetes.io/part-of': fieldManager,
};

/**
 * The ClusterRoleBinding that lets the pods of every Registry taking ServiceAccount tokens put
 * them to a TokenReview (create tokenreviews, nothing else); sorted, so it renders the same for
 * the same Registries. `accepts` says which take them: by default their spec, the operator's
 * answer also while a change of mode rolls out. Pure.
 */
export function renderTokenReviewBinding(
  registries: readonly RegistryResource[],
  accepts: (registry: RegistryResource) => boolean = acceptsServiceAccountTokens,
): KubeObject {
  const subjects = registries
    .filter((registry) => accepts(registry))
    .map((registry) => ({
      kind: 'ServiceAccount',
      name: registryObjectNames(registry.metadata.name).serviceAccount,
      namespace: registry.metadata.namespace,
    }))
    .sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: tokenReviewBinding, labels },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: tokenReviewRole },
    subjects,
  } satisfies V1ClusterRoleBinding;
}

/**
 * The ClusterRole, bound to the group system:nodes, that lets kubelets request pods' tokens for
 * the audience of every Registry taking them (KEP-4412: the audience is the resource, in the
 * core group), and for no other audience. No rule at all when no Registry takes them. Pure.
 */
export function renderNodeAudienceRole(
  registries: readonly RegistryResource[],
  /** The audiences a Registry's pods take: by default its spec's. */
  audiencesOf: (registry: RegistryResource) => readonly string[] = specAudiences,
): KubeObject {
  const audiences = [...new Set(registries.flatMap((registry) => audiencesOf(registry)))].sort();
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRole',
    metadata: { name: nodeAudienceRole, labels },
    rules:
      audiences.length > 0
        ? [{ apiGroups: [''], resources: audiences, verbs: [requestAudienceVerb] }]
        : [],
  } satisfies V1ClusterRole;
}
