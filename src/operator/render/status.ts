import type { RegistryStatus } from '../api/registry.ts';
import type { RegistryResource } from './registry.ts';
import { registryEndpoints } from './endpoints.ts';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

/**
 * A condition that keeps its lastTransitionTime while its status stays the same, as the API
 * conventions ask, so that a reconcile that changes nothing writes nothing.
 */
export function condition(
  previous: readonly Condition[] | undefined,
  next: Omit<Condition, 'lastTransitionTime'>,
  now: Date,
): Condition {
  const before = previous?.find((candidate) => candidate.type === next.type);
  const lastTransitionTime =
    before && before.status === next.status ? before.lastTransitionTime : now.toISOString();
  return { ...next, lastTransitionTime };
}

export interface DeploymentState {
  readonly replicas: number;
  readonly readyReplicas: number;
  readonly updatedReplicas: number;
  readonly observedGeneration: number;
  readonly generation: number;
}

/** The Registry's status from its Deployment's state. Pure. */
export function renderRegistryStatus(
  registry: RegistryResource & { metadata: { generation?: number } },
  deployment: DeploymentState | undefined,
  previous: readonly Condition[] | undefined,
  now: Date,
  /** Something a person must fix, reported as Degraded. */
  problem?: { readonly reason: string; readonly message: string },
): RegistryStatus {
  const generation = registry.metadata.generation;
  const wanted = registry.spec.replicas;
  const ready = deployment?.readyReplicas ?? 0;
  const rolledOut =
    deployment !== undefined &&
    deployment.observedGeneration >= deployment.generation &&
    deployment.updatedReplicas >= wanted;
  const available = wanted === 0 || (ready >= wanted && rolledOut);
  const base = generation === undefined ? {} : { observedGeneration: generation };
  const conditions = [
    condition(
      previous,
      available
        ? {
            type: 'Ready',
            status: 'True',
            reason: 'Available',
            message: `${ready} of ${wanted} registry pods ready`,
            ...base,
          }
        : {
            type: 'Ready',
            status: 'False',
            reason: 'Progressing',
            message: `${ready} of ${wanted} registry pods ready`,
            ...base,
          },
      now,
    ),
    condition(
      previous,
      available
        ? {
            type: 'Progressing',
            status: 'False',
            reason: 'RolledOut',
            message: 'the registry is up to date',
            ...base,
          }
        : {
            type: 'Progressing',
            status: 'True',
            reason: 'RollingOut',
            message: 'waiting for registry pods',
            ...base,
          },
      now,
    ),
    condition(
      previous,
      problem
        ? { type: 'Degraded', status: 'True', ...problem, ...base }
        : {
            type: 'Degraded',
            status: 'False',
            reason: 'AsExpected',
            message: 'no errors',
            ...base,
          },
      now,
    ),
  ];
  return {
    ...base,
    conditions,
    readyReplicas: ready,
    endpoints: registryEndpoints(registry),
  };
}
