import type { KubeObject } from '../../kube/client.ts';
import { zodIssues } from '../../util/zod-issues.ts';
import { registrySpecSchema, type RegistrySpec, type RegistryStatus } from './registry.ts';

/** A Registry as the API server and the informer cache hold it: the spec not yet checked. */
export interface RegistryObject extends KubeObject {
  spec?: unknown;
  status?: RegistryStatus;
}

/**
 * A Registry whose spec parsed: what the renderers, the grant table and the controllers work
 * from. The spec is as the API server defaulted it and the zod schema accepted it.
 */
export interface RegistryResource {
  readonly metadata: {
    readonly name: string;
    readonly namespace: string;
    readonly uid: string;
    readonly generation?: number;
  };
  readonly spec: RegistrySpec;
}

/** A cached Registry after parsing: the resource, or why its spec was refused. */
export type ParsedRegistry =
  | { readonly valid: true; readonly registry: RegistryResource }
  | { readonly valid: false; readonly problem: string };

/** Cached objects are replaced, never changed, on every watch event: one parse per version. */
const parsedVersions = new WeakMap<RegistryObject, ParsedRegistry>();

/**
 * The Registry's spec parsed with the schema the CRD is generated from, once per cached object,
 * for the grant tracker and the Registry controller alike.
 */
export function parseRegistry(object: RegistryObject): ParsedRegistry {
  const known = parsedVersions.get(object);
  if (known) return known;
  const spec = registrySpecSchema.safeParse(object.spec ?? {});
  const parsed: ParsedRegistry = spec.success
    ? {
        valid: true,
        registry: {
          metadata: {
            name: object.metadata.name,
            namespace: object.metadata.namespace as string,
            uid: object.metadata.uid as string,
            ...(object.metadata.generation !== undefined
              ? { generation: object.metadata.generation }
              : {}),
          },
          spec: spec.data,
        },
      }
    : {
        valid: false,
        problem: zodIssues(spec.error, 'spec').join('; '),
      };
  parsedVersions.set(object, parsed);
  return parsed;
}

/** The key of a Registry in caches and the grant table: `namespace/name`. */
export function registryKey(registry: {
  readonly metadata: { readonly namespace?: string | undefined; readonly name: string };
}): string {
  return `${registry.metadata.namespace}/${registry.metadata.name}`;
}
