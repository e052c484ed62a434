import type { Logger } from '../observability/logger.ts';
import type { KubeObject } from '../kube/client.ts';
import { repositoryDocumentSchema, type RepositoryDocument } from '../policy/schema.ts';
import {
  parseRegistry,
  registryKey,
  type RegistryObject,
  type RegistryResource,
} from './api/registry-resource.ts';
import type { Cache } from './cluster.ts';
import { computeGrants, type GrantTable } from './grants.ts';
import { nodePortConflicts, withoutNodeProxy } from './node-ports.ts';
import { pullSecretHosts } from './render/endpoints.ts';
import type { DeploymentObject } from './kube-objects.ts';
import { effectivePullModes, type PullModes, type Running } from './pull-modes.ts';
import { registryObjectNames } from './render/labels.ts';
import { tokenAudience } from './render/token-access.ts';
import { sameContent } from './same-content.ts';

/** What changed between two grant tables: the keys whose reconcile may now write something. */
export interface GrantChange {
  /** Registries that gained or lost their node port, or a contender for it. */
  readonly registries: ReadonlySet<string>;
  readonly namespaces: ReadonlySet<string>;
  readonly repositories: ReadonlySet<string>;
  /**
   * The set of Registries, or the mode or audience of one, changed: the registry access
   * bindings and the nodes' audience role need rewriting.
   */
  readonly registryAccess: boolean;
}

/** What controllers read of the grant tracker, and watch. */
export interface GrantView {
  /** Registries whose spec parsed, by `namespace/name`, without a node proxy kept off its port. */
  readonly registries: ReadonlyMap<string, RegistryResource>;
  readonly table: GrantTable;
  /** Registry key → the older Registry holding its node port. */
  readonly nodePortConflicts: ReadonlyMap<string, string>;
  /**
   * Registry key → what its pods may run while a change of `pullSecrets.mode` rolls out: pull
   * Secrets and token access are written for the union of the old and new modes. Absent (or a
   * key missing), the spec's mode says.
   */
  readonly pullModes?: ReadonlyMap<string, PullModes>;
  onChange(listener: (change: GrantChange) => void): void;
}

/**
 * Keeps the grant table current from the Registry, Repository and Namespace caches. Bursts of
 * changes (a relist, a kubectl apply of many objects) are recomputed once, on the next turn of
 * the event loop, and listeners hear only which namespaces and Repositories changed.
 */
export class GrantTracker implements GrantView {
  registries: ReadonlyMap<string, RegistryResource> = new Map();
  table: GrantTable = { secrets: new Map(), repositories: new Map() };
  /** Registry key → the older Registry holding its node port. */
  nodePortConflicts: ReadonlyMap<string, string> = new Map();
  pullModes: ReadonlyMap<string, PullModes> = new Map();
  private readonly sources: {
    registries: Cache<RegistryObject>;
    repositories: Cache<KubeObject>;
    namespaces: Cache<KubeObject>;
    deployments: Cache<DeploymentObject> | undefined;
  };
  /** Registry key → the modes its pods may run since its last finished rollout. */
  private running = new Map<string, Running>();
  private readonly logger: Logger;
  private readonly listeners: ((change: GrantChange) => void)[] = [];
  private scheduled: NodeJS.Immediate | undefined;
  /** Per Registry, what its pull Secrets depend on besides who is granted. */
  private secretSettings = new Map<string, string>();

  /**
   * Watches the caches: any change of theirs schedules a recompute. Without `deployments`, every
   * Registry's pods are taken to run its spec's mode already.
   */
  constructor(
    registries: Cache<RegistryObject>,
    repositories: Cache<KubeObject>,
    namespaces: Cache<KubeObject>,
    logger: Logger,
    deployments?: Cache<DeploymentObject>,
  ) {
    this.sources = { registries, repositories, namespaces, deployments };
    this.logger = logger;
    for (const source of [registries, repositories, namespaces])
      source.onChange(() => this.schedule());
    // A registry rollout finishing ends the union of old and new pull modes.
    deployments?.onChange((_type, deployment) => {
      if (deployment.metadata.labels?.['app.kubernetes.io/component'] === 'registry')
        this.schedule();
    });
  }

  onChange(listener: (change: GrantChange) => void): void {
    this.listeners.push(listener);
  }

  schedule(): void {
    this.scheduled ??= setImmediate(() => {
      this.scheduled = undefined;
      this.recompute();
    });
  }

  stop(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
  }

  recompute(): void {
    const parsed: { registry: RegistryResource; createdAt: string }[] = [];
    for (const object of this.sources.registries.list()) {
      if (object.metadata.deletionTimestamp) continue;
      const registry = parseRegistry(object);
      if (!registry.valid) continue;
      parsed.push({
        registry: registry.registry,
        createdAt: object.metadata.creationTimestamp ?? '',
      });
    }
    const conflicts = nodePortConflicts(
      parsed.map(({ registry, createdAt }) => ({
        key: registryKey(registry),
        mode: registry.spec.nodeAccess.mode,
        port: registry.spec.nodeAccess.port,
        createdAt,
      })),
    );
    // A Registry without its node port has no node endpoint: its pull secrets must not name one.
    const registries = new Map<string, RegistryResource>(
      parsed.map(({ registry }) => [
        registryKey(registry),
        conflicts.has(registryKey(registry)) ? withoutNodeProxy(registry) : registry,
      ]),
    );
    const documents: RepositoryDocument[] = [];
    for (const object of this.sources.repositories.list()) {
      if (object.metadata.deletionTimestamp) continue;
      const parsed = repositoryDocumentSchema.safeParse(object);
      if (parsed.success) documents.push(parsed.data);
      else
        this.logger.warn(
          { repository: `${object.metadata.namespace}/${object.metadata.name}` },
          'repository ignored: invalid spec',
        );
    }
    const namespaces = new Map(
      this.sources.namespaces
        .list()
        .filter((namespace) => !namespace.metadata.deletionTimestamp)
        .map((namespace) => [namespace.metadata.name, namespace.metadata.labels ?? {}]),
    );
    const running = new Map<string, Running>();
    const pullModes = new Map<string, PullModes>();
    for (const [key, registry] of registries) {
      const { namespace, name } = registry.metadata;
      const deployment = this.sources.deployments?.get(
        `${namespace}/${registryObjectNames(name).deployment}`,
      );
      const modes = effectivePullModes(registry, deployment, this.running.get(key));
      running.set(key, modes.running);
      pullModes.set(key, modes);
    }
    const next = computeGrants({
      registries: [...registries.values()],
      repositories: documents,
      namespaces,
      pullModes,
    });

    const changedNamespaces = new Set<string>();
    for (const namespace of new Set([...this.table.secrets.keys(), ...next.secrets.keys()])) {
      if (!sameSet(this.table.secrets.get(namespace), next.secrets.get(namespace)))
        changedNamespaces.add(namespace);
    }
    const settings = new Map(
      [...registries].map(([key, registry]) => [
        key,
        JSON.stringify([
          pullSecretHosts(registry),
          registry.spec.pullSecrets,
          registry.spec.auth.credentialLifetime,
        ]),
      ]),
    );
    for (const [key, value] of settings) {
      if (this.secretSettings.get(key) === value) continue;
      for (const [namespace, keys] of next.secrets)
        if (keys.has(key)) changedNamespaces.add(namespace);
    }
    const changedRepositories = new Set<string>();
    for (const [key, state] of next.repositories) {
      if (!sameContent(this.table.repositories.get(key), state)) changedRepositories.add(key);
    }
    // Which Registries exist, and which take ServiceAccount tokens for which audience.
    const registryAccess =
      accessSignature(registries, pullModes) !== accessSignature(this.registries, this.pullModes);
    const changedRegistries = new Set<string>();
    // Both sides: the Registry kept out and the one holding the port, whose status names it.
    for (const key of new Set([...conflicts.keys(), ...this.nodePortConflicts.keys()])) {
      const [before, after] = [this.nodePortConflicts.get(key), conflicts.get(key)];
      if (before === after) continue;
      for (const changed of [key, before, after]) if (changed) changedRegistries.add(changed);
    }

    this.registries = registries;
    this.nodePortConflicts = conflicts;
    this.table = next;
    this.secretSettings = settings;
    this.pullModes = pullModes;
    this.running = running;
    const change = {
      registries: changedRegistries,
      namespaces: changedNamespaces,
      repositories: changedRepositories,
      registryAccess,
    };
    for (const listener of this.listeners) listener(change);
  }
}

function accessSignature(
  registries: ReadonlyMap<string, RegistryResource>,
  pullModes: ReadonlyMap<string, PullModes>,
): string {
  return JSON.stringify(
    [...registries]
      // Audiences are empty exactly when no pod takes tokens: they cover the review binding too.
      .map(([key, registry]) => [
        key,
        (pullModes.get(key)?.audiences ?? specAudience(registry)).join(' '),
      ])
      .sort(([a], [b]) => (a ?? '').localeCompare(b ?? '')),
  );
}

function specAudience(registry: RegistryResource): string[] {
  const audience = tokenAudience(registry);
  return audience ? [audience] : [];
}

function sameSet(a: ReadonlySet<string> | undefined, b: ReadonlySet<string> | undefined): boolean {
  if ((a?.size ?? 0) !== (b?.size ?? 0)) return false;
  for (const value of a ?? []) if (!b?.has(value)) return false;
  return true;
}
