import type { V1Secret } from '@kubernetes/client-node';
import type { KubeObject } from '../../kube/client.ts';
import { fieldManager } from './labels.ts';

/**
 * The Secret Berth puts in a namespace that may pull from a Registry. Namespace and name are DNS
 * labels (no dots), so dots keep every Registry's name distinct: `a/b-c` and `a-b/c` differ.
 */
export function pullSecretName(registryNamespace: string, registryName: string): string {
  return `${pullSecretPrefix}${registryNamespace}.${registryName}`;
}

/**
 * Tells GitOps tools that Berth, not the repository they sync, manages this object: Argo CD does
 * not prune it or report it as extraneous, Flux does not reconcile it.
 */
export const gitOpsAnnotations = {
  'argocd.argoproj.io/compare-options': 'IgnoreExtraneous',
  'argocd.argoproj.io/sync-options': 'Prune=false',
  'kustomize.toolkit.fluxcd.io/reconcile': 'disabled',
} as const;

export interface PullSecretInput {
  readonly registry: { readonly name: string; readonly namespace: string };
  readonly namespace: string;
  /** Every host a pod may name in `image:`: localhost:<port>, the Service DNS name, the external URL's host. */
  readonly endpoints: readonly string[];
  /** The namespace credential (a JWT signed by the Registry's key). */
  readonly credential: string;
  /** When the credential expires, so the controller knows when to rotate it. */
  readonly expiresAt: Date;
  readonly issuedAt: Date;
  /** The signing key's id: a credential from a key the registry no longer has is replaced. */
  readonly keyId: string;
}

/**
 * A `kubernetes.io/dockerconfigjson` Secret with one entry per endpoint, all carrying the
 * namespace's credential (username = namespace, password = credential), as the kubelet reads it.
 * Pure.
 */
export function renderPullSecret(input: PullSecretInput): KubeObject {
  const auth = Buffer.from(`${input.namespace}:${input.credential}`).toString('base64');
  const auths = Object.fromEntries(
    input.endpoints.map((endpoint) => [
      endpoint,
      { username: input.namespace, password: input.credential, auth },
    ]),
  );
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: pullSecretName(input.registry.namespace, input.registry.name),
      namespace: input.namespace,
      labels: {
        'app.kubernetes.io/name': 'berth',
        'app.kubernetes.io/component': 'pull-secret',
        'app.kubernetes.io/managed-by': fieldManager,
      },
      annotations: {
        ...gitOpsAnnotations,
        'berth.dev/registry': `${input.registry.namespace}/${input.registry.name}`,
        'berth.dev/credential-key': input.keyId,
        'berth.dev/credential-issued-at': input.issuedAt.toISOString(),
        'berth.dev/credential-expires-at': input.expiresAt.toISOString(),
      },
    },
    type: 'kubernetes.io/dockerconfigjson',
    stringData: { '.dockerconfigjson': JSON.stringify({ auths }) },
  } satisfies V1Secret;
}

/**
 * Whether a credential is due for rotation: at two thirds of its lifetime, so that the old one
 * (still valid until it expires) overlaps with the new one for a third.
 */
export function dueForRotation(issuedAt: Date, expiresAt: Date, now: Date): boolean {
  return now.getTime() >= rotationTime(issuedAt, expiresAt).getTime();
}

/**
 * No credential is replaced sooner than this after it was issued, whatever its lifetime: the CRD
 * admits no lifetime below 60s (rotation at 40s), but a Registry stored before that bound, with
 * e.g. `0s`, must not make every write of its Secrets trigger the next.
 */
const minimumRotationMillis = 10_000;

/** When a credential is due for rotation: two thirds into its lifetime, and not before the floor. */
export function rotationTime(issuedAt: Date, expiresAt: Date): Date {
  const lifetime = expiresAt.getTime() - issuedAt.getTime();
  return new Date(issuedAt.getTime() + Math.max((lifetime * 2) / 3, minimumRotationMillis));
}

/** Berth owns every imagePullSecrets entry and Secret whose name starts with this. */
const pullSecretPrefix = 'berth-pull.';

export function isPullSecretName(name: string | undefined): boolean {
  return name?.startsWith(pullSecretPrefix) ?? false;
}

/** Whether a ServiceAccount gets the pull Secret under a Registry's `pullSecrets.serviceAccounts`. */
export function servedServiceAccount(
  mode: 'All' | 'Default' | 'None',
  serviceAccount: string,
): boolean {
  return mode === 'All' || (mode === 'Default' && serviceAccount === 'default');
}

/**
 * A ServiceAccount's imagePullSecrets holding exactly `wanted` among Berth's entries (names
 * starting with `berth-pull.`), everything else (users' and other tools' entries, and their
 * order) untouched. Returns undefined when nothing would change, so the caller writes nothing.
 */
export function withPullSecrets(
  existing: readonly { name?: string }[] | undefined,
  wanted: readonly string[],
): { name?: string }[] | undefined {
  const list = existing ?? [];
  const kept = list.filter(
    (entry) => !isPullSecretName(entry.name) || wanted.includes(entry.name as string),
  );
  const missing = wanted.filter((name) => !kept.some((entry) => entry.name === name));
  if (kept.length === list.length && missing.length === 0) return undefined;
  return [...kept, ...missing.map((name) => ({ name }))];
}
