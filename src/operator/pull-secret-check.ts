import type { KubeObject } from '../kube/client.ts';
import { renderPullSecret, type PullSecretInput } from './render/pull-secret.ts';

/** What the Registry's keys say of a credential: whom it names and until when, or why it fails. */
export type CredentialVerdict =
  | { readonly valid: true; readonly namespace: string; readonly expiresAt: number }
  | { readonly valid: false; readonly reason: string };

/** The one credential every entry of a pull Secret carries, or what is wrong with the entries. */
export type ReadBack =
  | { readonly credential: string; readonly keyId: string | undefined }
  | { readonly problem: string };

/** What a pull Secret must be; its `namespace` is the identity its credential must name. */
export interface PullSecretExpectation extends Pick<
  PullSecretInput,
  'registry' | 'namespace' | 'endpoints'
> {
  /** The key that signs for the Registry now. */
  readonly activeKeyId: string;
  readonly now: Date;
}

interface SecretContent extends KubeObject {
  type?: string;
  data?: Record<string, string>;
}

/**
 * The credential a pull Secret holds, as the kubelet would send it: every entry must give the
 * namespace as username and the same password, and `auth` must be those two, since the kubelet
 * may use either form. Pure.
 */
export function readPullSecret(secret: SecretContent, namespace: string): ReadBack {
  const encoded = secret.data?.['.dockerconfigjson'];
  if (!encoded) return { problem: 'it has no .dockerconfigjson' };
  let auths: unknown;
  try {
    auths = (JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as { auths?: unknown })
      .auths;
  } catch {
    return { problem: 'its .dockerconfigjson is not JSON' };
  }
  if (typeof auths !== 'object' || auths === null) return { problem: 'it has no auths' };
  const entries = Object.entries(auths as Record<string, unknown>);
  if (entries.length === 0) return { problem: 'it has no auths' };
  let credential: string | undefined;
  for (const [host, value] of entries) {
    const entry = (value ?? {}) as { username?: unknown; password?: unknown; auth?: unknown };
    if (entry.username !== namespace)
      return { problem: `the entry for ${host} does not name namespace ${namespace}` };
    if (typeof entry.password !== 'string' || entry.password === '')
      return { problem: `the entry for ${host} has no password` };
    if (entry.auth !== Buffer.from(`${namespace}:${entry.password}`).toString('base64'))
      return { problem: `the auth of ${host} is not its username and password` };
    if (credential !== undefined && entry.password !== credential)
      return { problem: 'its entries carry different credentials' };
    credential = entry.password;
  }
  return { credential: credential as string, keyId: keyIdOf(credential as string) };
}

/**
 * Why a pull Secret must be issued again although its annotations look current, or undefined
 * when what it holds works: a credential the Registry's keys verify, signed by the key that signs
 * now, naming the Secret's namespace, not expired and not expiring before its annotation says (so
 * the rotation the annotation schedules comes in time), and the labels and annotations Berth
 * renders. Pure.
 */
export function pullSecretProblem(
  secret: SecretContent,
  read: ReadBack,
  verdict: CredentialVerdict | undefined,
  expected: PullSecretExpectation,
): string | undefined {
  if ('problem' in read) return read.problem;
  if (!verdict) return 'its credential was not verified';
  if (!verdict.valid) return `its credential does not verify: ${verdict.reason}`;
  if (read.keyId !== expected.activeKeyId)
    return `its credential is signed by key ${read.keyId ?? '(none)'}, not ${expected.activeKeyId}`;
  if (verdict.namespace !== expected.namespace)
    return `its credential names namespace ${verdict.namespace}, not ${expected.namespace}`;
  if (verdict.expiresAt <= expected.now.getTime())
    return `its credential expired at ${new Date(verdict.expiresAt).toISOString()}`;
  const annotations = secret.metadata.annotations ?? {};
  const annotatedExpiry = Date.parse(annotations['berth.dev/credential-expires-at'] ?? '');
  // The token's exp is whole seconds: its issue time and its lifetime are each rounded down.
  if (!(annotatedExpiry < verdict.expiresAt + 2000))
    return `its credential expires at ${new Date(verdict.expiresAt).toISOString()}, before its annotation says`;
  const issuedAt = Date.parse(annotations['berth.dev/credential-issued-at'] ?? '');
  if (Number.isNaN(issuedAt)) return 'its issue time is not annotated';

  const rendered = renderPullSecret({
    registry: expected.registry,
    namespace: expected.namespace,
    endpoints: expected.endpoints,
    credential: read.credential,
    issuedAt: new Date(issuedAt),
    expiresAt: new Date(annotatedExpiry),
    keyId: expected.activeKeyId,
  });
  if (secret.type !== rendered.type) return `its type is ${secret.type ?? '(none)'}`;
  for (const field of ['labels', 'annotations'] as const) {
    const actual = secret.metadata[field] ?? {};
    for (const [key, value] of Object.entries(rendered.metadata[field] ?? {}))
      if (actual[key] !== value)
        return `its ${field.slice(0, -1)} ${key} is ${JSON.stringify(actual[key] ?? null)}, not ${JSON.stringify(value)}`;
  }
  return undefined;
}

/**
 * Reads a pull Secret back and checks it against the Registry's keys: the controller's one call.
 * `verify` is the Registry's verdict on a credential.
 */
export async function checkPullSecret(
  secret: SecretContent,
  expected: PullSecretExpectation,
  verify: (credential: string) => Promise<CredentialVerdict>,
): Promise<string | undefined> {
  const read = readPullSecret(secret, expected.namespace);
  const verdict = 'credential' in read ? await verify(read.credential) : undefined;
  return pullSecretProblem(secret, read, verdict, expected);
}

/** The `kid` in a JWT's header, unverified (the signature check says whether to believe it). */
function keyIdOf(token: string): string | undefined {
  const header = token.split('.')[0] ?? '';
  try {
    const kid = (JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { kid?: unknown })
      .kid;
    return typeof kid === 'string' ? kid : undefined;
  } catch {
    return undefined;
  }
}
