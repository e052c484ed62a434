import { maxStatusNamespaces, maxStatusRegistries } from './api/repository.ts';
import { compilePolicy, type RejectedRepository } from '../policy/compile.ts';
import { scopeRepositories } from '../policy/registry-scope.ts';
import type { RepositoryDocument } from '../policy/schema.ts';
import { registryEndpoints } from './render/endpoints.ts';
import { writesPullSecrets } from './render/token-access.ts';
import { registryKey, type RegistryResource } from './api/registry-resource.ts';
import type { PullModes } from './pull-modes.ts';
import { namespaceCount, selectorNotes } from './selector-notes.ts';

/** What the operator knows of one Repository after compiling every Registry's policy. */
export interface RepositoryState {
  readonly ready: boolean;
  readonly reason:
    | 'PullSecretsIssued'
    | 'ServiceAccountTokens'
    | 'PublicRepository'
    | RejectedRepository['reason']
    | 'RegistryNotFound';
  readonly message: string;
  /** What pods write in `image:`, at the first Registry that serves it; absent when refused. */
  readonly url?: string;
  readonly pullNamespaces: number;
  /** The first `maxStatusNamespaces` of them, in name order. */
  readonly pullNamespaceNames: readonly string[];
  /**
   * Every Registry that serves it, by namespace/name (a Repository naming none is served by
   * each that accepts it), at most `maxStatusRegistries`; `message` gives the whole count.
   */
  readonly registries: readonly ServingRegistry[];
}

/** A Registry serving a Repository, and what pods write in `image:` to pull it from there. */
export interface ServingRegistry {
  readonly namespace: string;
  readonly name: string;
  readonly url: string;
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
  /**
   * Registry key → whether its pods may still take only Berth credentials, while a change of
   * `pullSecrets.mode` rolls out (pull-modes.ts); absent, the spec's mode says.
   */
  readonly pullModes?: ReadonlyMap<string, Pick<PullModes, 'secrets'>>;
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
  /** Repository key → each Registry that serves it, in Registry order. */
  const accepted = new Map<string, Acceptance[]>();
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
      // Mode CredentialProvider: pods log in with their own token, so no Secret is written.
      // Secrets -> CredentialProvider: written until no pod takes only Berth credentials.
      const secretWanted =
        needsCredential && (input.pullModes?.get(key)?.secrets ?? writesPullSecrets(registry));
      // Public without anonymous pulls: every namespace may pull, so every one needs the secret.
      const pullers =
        grant.visibility === 'Public' ? input.namespaces.keys() : grant.pullNamespaces;
      const names: string[] = [];
      for (const namespace of pullers) {
        names.push(namespace);
        if (!secretWanted) continue;
        let registriesOfNamespace = secrets.get(namespace);
        if (!registriesOfNamespace) secrets.set(namespace, (registriesOfNamespace = new Set()));
        registriesOfNamespace.add(key);
      }
      let acceptances = accepted.get(grant.source);
      if (!acceptances) accepted.set(grant.source, (acceptances = []));
      acceptances.push({
        registry: {
          namespace: registry.metadata.namespace,
          name: registry.metadata.name,
          url: `${host}/${grant.path}`,
        },
        needsCredential,
        pullSecrets: secretWanted,
        pullNamespaces: names.length,
        pullNamespaceNames: names.sort().slice(0, maxStatusNamespaces),
      });
    }
    for (const refused of [...notTenants, ...policy.rejected]) {
      const repository = `${refused.namespace}/${refused.name}`;
      // The first refusal is reported, and only when no Registry serves the Repository.
      if (!repositories.has(repository))
        repositories.set(repository, {
          ready: false,
          reason: refused.reason,
          message: refused.message,
          pullNamespaces: 0,
          pullNamespaceNames: [],
          registries: [],
        });
    }
  }
  const specs = new Map(
    input.repositories.map((document) => [
      `${document.metadata.namespace}/${document.metadata.name}`,
      document.spec,
    ]),
  );
  for (const [repository, acceptances] of accepted) {
    const spec = specs.get(repository);
    const notes = spec ? selectorNotes(spec, input.namespaces) : [];
    repositories.set(repository, servedState(acceptances, notes));
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
      pullNamespaceNames: [],
      registries: [],
    });
  }
  return { secrets, repositories };
}

/** One Registry serving a Repository. */
interface Acceptance {
  readonly registry: ServingRegistry;
  readonly needsCredential: boolean;
  /** Pull Secrets are written for it (mode Secrets or Both), else pods use their own tokens. */
  readonly pullSecrets: boolean;
  readonly pullNamespaces: number;
  readonly pullNamespaceNames: readonly string[];
}

/**
 * The state of a Repository that at least one Registry serves: its reason, url and count from
 * the first (by namespace/name), and every one named in the message's count and the list.
 */
function servedState(
  acceptances: readonly Acceptance[],
  /** What the message adds about the Repository's selectors. */
  notes: readonly string[],
): RepositoryState {
  const first = acceptances[0] as Acceptance;
  const where =
    acceptances.length === 1
      ? `${first.registry.namespace}/${first.registry.name}`
      : `${acceptances.length} Registries`;
  return {
    ready: true,
    reason: !first.needsCredential
      ? 'PublicRepository'
      : first.pullSecrets
        ? 'PullSecretsIssued'
        : 'ServiceAccountTokens',
    message: [
      first.needsCredential
        ? `${namespaceCount(first.pullNamespaces)} may pull from ${where}`
        : `anyone may pull from ${where} without a credential`,
      ...notes,
    ].join('; '),
    url: first.registry.url,
    pullNamespaces: first.pullNamespaces,
    pullNamespaceNames: first.pullNamespaceNames,
    registries: acceptances.slice(0, maxStatusRegistries).map((acceptance) => acceptance.registry),
  };
}
