import { compilePolicy, type RejectedRepository } from '../policy/compile.ts';
import { scopeRepositories } from '../policy/registry-scope.ts';
import type { RepositoryDocument } from '../policy/schema.ts';
import { registryEndpoints } from './render/endpoints.ts';
import type { RegistryResource } from './render/registry.ts';

/** What the operator knows of one Repository after compiling every Registry's policy. */
export interface RepositoryState {
  readonly ready: boolean;
  readonly reason:
    'PullSecretsIssued' | 'PublicRepository' | RejectedRepository['reason'] | 'RegistryNotFound';
  readonly message: string;
  /** What pods write in `image:`; absent when the Repository is refused. */
  readonly url?: string;
  readonly pullNamespaces: number;
}

export interface GrantTable {
  /** Namespace → keys (`namespace/name`) of the Registries whose pull secret it gets. */
  readonly secrets: ReadonlyMap<string, ReadonlySet<string>>;
  /** Repository key (`namespace/name`) → its state, for status. */
  readonly repositories: ReadonlyMap<string, RepositoryState>;
}

export interface GrantInput {
  readonly registries: readonly RegistryResource[];
  /** Repositories whose spec parsed; invalid ones are the API server's to refuse. */
  readonly repositories: readonly RepositoryDocument[];
  /** Namespaces that exist (not terminating), with their labels. */
  readonly namespaces: ReadonlyMap<string, Readonly<Record<string, string>>>;
}

/**
 * Which namespaces get which Registry's pull secret, and each Repository's state. A namespace
 * gets a Registry's secret when it may pull at least one repository there that needs a
 * credential: a Private one, or a Public one when the Registry refuses anonymous pulls. The
 * registry process compiles the same policy from the same objects, so the secret the operator
 * hands out and the access the registry grants agree. Pure.
 */
export function computeGrants(input: GrantInput): GrantTable {
  const secrets = new Map<string, Set<string>>();
  const repositories = new Map<string, RepositoryState>();
  const registries = [...input.registries].sort((a, b) =>
    registryKey(a).localeCompare(registryKey(b)),
  );
  for (const registry of registries) {
    const key = registryKey(registry);
    const { served, rejected: notTenants } = scopeRepositories(
      {
        registry: registry.metadata,
        tenants: registry.spec.tenants.namespaceSelector,
      },
      input.repositories,
      input.namespaces,
    );
    const anonymousPull = registry.spec.auth.anonymousPull;
    const policy = compilePolicy(
      { namespaces: input.namespaces, repositories: served },
      { anonymousPull },
    );
    const endpoints = registryEndpoints(registry);
    const host = endpoints.node ?? endpoints.cluster;
    for (const grant of policy.grants()) {
      const needsCredential = grant.visibility === 'Private' || !anonymousPull;
      // Public without anonymous pulls: every namespace may pull, so every one needs the secret.
      const pullers =
        grant.visibility === 'Public' ? input.namespaces.keys() : grant.pullNamespaces;
      let count = 0;
      for (const namespace of pullers) {
        count += 1;
        if (!needsCredential) continue;
        let registriesOfNamespace = secrets.get(namespace);
        if (!registriesOfNamespace) secrets.set(namespace, (registriesOfNamespace = new Set()));
        registriesOfNamespace.add(key);
      }
      setOnce(repositories, grant.source, {
        ready: true,
        reason: needsCredential ? 'PullSecretsIssued' : 'PublicRepository',
        message: needsCredential
          ? `${count} namespaces may pull from ${key}`
          : `anyone may pull from ${key} without a credential`,
        url: `${host}/${grant.path}`,
        pullNamespaces: count,
      });
    }
    for (const refused of [...notTenants, ...policy.rejected]) {
      setOnce(repositories, `${refused.namespace}/${refused.name}`, {
        ready: false,
        reason: refused.reason,
        message: refused.message,
        pullNamespaces: 0,
      });
    }
  }
  for (const document of input.repositories) {
    const key = `${document.metadata.namespace}/${document.metadata.name}`;
    if (repositories.has(key)) continue;
    const target = document.spec.registry;
    repositories.set(key, {
      ready: false,
      reason: 'RegistryNotFound',
      message: target
        ? `Registry ${target.namespace}/${target.name} does not exist`
        : 'no Registry exists in the cluster',
      pullNamespaces: 0,
    });
  }
  return { secrets, repositories };
}

export function registryKey(registry: RegistryResource): string {
  return `${registry.metadata.namespace}/${registry.metadata.name}`;
}

/**
 * A Repository without `spec.registry` is served by every Registry; its status reports the first
 * one (by namespace/name) that accepts it, and a refusal only when none does.
 */
function setOnce(states: Map<string, RepositoryState>, key: string, state: RepositoryState): void {
  const current = states.get(key);
  if (!current || (!current.ready && state.ready)) states.set(key, state);
}
