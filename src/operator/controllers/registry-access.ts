import type { QueueResult } from '../../kube/queue.ts';
import type { ApiWriter } from '../cluster.ts';
import { watch, type Controller, type KeyOf } from '../controller.ts';
import type { GrantView } from '../grant-tracker.ts';
import { fieldManager } from '../render/labels.ts';
import { registryAccessBinding, renderRegistryAccessBinding } from '../render/registry-access.ts';
import { registryKey, type RegistryResource } from '../api/registry-resource.ts';
import {
  acceptsServiceAccountTokens,
  nodeAudienceRole,
  renderNodeAudienceRole,
  renderTokenReviewBinding,
  tokenAudience,
  tokenReviewBinding,
} from '../render/token-access.ts';

const theKey: KeyOf<'RegistryAccess'> = { kind: 'RegistryAccess' };

/**
 * Keeps the ClusterRoleBinding `berth-registries` naming the ServiceAccount of every Registry
 * whose spec parsed, so each Registry's pods may read their policy; `berth-registry-token-review`
 * naming those that take ServiceAccount tokens, so they may review them; and the nodes' role
 * `berth-node-token-audiences` listing their audiences. One key: the three objects.
 */
export class RegistryAccessController implements Controller<'RegistryAccess'> {
  readonly kind = 'RegistryAccess';
  readonly watches;
  private readonly api: Pick<ApiWriter, 'apply'>;
  private readonly grants: GrantView;

  constructor(api: Pick<ApiWriter, 'apply'>, grants: GrantView) {
    this.api = api;
    this.grants = grants;
    this.watches = [watch(grants, (change) => (change.registryAccess ? [theKey] : []))];
  }

  keys(): Iterable<KeyOf<'RegistryAccess'>> {
    return [theKey];
  }

  async reconcile(): Promise<QueueResult> {
    const binding = renderRegistryAccessBinding(
      [...this.grants.registries.values()].map((registry) => registry.metadata),
    );
    await this.api.apply(
      `/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/${registryAccessBinding}`,
      binding,
      fieldManager,
    );
    const registries = [...this.grants.registries.values()];
    // While a change of mode rolls out, old and new pods alike: CredentialProvider -> Secrets
    // keeps the review for the pods that still take tokens until none runs.
    const modes = this.grants.pullModes;
    const modeOf = (registry: RegistryResource) => modes?.get(registryKey(registry));
    await this.api.apply(
      `/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/${tokenReviewBinding}`,
      renderTokenReviewBinding(registries, (registry) => {
        const mode = modeOf(registry);
        return mode ? mode.tokens : acceptsServiceAccountTokens(registry);
      }),
      fieldManager,
    );
    await this.api.apply(
      `/apis/rbac.authorization.k8s.io/v1/clusterroles/${nodeAudienceRole}`,
      renderNodeAudienceRole(registries, (registry) => {
        const mode = modeOf(registry);
        if (mode) return mode.audiences;
        const audience = tokenAudience(registry);
        return audience ? [audience] : [];
      }),
      fieldManager,
    );
    return {};
  }
}
