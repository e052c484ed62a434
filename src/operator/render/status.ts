import type { RegistryStatus } from '../api/registry.ts';
import type { RegistryResource } from '../api/registry-resource.ts';
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
 * conventions ask, so that a reconcile that changes nothing writes nothing. A new time is whole
 * seconds, as metav1.Time is serialized (RFC 3339, no fraction).
 */
export function condition(
  previous: readonly Condition[] | undefined,
  next: Omit<Condition, 'lastTransitionTime'>,
  now: Date,
): Condition {
  const before = previous?.find((candidate) => candidate.type === next.type);
  const lastTransitionTime =
    before && before.status === next.status
      ? before.lastTransitionTime
      : now.toISOString().replace(/\.\d+Z$/, 'Z');
  return { ...next, lastTransitionTime };
}

export interface DeploymentState {
  readonly replicas: number;
  readonly readyReplicas: number;
  readonly updatedReplicas: number;
  readonly observedGeneration: number;
  readonly generation: number;
}

/** The node-proxy DaemonSet's status, as the DaemonSet controller reports it. */
export interface DaemonSetState {
  /** desiredNumberScheduled: the nodes that should run a proxy. */
  readonly desired: number;
  /** numberReady: proxies whose readiness probe passes, i.e. that reach the registry. */
  readonly ready: number;
  readonly observedGeneration: number;
  readonly generation: number;
}

/** What the Registry's status is read from. */
export interface ObservedState {
  readonly deployment: DeploymentState | undefined;
  readonly nodeProxy: DaemonSetState | undefined;
}

/**
 * Why the node proxy keeps a `NodeProxy` Registry from being Ready, if it does. Zero desired is
 * no fault (no node is there to run one, and nobody can pull on a node that does not exist), but
 * counts are only believed once the DaemonSet controller has seen the current spec: a new
 * DaemonSet reports zero of zero before it has looked at any node.
 */
function nodeProxyProblem(nodeProxy: DaemonSetState | undefined): string | undefined {
  if (!nodeProxy) return 'waiting for the node-proxy DaemonSet';
  if (nodeProxy.observedGeneration < nodeProxy.generation)
    return 'waiting for the DaemonSet controller to count the node proxies';
  if (nodeProxy.ready < nodeProxy.desired)
    return `${nodeProxy.ready} of ${nodeProxy.desired} node proxies ready`;
  return undefined;
}

/** The Registry's status from its Deployment's and its node proxies' state. Pure. */
export function renderRegistryStatus(
  registry: RegistryResource,
  observed: ObservedState,
  previous: readonly Condition[] | undefined,
  now: Date,
  /** Something a person must fix, reported as Degraded. */
  problem?: { readonly reason: string; readonly message: string },
): RegistryStatus {
  const { deployment, nodeProxy } = observed;
  const generation = registry.metadata.generation;
  const wanted = registry.spec.replicas;
  const ready = deployment?.readyReplicas ?? 0;
  const rolledOut =
    deployment !== undefined &&
    deployment.observedGeneration >= deployment.generation &&
    deployment.updatedReplicas >= wanted;
  const available = wanted === 0 || (ready >= wanted && rolledOut);
  const proxies = registry.spec.nodeAccess.mode === 'NodeProxy';
  const proxyProblem = proxies ? nodeProxyProblem(nodeProxy) : undefined;
  const pods = `${ready} of ${wanted} registry pods ready`;
  const base = generation === undefined ? {} : { observedGeneration: generation };
  const readyCondition = (): Omit<Condition, 'lastTransitionTime'> => {
    // What keeps it from becoming ready is the reason kubectl get shows, not only Degraded's.
    if (!available && problem)
      return {
        type: 'Ready',
        status: 'False',
        reason: problem.reason,
        message: `${problem.message}; ${pods}`,
        ...base,
      };
    if (!available)
      return { type: 'Ready', status: 'False', reason: 'Progressing', message: pods, ...base };
    if (proxyProblem)
      return {
        type: 'Ready',
        status: 'False',
        reason: 'NodeProxyUnavailable',
        message: `${pods}; ${proxyProblem}`,
        ...base,
      };
    const message =
      proxies && nodeProxy
        ? `${pods}; ${nodeProxy.ready} of ${nodeProxy.desired} node proxies ready`
        : pods;
    return { type: 'Ready', status: 'True', reason: 'Available', message, ...base };
  };
  const conditions = [
    condition(previous, readyCondition(), now),
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
  const endpoints = registryEndpoints(registry);
  return {
    ...base,
    conditions,
    endpoints,
    endpoint: endpoints.node ?? endpoints.cluster,
    readyReplicas: ready,
    replicas: `${ready}/${wanted}`,
  };
}
