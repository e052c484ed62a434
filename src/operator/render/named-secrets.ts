import type { RegistryResource } from '../api/registry-resource.ts';

/** A Secret the user makes and a Registry names, and the keys its pods mount from it. */
export interface NamedSecret {
  /** The spec field that names it, as messages quote it. */
  readonly field: string;
  readonly name: string;
  readonly keys: readonly string[];
}

/**
 * The user's Secrets a Registry's pods need, with the keys that must be in each: the serving
 * certificate (and its CA, which node proxies verify it with) and the S3 keys. Pure.
 */
export function namedSecrets(registry: RegistryResource): NamedSecret[] {
  const { tls, storage, nodeAccess } = registry.spec;
  const needed: NamedSecret[] = [];
  if (tls.certificateSecret)
    needed.push({
      field: 'tls.certificateSecret',
      name: tls.certificateSecret,
      keys: ['tls.crt', 'tls.key', ...(nodeAccess.mode === 'NodeProxy' ? ['ca.crt'] : [])],
    });
  if (storage.s3)
    needed.push({
      field: 'storage.s3.credentialsSecret',
      name: storage.s3.credentialsSecret,
      keys: ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'],
    });
  return needed;
}
