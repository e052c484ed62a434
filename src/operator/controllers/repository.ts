import type { Logger } from '../../observability/logger.ts';
import type { KubeClient, KubeObject } from '../../kube/client.ts';
import type { Informer } from '../../kube/informer.ts';
import type { QueueResult } from '../../kube/queue.ts';
import type { RepositoryStatus } from '../api/repository.ts';
import { about } from '../apply-error.ts';
import type { EventRecorder } from '../events.ts';
import type { GrantTable, RepositoryState } from '../grants.ts';
import { fieldManager } from '../render/labels.ts';
import { condition, type Condition } from '../render/status.ts';

export interface RepositoryObject extends KubeObject {
  spec?: unknown;
  status?: RepositoryStatus;
}

/**
 * Reports a Repository's state: Ready with PullSecretsIssued (or PublicRepository), or not Ready
 * with the reason it grants nothing (PathNotOwned, PathConflict, NotATenant, RegistryNotFound).
 * It writes only the status subresource, never spec, so GitOps tools see no drift.
 */
export class RepositoryController {
  private readonly client: KubeClient;
  private readonly repositories: Informer<RepositoryObject>;
  private readonly grants: () => GrantTable;
  private readonly events: EventRecorder;
  private readonly logger: Logger;

  constructor(
    client: KubeClient,
    repositories: Informer<RepositoryObject>,
    grants: () => GrantTable,
    events: EventRecorder,
    logger: Logger,
  ) {
    this.client = client;
    this.repositories = repositories;
    this.grants = grants;
    this.events = events;
    this.logger = logger;
  }

  async reconcile(key: string, now = new Date()): Promise<QueueResult> {
    const cached = this.repositories.get(key);
    if (!cached || cached.metadata.deletionTimestamp) return {};
    const object = { ...cached, apiVersion: 'berth.dev/v1alpha1', kind: 'Repository' };
    const state = this.grants().repositories.get(key);
    // Not in the table: its spec did not parse; the API server's schema should have refused it.
    if (!state) return {};
    const previous = object.status?.conditions as Condition[] | undefined;
    const status = renderRepositoryStatus(state, object.metadata.generation, previous, now);
    if (JSON.stringify(object.status ?? {}) === JSON.stringify(status)) return {};
    const namespace = object.metadata.namespace as string;
    try {
      await about(
        'write the status of',
        { kind: 'Repository', namespace, name: object.metadata.name },
        () =>
          this.client.apply(
            `/apis/berth.dev/v1alpha1/namespaces/${namespace}/repositories/${object.metadata.name}/status`,
            {
              apiVersion: 'berth.dev/v1alpha1',
              kind: 'Repository',
              metadata: { name: object.metadata.name, namespace },
              status,
            },
            fieldManager,
          ),
      );
    } catch (error) {
      // Its status is what failed, so only an Event can say so; the key is retried with backoff.
      await this.events.record(object, 'Warning', 'ApplyFailed', (error as Error).message);
      throw error;
    }
    const before = previous?.find((c) => c.type === 'Ready');
    if (before?.reason !== state.reason) {
      await this.events.record(
        object,
        state.ready ? 'Normal' : 'Warning',
        state.reason,
        state.message,
      );
    }
    this.logger.debug({ repository: key, reason: state.reason }, 'repository status written');
    return {};
  }
}

/** The Repository's status from its state in the grant table. Pure. */
export function renderRepositoryStatus(
  state: RepositoryState,
  generation: number | undefined,
  previous: readonly Condition[] | undefined,
  now: Date,
): RepositoryStatus {
  return {
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    conditions: [
      condition(
        previous,
        {
          type: 'Ready',
          status: state.ready ? 'True' : 'False',
          reason: state.reason,
          message: state.message,
          ...(generation !== undefined ? { observedGeneration: generation } : {}),
        },
        now,
      ),
    ],
    ...(state.url ? { url: state.url } : {}),
    ...(state.registries.length > 0 ? { registries: [...state.registries] } : {}),
    pullNamespaces: state.pullNamespaces,
  };
}
