import type { Logger } from '../../observability/logger.ts';
import { isConflict, type KubeObject } from '../../kube/client.ts';
import type { QueueResult } from '../../kube/queue.ts';
import type { RegistryResource } from '../api/registry-resource.ts';
import type { ApiWriter, Cache } from '../cluster.ts';
import { watch, type Controller, type KeyOf, type WorkKey } from '../controller.ts';
import { credentialLifetime, type CredentialSigner } from '../credentials.ts';
import type { GrantView } from '../grant-tracker.ts';
import type { SecretObject, ServiceAccountObject } from '../kube-objects.ts';
import { checkPullSecret } from '../pull-secret-check.ts';
import { pullSecretHosts } from '../render/endpoints.ts';
import { fieldManager, registryObjectNames } from '../render/labels.ts';
import {
  dueForRotation,
  isPullSecretName,
  pullSecretName,
  renderPullSecret,
  rotationTime,
  servedServiceAccount,
  withPullSecrets,
} from '../render/pull-secret.ts';

export interface PullSecretSources {
  readonly namespaces: Cache<KubeObject>;
  /** Secrets Berth manages (label selector), pull secrets among them. */
  readonly secrets: Cache<SecretObject>;
  /** Every ServiceAccount: a new one in an allowed namespace needs Berth's entry at once. */
  readonly serviceAccounts: Cache<ServiceAccountObject>;
  /** Who gets which Registry's pull secret, and the Registries whose spec parsed. */
  readonly grants: GrantView;
}

/**
 * Reconciles one namespace: the pull Secret of every Registry it may pull from (with a fresh
 * credential, rotated at two thirds of its lifetime), no pull Secret of any other Registry, and
 * Berth's entries, and only Berth's, in its ServiceAccounts' imagePullSecrets. Level-based: what
 * it writes depends only on the grant table and the cached objects.
 */
export class PullSecretController implements Controller<'Namespace'> {
  readonly kind = 'Namespace';
  readonly watches;
  private readonly api: ApiWriter;
  private readonly sources: PullSecretSources;
  private readonly signer: CredentialSigner;
  private readonly logger: Logger;

  constructor(
    api: ApiWriter,
    sources: PullSecretSources,
    signer: CredentialSigner,
    logger: Logger,
  ) {
    this.api = api;
    this.sources = sources;
    this.signer = signer;
    this.logger = logger;
    const { grants } = sources;
    this.watches = [
      watch(grants, (change) => [...change.namespaces].map(namespaceKey)),
      watch(sources.serviceAccounts, (type, account) => {
        const namespace = account.metadata.namespace;
        if (type === 'deleted' || !namespace) return [];
        // Only namespaces with a pull Secret, or a ServiceAccount carrying a stale Berth entry.
        const concerned =
          grants.table.secrets.has(namespace) ||
          account.imagePullSecrets?.some((entry) => isPullSecretName(entry.name));
        return concerned ? [namespaceKey(namespace)] : [];
      }),
      watch(sources.secrets, (_type, secret) => {
        const labels = secret.metadata.labels ?? {};
        if (labels['app.kubernetes.io/component'] === 'pull-secret')
          return secret.metadata.namespace ? [namespaceKey(secret.metadata.namespace)] : [];
        // New signing keys: every pull Secret signed by the old ones must be issued again.
        const instance = labels['app.kubernetes.io/instance'];
        if (!instance || secret.metadata.name !== registryObjectNames(instance).keys) return [];
        const key = `${secret.metadata.namespace}/${instance}`;
        return [...grants.table.secrets]
          .filter(([, keys]) => keys.has(key))
          .map(([namespace]) => namespaceKey(namespace));
      }),
    ];
  }

  *keys(): Iterable<KeyOf<'Namespace'>> {
    for (const namespace of this.sources.namespaces.list())
      yield namespaceKey(namespace.metadata.name);
  }

  async reconcile(key: KeyOf<'Namespace'>, now = new Date()): Promise<QueueResult> {
    const namespace = key.name;
    const object = this.sources.namespaces.get(namespace);
    // A terminating namespace loses everything in it anyway; writing there would be refused.
    if (!object || object.metadata.deletionTimestamp) return {};
    const registries = this.sources.grants.registries;
    const granted = [...(this.sources.grants.table.secrets.get(namespace) ?? [])]
      .map((key) => registries.get(key))
      .filter((registry): registry is RegistryResource => registry !== undefined);

    const wanted = new Map(
      granted.map((registry) => [
        pullSecretName(registry.metadata.namespace, registry.metadata.name),
        registry,
      ]),
    );
    // Revocation first: a Registry whose Secret cannot be written must not delay it.
    for (const secret of this.pullSecretsIn(namespace)) {
      if (wanted.has(secret.metadata.name)) continue;
      await this.api.delete(`/api/v1/namespaces/${namespace}/secrets/${secret.metadata.name}`);
      this.logger.info({ namespace, secret: secret.metadata.name }, 'pull secret revoked');
    }

    let nextRotation = Number.POSITIVE_INFINITY;
    const failures: Error[] = [];
    for (const [name, registry] of wanted) {
      try {
        nextRotation = Math.min(
          nextRotation,
          await this.ensureSecret(namespace, name, registry, now),
        );
      } catch (error) {
        failures.push(error as Error);
      }
    }

    for (const account of this.sources.serviceAccounts.listNamespace(namespace)) {
      const entries = [...wanted]
        .filter(([, registry]) =>
          servedServiceAccount(
            registry.spec.pullSecrets.serviceAccounts ?? 'All',
            account.metadata.name,
          ),
        )
        .map(([name]) => name);
      const next = withPullSecrets(account.imagePullSecrets, entries);
      if (next) await this.updateServiceAccount(account, next);
    }

    // Everything else is done; the failed Registries are retried with backoff.
    if (failures.length > 0)
      throw new AggregateError(failures, failures.map((failure) => failure.message).join('; '));
    return Number.isFinite(nextRotation)
      ? { requeueAfterMillis: Math.max(0, nextRotation - now.getTime()) }
      : {};
  }

  /** Writes the pull Secret when it is missing, stale or due; returns when it is due next. */
  private async ensureSecret(
    namespace: string,
    name: string,
    registry: RegistryResource,
    now: Date,
  ): Promise<number> {
    const existing = this.sources.secrets.get(`${namespace}/${name}`);
    const hosts = pullSecretHosts(registry);
    const issuedAt = parseTime(existing?.metadata.annotations?.['berth.dev/credential-issued-at']);
    const expiresAt = parseTime(
      existing?.metadata.annotations?.['berth.dev/credential-expires-at'],
    );
    const activeKey = await this.signer.activeKeyId(registry);
    // What the Secret holds, not only what its annotations say: a hand edit is repaired.
    const problem =
      existing && activeKey
        ? await checkPullSecret(
            existing,
            {
              registry: registry.metadata,
              namespace,
              endpoints: hosts,
              activeKeyId: activeKey,
              now,
            },
            (credential) => this.signer.verify(registry, credential),
          )
        : undefined;
    const current =
      existing &&
      problem === undefined &&
      issuedAt &&
      expiresAt &&
      existing.type === 'kubernetes.io/dockerconfigjson' &&
      // Keys regenerated (a Registry recreated under its name): the old credential is useless.
      existing.metadata.annotations?.['berth.dev/credential-key'] === activeKey &&
      sameHosts(existing, hosts) &&
      // A changed credentialLifetime applies at once, not after the old credential's rotation.
      expiresAt.getTime() - issuedAt.getTime() === credentialLifetime(registry) &&
      !dueForRotation(issuedAt, expiresAt, now);
    if (current) return rotationTime(issuedAt, expiresAt).getTime();

    const issued = await this.signer.issue(registry, namespace, now);
    await this.api.apply(
      `/api/v1/namespaces/${namespace}/secrets/${name}`,
      renderPullSecret({
        registry: registry.metadata,
        namespace,
        endpoints: hosts,
        ...issued,
      }),
      fieldManager,
    );
    this.logger.info(
      {
        namespace,
        secret: name,
        expiresAt: issued.expiresAt.toISOString(),
        rotated: !!existing,
        ...(problem ? { problem } : {}),
      },
      'pull secret issued',
    );
    return rotationTime(issued.issuedAt, issued.expiresAt).getTime();
  }

  /**
   * Rewrites imagePullSecrets only if nobody changed the ServiceAccount since it was cached:
   * the resourceVersion in the patch makes the API server refuse a stale write with 409, and the
   * retry starts from the newer list, so another writer's entries are never lost.
   */
  private async updateServiceAccount(
    account: ServiceAccountObject,
    imagePullSecrets: { name?: string }[],
  ): Promise<void> {
    const { namespace, name, resourceVersion } = account.metadata;
    try {
      await this.api.mergePatch(
        `/api/v1/namespaces/${namespace}/serviceaccounts/${name}`,
        { metadata: { resourceVersion }, imagePullSecrets },
        fieldManager,
      );
    } catch (error) {
      if (isConflict(error)) {
        throw new Error(
          `ServiceAccount ${namespace}/${name} changed while it was updated; retrying`,
          {
            cause: error,
          },
        );
      }
      throw error;
    }
  }

  private pullSecretsIn(namespace: string): SecretObject[] {
    return this.sources.secrets
      .listNamespace(namespace)
      .filter(
        (secret) =>
          secret.metadata.labels?.['app.kubernetes.io/component'] === 'pull-secret' &&
          isPullSecretName(secret.metadata.name),
      );
  }
}

function namespaceKey(name: string): KeyOf<'Namespace'> & WorkKey {
  return { kind: 'Namespace', name };
}

function parseTime(text: string | undefined): Date | undefined {
  if (!text) return undefined;
  const time = new Date(text);
  return Number.isNaN(time.getTime()) ? undefined : time;
}

/**
 * Whether a pull Secret already holds an entry for exactly these hosts. Two endpoints may be one
 * host (an externalURL of localhost:<port>), which the Secret holds once: counted twice, the
 * Secret would never match and every write of it would trigger the next.
 */
function sameHosts(secret: SecretObject, wanted: readonly string[]): boolean {
  const hosts = [...new Set(wanted)];
  const encoded = secret.data?.['.dockerconfigjson'];
  if (!encoded) return false;
  try {
    const config = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as {
      auths?: Record<string, unknown>;
    };
    const present = Object.keys(config.auths ?? {});
    return present.length === hosts.length && hosts.every((host) => present.includes(host));
  } catch {
    return false;
  }
}
