import { createHash } from 'node:crypto';
import type { RegistryResource } from './api/registry-resource.ts';
import type { DeploymentObject } from './kube-objects.ts';
import { renderRegistryConfig } from './render/registry.ts';

/** The pull modes a Registry's pods may be running, each one a configuration of its own. */
export type PullMode = 'Secrets' | 'CredentialProvider' | 'Both';

/** What the operator writes for a Registry's tenants while its pods run these modes. */
export interface PullModes {
  /** Pull Secrets and ServiceAccount entries: some pod may still accept only Berth credentials. */
  readonly secrets: boolean;
  /** Token review, the nodes' audience: some pod may already or still take ServiceAccount tokens. */
  readonly tokens: boolean;
  /** No pod of the Deployment runs a configuration older than the current spec's. */
  readonly settled: boolean;
  /** The audiences kubelets may request tokens for; empty without `tokens`. */
  readonly audiences: readonly string[];
}

/** The fields of the registry Deployment that say which pods its rollout has left. */
export interface RolloutDeployment extends DeploymentObject {
  spec?: DeploymentObject['spec'] & {
    template?: { metadata?: { annotations?: Record<string, string> } };
  };
  status?: DeploymentObject['status'] & { replicas?: number; availableReplicas?: number };
}

export const configAnnotation = 'berth.dev/config-sha256';

/**
 * Whether a pod of the Registry's Deployment may run a configuration older than the one rendered
 * from this spec: one is counted (status.replicas counts the pods of every ReplicaSet) and the
 * template does not carry the rendered config's hash yet, or the Deployment controller has not
 * seen the template, or some pods are not of it. No Deployment, or no pod at all: none. Pure.
 */
export function olderPodsMayRun(
  registry: RegistryResource,
  deployment: RolloutDeployment | undefined,
): boolean {
  const status = deployment?.status ?? {};
  const pods = status.replicas ?? 0;
  if (!deployment || pods === 0) return false;
  const hash = createHash('sha256').update(renderRegistryConfig(registry)).digest('hex');
  return (
    deployment.spec?.template?.metadata?.annotations?.[configAnnotation] !== hash ||
    (status.observedGeneration ?? 0) < (deployment.metadata.generation ?? 0) ||
    (status.updatedReplicas ?? 0) < pods
  );
}

/** What a Registry's pods may be running since its last finished rollout. */
export interface Running {
  readonly modes: ReadonlySet<PullMode>;
  /** The token audiences among them. */
  readonly audiences: ReadonlySet<string>;
}

/**
 * What to write for a Registry's tenants, and what its pods may be running now. With no older pod,
 * only the spec's mode and audience; while some may run, the union of the spec's and of every
 * one `previous` held since the last finished rollout (undefined, as after an operator restart
 * in the middle of one: any mode, and the spec's or the default audience). The union keeps pulls
 * working on old and new pods alike while a change of `pullSecrets.mode` rolls out. Pure.
 */
export function effectivePullModes(
  registry: RegistryResource,
  deployment: RolloutDeployment | undefined,
  previous: Running | undefined,
): PullModes & { readonly running: Running } {
  const { mode, audience } = registry.spec.pullSecrets;
  const { namespace, name } = registry.metadata;
  const ownAudience = audience ?? `berth.dev/${namespace}/${name}`;
  const done = !olderPodsMayRun(registry, deployment);
  const modes = new Set<PullMode>([mode]);
  const audiences = new Set<string>(mode === 'Secrets' ? [] : [ownAudience]);
  if (!done) {
    for (const old of previous?.modes ?? (['Secrets', 'CredentialProvider'] as const))
      modes.add(old);
    for (const old of previous?.audiences ?? [ownAudience]) audiences.add(old);
  }
  const tokens = [...modes].some((running) => running !== 'Secrets');
  return {
    secrets: [...modes].some((running) => running !== 'CredentialProvider'),
    tokens,
    settled: done,
    audiences: tokens ? [...audiences].sort() : [],
    running: { modes, audiences: tokens ? audiences : new Set() },
  };
}
