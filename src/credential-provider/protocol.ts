import { z } from 'zod';

/** `credentialprovider.kubelet.k8s.io/v1`, as the kubelet writes it to a provider's stdin. */
export const apiVersion = 'credentialprovider.kubelet.k8s.io/v1';

export const credentialProviderRequestSchema = z.object({
  apiVersion: z.literal(apiVersion),
  kind: z.literal('CredentialProviderRequest'),
  image: z.string().min(1),
  /** Present when the provider's CredentialProviderConfig has `tokenAttributes` (KEP-4412). */
  serviceAccountToken: z.string().optional(),
  serviceAccountAnnotations: z.record(z.string(), z.string()).optional(),
});

export type CredentialProviderRequest = z.infer<typeof credentialProviderRequestSchema>;

export interface CredentialProviderResponse {
  readonly apiVersion: typeof apiVersion;
  readonly kind: 'CredentialProviderResponse';
  readonly cacheKeyType: 'Image' | 'Registry' | 'Global';
  /** A Go duration; `0s` means the kubelet must not cache the answer. */
  readonly cacheDuration: string;
  readonly auth: Readonly<Record<string, { username: string; password: string }>>;
}

/** A refusal the kubelet should see on stderr; the provider exits non-zero with it. */
export class ProviderRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProviderRefusal';
  }
}

/** The username sent with the token; the registry takes the caller's identity from the token. */
export const serviceAccountUsername = 'serviceaccount';
/** The kubelet's cache never holds a token closer than this to its expiry. */
const expiryMarginSeconds = 60;
/** Nor longer than this, whatever the token's lifetime. */
const maxCacheSeconds = 3600;

/**
 * The answer for one pull: the pod's own ServiceAccount token as the password, for the image's
 * host only, and only when that host is one of `hosts` (a Berth endpoint: the node's
 * `localhost:<port>`, the Service name, the external host). Cached per registry for no longer
 * than the token lives; the kubelet keys its cache by the token too (tokenAttributes.cacheType
 * Token), so one pod's answer is never handed to another.
 */
export function answer(
  request: CredentialProviderRequest,
  hosts: ReadonlySet<string>,
  nowMillis: number,
): CredentialProviderResponse {
  const host = registryHost(request.image);
  if (!hosts.has(host))
    throw new ProviderRefusal(`image ${request.image}: host ${host} is not served by Berth`);
  const token = request.serviceAccountToken;
  if (!token)
    throw new ProviderRefusal(
      'no serviceAccountToken in the request: set tokenAttributes in the CredentialProviderConfig',
    );
  const remaining = Math.floor(expiryOf(token) - nowMillis / 1000) - expiryMarginSeconds;
  const seconds = Math.max(0, Math.min(remaining, maxCacheSeconds));
  return {
    apiVersion,
    kind: 'CredentialProviderResponse',
    cacheKeyType: 'Registry',
    cacheDuration: `${seconds}s`,
    auth: { [host]: { username: serviceAccountUsername, password: token } },
  };
}

/**
 * The registry host of an image reference, as the container runtime resolves it: the first
 * path component when it has a dot or a port or is `localhost`, else Docker Hub.
 */
export function registryHost(image: string): string {
  const slash = image.indexOf('/');
  const first = slash < 0 ? '' : image.slice(0, slash);
  if (first === 'localhost' || first.includes('.') || first.includes(':'))
    return first.toLowerCase();
  return 'docker.io';
}

/** `exp` of a JWT, read without verification: the registry verifies it, this only sizes a cache. */
function expiryOf(token: string): number {
  const payload = token.split('.')[1];
  let exp: unknown;
  try {
    exp = (
      JSON.parse(Buffer.from(payload ?? '', 'base64url').toString('utf8')) as { exp?: unknown }
    ).exp;
  } catch {
    exp = undefined;
  }
  if (typeof exp !== 'number')
    throw new ProviderRefusal('serviceAccountToken is not a JWT with exp');
  return exp;
}
