import type { RejectedRepository } from './compile.ts';
import type { LabelSelector, RepositoryDocument } from './schema.ts';
import { matchesSelector } from './selector.ts';

/** Which Repositories a Registry serves: the ones naming it (or naming none), from its tenants. */
export interface RegistryScope {
  readonly registry: { readonly name: string; readonly namespace: string };
  /** Namespaces that may declare Repositories on this Registry; every namespace when unset. */
  readonly tenants?: LabelSelector | undefined;
}

/**
 * Splits Repositories into those a Registry serves and those it refuses because their namespace
 * is not one of its tenants. A Repository naming another Registry is neither. Pure; the registry
 * (Kubernetes mode) and the operator both call it, so they never disagree on who is served.
 */
export function scopeRepositories(
  scope: RegistryScope,
  repositories: readonly RepositoryDocument[],
  namespaces: ReadonlyMap<string, Readonly<Record<string, string>>>,
): { served: RepositoryDocument[]; rejected: RejectedRepository[] } {
  const served: RepositoryDocument[] = [];
  const rejected: RejectedRepository[] = [];
  for (const document of repositories) {
    if (!namesRegistry(document, scope.registry)) continue;
    const { namespace, name } = document.metadata;
    if (scope.tenants && !matchesSelector(scope.tenants, namespaces.get(namespace) ?? {})) {
      rejected.push({
        namespace,
        name,
        reason: 'NotATenant',
        message: `namespace ${namespace} is not a tenant of Registry ${scope.registry.namespace}/${scope.registry.name} (spec.tenants)`,
      });
      continue;
    }
    served.push(document);
  }
  return { served, rejected };
}

/** A Repository without `spec.registry` belongs to every Registry. */
export function namesRegistry(
  document: RepositoryDocument,
  registry: { readonly name: string; readonly namespace: string },
): boolean {
  const target = document.spec.registry;
  return !target || (target.name === registry.name && target.namespace === registry.namespace);
}
