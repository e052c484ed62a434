import type { Logger } from '../observability/logger.ts';
import type { KubeClient, KubeObject } from '../kube/client.ts';
import { Informer } from '../kube/informer.ts';
import { compilePolicy, type Policy, type PolicyOptions } from './compile.ts';
import { scopeRepositories } from './registry-scope.ts';
import { repositoryDocumentSchema, type LabelSelector, type RepositoryDocument } from './schema.ts';
import type { PolicySource, RepositoryUsage } from './source.ts';

/** The field manager of what the registry writes: status.usage, beside the operator's status. */
export const usageFieldManager = 'berth-registry';

export interface KubernetesPolicyOptions extends PolicyOptions {
  /** Only Repositories whose spec.registry names this Registry (and those naming none) count. */
  readonly registry?: { readonly name: string; readonly namespace: string } | undefined;
  /** Only Repositories in namespaces matching this selector count (the Registry's tenants). */
  readonly tenants?: LabelSelector | undefined;
}

/**
 * The live policy in Kubernetes mode: Repository objects and Namespaces (for their labels)
 * by watch, compiled by the same `compilePolicy` as the standalone file. Any change recompiles
 * at once, so a label removed from a namespace is refused on the next request.
 */
export async function watchKubernetesPolicy(
  client: KubeClient,
  options: KubernetesPolicyOptions,
  logger: Logger,
): Promise<PolicySource> {
  const namespaces = new Informer<KubeObject>(client, { path: '/api/v1/namespaces' }, logger);
  const repositories = new Informer<KubeObject>(
    client,
    { path: '/apis/berth.dev/v1alpha1/repositories' },
    logger,
  );
  let policy: Policy = compilePolicy({ namespaces: new Map(), repositories: [] }, options);
  const recompile = (): void => {
    const documents: RepositoryDocument[] = [];
    for (const object of repositories.list()) {
      // As the operator does: a Repository being deleted grants nothing.
      if (object.metadata.deletionTimestamp) continue;
      const parsed = repositoryDocumentSchema.safeParse(object);
      if (!parsed.success) {
        logger.warn(
          { repository: `${object.metadata.namespace}/${object.metadata.name}` },
          'repository ignored: invalid spec',
        );
        continue;
      }
      documents.push(parsed.data);
    }
    const live = new Map(
      namespaces
        .list()
        .filter((namespace) => !namespace.metadata.deletionTimestamp)
        .map((namespace) => [namespace.metadata.name, namespace.metadata.labels ?? {}]),
    );
    const served = options.registry
      ? scopeRepositories({ registry: options.registry, tenants: options.tenants }, documents, live)
          .served
      : documents;
    policy = compilePolicy({ namespaces: live, repositories: served }, options);
  };
  namespaces.onChange(recompile);
  repositories.onChange(recompile);
  namespaces.start();
  repositories.start();
  await Promise.all([namespaces.synced, repositories.synced]);
  recompile();
  logger.info(
    { repositories: repositories.list().length, namespaces: namespaces.list().length },
    'policy watching the cluster',
  );
  const registry = options.registry;
  return {
    current: () => policy,
    // Each Registry owns its own entry of status.usage (a map list keyed by registry), so
    // registries serving one Repository and the operator's status never overwrite each other.
    ...(registry
      ? {
          reportUsage: async (source: string, usage: RepositoryUsage): Promise<void> => {
            const [namespace, name] = source.split('/') as [string, string];
            await client.apply(
              `/apis/berth.dev/v1alpha1/namespaces/${namespace}/repositories/${name}/status`,
              {
                apiVersion: 'berth.dev/v1alpha1',
                kind: 'Repository',
                metadata: { name, namespace },
                status: {
                  usage: [
                    {
                      registry: `${registry.namespace}/${registry.name}`,
                      bytes: usage.bytes,
                      size: usage.size,
                      ...(usage.quota === undefined ? {} : { quota: usage.quota }),
                      // Left out, the apply removes a forecast this manager wrote before.
                      ...(usage.retention === undefined ? {} : { retention: usage.retention }),
                    },
                  ],
                },
              },
              usageFieldManager,
            );
          },
        }
      : {}),
    close: () => {
      namespaces.stop();
      repositories.stop();
    },
  };
}
