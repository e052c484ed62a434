import { collectionPath } from '../kube/resources.ts';
import type { ApiWriter } from './cluster.ts';
import { fieldManager } from './render/labels.ts';
import { sameContent } from './same-content.ts';

/** A Berth object whose status a controller owns. */
export interface StatusOwner<S> {
  readonly kind: 'Registry' | 'Repository';
  readonly metadata: { readonly name: string; readonly namespace?: string | undefined };
  readonly status?: S | undefined;
}

/**
 * Applies `status` to the object's status subresource unless it already says the same (compared
 * by content, not by serialization), and returns whether it wrote. Times come from the caller:
 * `condition` keeps a condition's lastTransitionTime while its status holds, so a reconcile that
 * changes nothing renders the stored status again and writes nothing.
 */
export async function writeStatus<S extends object>(
  api: Pick<ApiWriter, 'apply'>,
  object: StatusOwner<S>,
  status: S,
): Promise<boolean> {
  if (sameContent(object.status ?? {}, status)) return false;
  const { name, namespace } = object.metadata;
  await api.apply(
    `${collectionPath('berth.dev/v1alpha1', object.kind, namespace)}/${name}/status`,
    { apiVersion: 'berth.dev/v1alpha1', kind: object.kind, metadata: { name, namespace }, status },
    fieldManager,
  );
  return true;
}
