import type { Logger } from '../../observability/logger.ts';
import type { KubeObject } from '../../kube/client.ts';
import type { QueueResult } from '../../kube/queue.ts';
import { registryKey, type RegistryObject } from '../api/registry-resource.ts';
import type { RepositoryStatus } from '../api/repository.ts';
import { about } from '../apply-error.ts';
import type { ApiWriter, Cache, EventSink } from '../cluster.ts';
import { cacheKey, namespacedKey, watch, type Controller, type KeyOf } from '../controller.ts';
import type { GrantView } from '../grant-tracker.ts';
import type { RepositoryState } from '../grants.ts';
import { condition, type Condition } from '../render/status.ts';
import { writeStatus } from '../status-writer.ts';

export interface RepositoryObject extends KubeObject {
  spec?: unknown;
  status?: RepositoryStatus;
}

/** Whether a Registry has a ready pod, and its Ready message; undefined when it is not cached. */
export type RegistryAvailability =
  { readonly available: boolean; readonly message: string } | undefined;

export interface RepositorySources {
  readonly repositories: Cache<RepositoryObject>;
  /** Read for whether a Registry serving a Repository has a ready pod, and watched for it. */
  readonly registries: Cache<RegistryObject>;
  readonly grants: GrantView;
}

/** A ready pod is what a pull needs; the Registry's own Ready also waits for node proxies. */
function availability(registry: RegistryObject | undefined): RegistryAvailability {
  if (!registry) return undefined;
  const ready = registry.status?.conditions?.find((c) => c.type === 'Ready');
  return {
    available: (registry.status?.readyReplicas ?? 0) > 0,
    message: ready?.message ?? 'no status yet',
  };
}

/**
 * Reports a Repository's state: Ready with PullSecretsIssued (or PublicRepository), or not Ready
 * with the reason it grants nothing (PathNotOwned, PathConflict, NotATenant, RegistryNotFound)
 * or RegistryUnavailable while no Registry serving it has a ready pod. A change of its URL (its
 * first Registry changed, or lost its node port) is announced with an Event: pods still pull
 * the old one.
 * It writes only the status subresource, never spec, so GitOps tools see no drift.
 */
export class RepositoryController implements Controller<'Repository'> {
  readonly kind = 'Repository';
  readonly watches;
  private readonly api: ApiWriter;
  private readonly sources: RepositorySources;
  private readonly events: EventSink;
  private readonly logger: Logger;

  constructor(api: ApiWriter, sources: RepositorySources, events: EventSink, logger: Logger) {
    this.api = api;
    this.sources = sources;
    this.events = events;
    this.logger = logger;
    this.watches = [
      watch(sources.grants, (change) =>
        [...change.repositories].map((key) => namespacedKey('Repository', key)),
      ),
      // Its status says whether a Registry serving it has a ready pod.
      watch(sources.registries, (_type, registry) => {
        const key = registryKey(registry);
        return [...sources.grants.table.repositories]
          .filter(([, state]) =>
            state.registries.some((served) => `${served.namespace}/${served.name}` === key),
          )
          .map(([repository]) => namespacedKey('Repository', repository));
      }),
    ];
  }

  *keys(): Iterable<KeyOf<'Repository'>> {
    for (const repository of this.sources.repositories.list())
      yield {
        kind: 'Repository',
        namespace: repository.metadata.namespace as string,
        name: repository.metadata.name,
      };
  }

  async reconcile(workKey: KeyOf<'Repository'>, now = new Date()): Promise<QueueResult> {
    const key = cacheKey(workKey);
    const cached = this.sources.repositories.get(key);
    if (!cached || cached.metadata.deletionTimestamp) return {};
    const object = { ...cached, apiVersion: 'berth.dev/v1alpha1', kind: 'Repository' as const };
    const state = this.sources.grants.table.repositories.get(key);
    // Not in the table: its spec did not parse; the API server's schema should have refused it.
    if (!state) return {};
    const previous = object.status?.conditions as Condition[] | undefined;
    const status = renderRepositoryStatus(
      state,
      state.registries.map((registry) =>
        availability(this.sources.registries.get(`${registry.namespace}/${registry.name}`)),
      ),
      object.metadata.generation,
      previous,
      now,
    );
    const namespace = object.metadata.namespace as string;
    try {
      const written = await about(
        'write the status of',
        { kind: 'Repository', namespace, name: object.metadata.name },
        // status.usage is the registry's (its own field manager): neither compared nor applied.
        () => writeStatus(this.api, { ...object, status: withoutUsage(object.status) }, status),
      );
      if (!written) return {};
    } catch (error) {
      // Its status is what failed, so only an Event can say so; the key is retried with backoff.
      await this.events.record(object, 'Warning', 'ApplyFailed', (error as Error).message);
      throw error;
    }
    const before = previous?.find((c) => c.type === 'Ready');
    const after = status.conditions?.find((c) => c.type === 'Ready') as Condition;
    if (before?.reason !== after.reason) {
      await this.events.record(
        object,
        after.status === 'True' ? 'Normal' : 'Warning',
        after.reason,
        after.message,
      );
    }
    const formerURL = object.status?.url;
    if (formerURL && status.url && formerURL !== status.url)
      await this.events.record(
        object,
        'Warning',
        'URLChanged',
        `pods now pull this repository as ${status.url}, no longer ${formerURL}: images that name the old one reach another registry or none`,
      );
    this.logger.debug({ repository: key, reason: after.reason }, 'repository status written');
    return {};
  }
}

/**
 * The Repository's status from its state in the grant table and the availability of each
 * Registry serving it (in `state.registries` order). It is Ready only while one of them has a
 * ready pod: a pull secret is no use while nothing answers. Pure.
 */
export function renderRepositoryStatus(
  state: RepositoryState,
  registries: readonly RegistryAvailability[],
  generation: number | undefined,
  previous: readonly Condition[] | undefined,
  now: Date,
): RepositoryStatus {
  const base = generation !== undefined ? { observedGeneration: generation } : {};
  const available = registries.some((registry) => registry?.available);
  const unavailable = state.registries.map((registry, index) => {
    const message = registries[index]?.message ?? 'not observed yet';
    return `${registry.namespace}/${registry.name}: ${message}`;
  });
  const availability =
    state.registries.length === 0
      ? undefined
      : available
        ? {
            type: 'RegistryAvailable',
            status: 'True' as const,
            reason: 'RegistryAvailable',
            message: 'a Registry serving this repository has a ready pod',
            ...base,
          }
        : {
            type: 'RegistryAvailable',
            status: 'False' as const,
            reason: 'RegistryUnavailable',
            message: `no Registry serving this repository has a ready pod (${unavailable.join('; ')})`,
            ...base,
          };
  const ready =
    state.ready && availability?.status === 'False'
      ? { status: 'False' as const, reason: 'RegistryUnavailable', message: availability.message }
      : { status: state.ready ? ('True' as const) : ('False' as const), ...state };
  return {
    ...base,
    conditions: [
      condition(
        previous,
        {
          type: 'Ready',
          status: ready.status,
          reason: ready.reason,
          message: ready.message,
          ...base,
        },
        now,
      ),
      ...(availability ? [condition(previous, availability, now)] : []),
    ],
    ...(state.url ? { url: state.url } : {}),
    ...(state.registries.length > 0 ? { registries: [...state.registries] } : {}),
    pullNamespaces: state.pullNamespaces,
    ...(state.pullNamespaceNames.length > 0
      ? { pullNamespaceNames: [...state.pullNamespaceNames] }
      : {}),
  };
}

/** A status without the part the registry writes. */
function withoutUsage(status: RepositoryStatus | undefined): RepositoryStatus | undefined {
  if (!status?.usage) return status;
  const { usage: _usage, ...rest } = status;
  return rest;
}
