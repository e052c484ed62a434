import { registryObjectNames } from './labels.ts';
import type { RegistryResource } from '../api/registry-resource.ts';

/** The port the registry Service and container listen on. */
export const registryPort = 5000;

export interface RegistryEndpoints {
  /** The registry Service inside the cluster. */
  readonly cluster: string;
  /** `localhost:<port>` on every node, through the node proxy. */
  readonly node?: string;
  readonly external?: string;
}

/** Where a Registry can be reached; the status reports these. Pure. */
export function registryEndpoints(registry: RegistryResource): RegistryEndpoints {
  const names = registryObjectNames(registry.metadata.name);
  return {
    cluster: `${names.service}.${registry.metadata.namespace}.svc:${registryPort}`,
    ...(registry.spec.nodeAccess.mode === 'NodeProxy'
      ? { node: `localhost:${registry.spec.nodeAccess.port}` }
      : {}),
    ...(registry.spec.externalURL ? { external: registry.spec.externalURL } : {}),
  };
}

/**
 * Every host a pod may write in `image:` for this Registry, as keys of a dockerconfigjson: the
 * kubelet matches the image's host against them exactly, so each spelling needs its own entry.
 */
export function pullSecretHosts(registry: RegistryResource): string[] {
  const endpoints = registryEndpoints(registry);
  const names = registryObjectNames(registry.metadata.name);
  const hosts = [
    ...(endpoints.node ? [endpoints.node] : []),
    endpoints.cluster,
    `${names.service}.${registry.metadata.namespace}.svc.cluster.local:${registryPort}`,
  ];
  if (endpoints.external) hosts.push(new URL(endpoints.external).host);
  return hosts;
}

/**
 * The token audience and issuer the registry checks, so credentials the operator signs are the
 * ones the registry accepts. One per Registry: a credential for one Registry is useless on another.
 */
export function registryTokenIdentity(registry: RegistryResource): {
  service: string;
  issuer: string;
} {
  return {
    service: `${registryObjectNames(registry.metadata.name).service}.${registry.metadata.namespace}`,
    issuer: 'berth-operator',
  };
}
