import type { RegistryResource } from './api/registry-resource.ts';
import type { Condition } from './render/status.ts';

/** A Registry as far as its node port goes. */
export interface NodePortClaim {
  /** `namespace/name`. */
  readonly key: string;
  readonly mode: 'NodeProxy' | 'None';
  readonly port: number;
  /** RFC 3339 creation time; the older claim keeps the port. */
  readonly createdAt: string;
}

/**
 * Which Registries may not run their node proxy because an older one already listens on that
 * port of every node: Registry key → the key of the one holding the port. Two proxies cannot
 * share a loopback port, and a pull secret naming `localhost:<port>` would hand one Registry's
 * credential to the other's proxy. Pure; ties are broken by key so every replica agrees.
 */
export function nodePortConflicts(claims: readonly NodePortClaim[]): Map<string, string> {
  const holders = new Map<number, string>();
  const conflicts = new Map<string, string>();
  const ordered = claims
    .filter((claim) => claim.mode === 'NodeProxy')
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.key.localeCompare(b.key));
  for (const claim of ordered) {
    const holder = holders.get(claim.port);
    if (holder) conflicts.set(claim.key, holder);
    else holders.set(claim.port, claim.key);
  }
  return conflicts;
}

/** The Registry as it runs while another holds its node port: no node proxy. */
export function withoutNodeProxy(registry: RegistryResource): RegistryResource {
  return {
    ...registry,
    spec: { ...registry.spec, nodeAccess: { ...registry.spec.nodeAccess, mode: 'None' } },
  };
}

/** The Registries refused the port `holder` holds (in `conflicts`), in key order. */
export function nodePortContenders(
  conflicts: ReadonlyMap<string, string>,
  holder: string,
): string[] {
  return [...conflicts]
    .filter(([, held]) => held === holder)
    .map(([key]) => key)
    .sort();
}

/**
 * The `NodePort` condition of a `NodeProxy` Registry, so that both sides of a port conflict see
 * it: True on the one holding the port (naming those it keeps out), False on one kept out
 * (naming the holder). None for a Registry that runs no node proxy. Pure.
 */
export function nodePortCondition(
  registry: RegistryResource & { metadata: { generation?: number } },
  holder: string | undefined,
  contenders: readonly string[],
): Omit<Condition, 'lastTransitionTime'> | undefined {
  if (registry.spec.nodeAccess.mode !== 'NodeProxy') return undefined;
  const port = registry.spec.nodeAccess.port;
  const generation = registry.metadata.generation;
  const base = {
    type: 'NodePort',
    ...(generation === undefined ? {} : { observedGeneration: generation }),
  };
  if (holder)
    return {
      ...base,
      status: 'False',
      reason: 'NodePortConflict',
      message: `port ${port} is held on every node by Registry ${holder}`,
    };
  return {
    ...base,
    status: 'True',
    reason: 'NodePortHeld',
    message:
      contenders.length === 0
        ? `pods pull localhost:${port} from this Registry on every node`
        : `pods pull localhost:${port} from this Registry on every node; ${contenders.join(', ')} also ask for port ${port} and run no node proxy`,
  };
}
