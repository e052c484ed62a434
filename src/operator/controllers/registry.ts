import { randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Logger } from '../../observability/logger.ts';
import { isNotFound, type KubeObject } from '../../kube/client.ts';
import type { QueueResult } from '../../kube/queue.ts';
import { objectPath } from '../../kube/resources.ts';
import { generateKeyFile } from '../../credentials/keys.ts';
import { planCertificates } from '../../tls/renewal.ts';
import { parseDuration } from '../../config/units.ts';
import type { RegistryStatus } from '../api/registry.ts';
import {
  parseRegistry,
  registryKey,
  type RegistryObject,
  type RegistryResource,
} from '../api/registry-resource.ts';
import { about, ApplyError, type ObjectReference } from '../apply-error.ts';
import type { ApiWriter, Cache, EventSink } from '../cluster.ts';
import {
  cacheKey,
  namespacedKey,
  watch,
  type Controller,
  type KeyOf,
  type WorkKey,
} from '../controller.ts';
import type { GrantView } from '../grant-tracker.ts';
import type {
  DaemonSetObject,
  DeploymentObject,
  SecretObject,
  ServiceObject,
} from '../kube-objects.ts';
import { fieldManager, registryObjectNames } from '../render/labels.ts';
import {
  mirrorSecrets,
  registryObjectsAbsent,
  renderNodeProxy,
  renderRegistry,
  type RegistrySecrets,
  type RenderOptions,
} from '../render/registry.ts';
import {
  condition,
  renderRegistryStatus,
  type Condition,
  type DaemonSetState,
  type DeploymentState,
} from '../render/status.ts';
import { nodePortCondition, nodePortContenders, withoutNodeProxy } from '../node-ports.ts';
import { writeStatus } from '../status-writer.ts';
import { namedSecrets } from '../render/named-secrets.ts';

/** The serving certificate's lifetime when `tls.certificateLifetime` is unset: 90 days. */
const defaultCertificateLifetimeMillis = 90 * 86_400_000;
/** How soon a Registry whose named Secret is missing looks again. */
const namedSecretRecheckMillis = 15_000;

/** The caches the Registry controller reads and watches. */
export interface RegistrySources {
  readonly registries: Cache<RegistryObject>;
  readonly deployments: Cache<DeploymentObject>;
  readonly daemonSets: Cache<DaemonSetObject>;
  /** Berth-managed Secrets only (label-selected): a user's own Secret is never removed. */
  readonly secrets: Cache<SecretObject>;
  /** The other Berth-labelled kinds it renders (ConfigMaps, Services, PVCs, PodDisruptionBudgets), watched for drift. */
  readonly owned: readonly Cache<KubeObject>[];
  /** Who holds which node port. */
  readonly grants: GrantView;
}

/**
 * Reconciles one Registry: renders everything it needs and applies it with server-side apply
 * under one field manager (so a deleted or hand-edited object is put back), then reports status
 * from its Deployment and node-proxy DaemonSet. Level-based: it reads the current state each
 * time and never depends on which event woke it.
 */
export class RegistryController implements Controller<'Registry'> {
  readonly kind = 'Registry';
  readonly watches;
  private readonly api: ApiWriter;
  private readonly sources: RegistrySources;
  private readonly events: EventSink;
  private readonly options: RenderOptions;
  private readonly logger: Logger;

  constructor(
    api: ApiWriter,
    sources: RegistrySources,
    events: EventSink,
    options: RenderOptions,
    logger: Logger,
  ) {
    this.api = api;
    this.sources = sources;
    this.events = events;
    this.options = options;
    this.logger = logger;
    this.watches = [
      watch(sources.registries, (_type, registry) => [keyOf(registry)]),
      // A change to anything rendered for a Registry (drift, a pod's readiness) is its owner's.
      ...[sources.deployments, sources.daemonSets, ...sources.owned].map((cache) =>
        watch(cache, (_type, object: KubeObject) => ownerKeys(object)),
      ),
      watch(sources.secrets, (_type, secret) =>
        secret.metadata.labels?.['app.kubernetes.io/component'] === 'pull-secret'
          ? []
          : ownerKeys(secret),
      ),
      // Both sides of a node port changing hands: the Registry kept out and its holder.
      watch(sources.grants, (change) =>
        [...change.registries].map((key) => namespacedKey('Registry', key)),
      ),
    ];
  }

  *keys(): Iterable<KeyOf<'Registry'>> {
    for (const registry of this.sources.registries.list()) yield keyOf(registry);
  }

  async reconcile(workKey: KeyOf<'Registry'>): Promise<QueueResult> {
    const key = cacheKey(workKey);
    const cached = this.sources.registries.get(key);
    // Deleted: the garbage collector removes what it owned (a retained volume stays).
    if (!cached || cached.metadata.deletionTimestamp) return {};
    // List items may lack apiVersion and kind; events and paths need them.
    const object = { ...cached, apiVersion: 'berth.dev/v1alpha1', kind: 'Registry' as const };
    const previous = object.status?.conditions as Condition[] | undefined;
    const parsed = parseRegistry(cached);
    if (!parsed.valid) {
      // The CRD schema should have refused it; report instead of retrying forever.
      const message = parsed.problem;
      const generation = object.metadata.generation;
      const observed = generation === undefined ? {} : { observedGeneration: generation };
      await this.writeStatus(object, {
        ...observed,
        conditions: [
          condition(
            previous,
            { type: 'Ready', status: 'False', reason: 'InvalidSpec', message, ...observed },
            new Date(),
          ),
        ],
      });
      return {};
    }
    const registry = parsed.registry;
    const holder = this.sources.grants.nodePortConflicts.get(key);
    const effective = holder ? withoutNodeProxy(registry) : registry;
    const names = registryObjectNames(registry.metadata.name);
    const self: ObjectReference = {
      kind: 'Registry',
      namespace: registry.metadata.namespace,
      name: registry.metadata.name,
    };
    // Every object is tried even when another is refused: a claim that cannot grow must not hold
    // back a new image. What failed is reported in status and retried with backoff.
    const failures: ApplyError[] = [];
    const attempt = async <T>(request: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await request();
      } catch (error) {
        failures.push(
          error instanceof ApplyError ? error : new ApplyError('reconcile', self, error),
        );
        return undefined;
      }
    };
    const generated = await attempt(() => this.secretsFor(registry));
    const secrets = generated?.secrets;
    if (generated?.renewed) {
      const { renewed, notAfter } = generated.renewed;
      this.logger.info({ registry: key, renewed, notAfter }, 'certificate renewed');
      await this.events.record(
        object,
        'Normal',
        renewed === 'ca' ? 'CertificateAuthorityRenewed' : 'CertificateRenewed',
        renewed === 'ca'
          ? `a new CA is trusted beside the old one (ca.crt) and signs the next serving certificate; this one is valid until ${notAfter}`
          : `the serving certificate is renewed, valid until ${notAfter}; the pods pick it up without a restart`,
      );
    }
    if (secrets) {
      let service: ServiceObject | undefined;
      for (const desired of renderRegistry(effective, secrets, this.options)) {
        const applied = await attempt(() =>
          about('apply', referenceTo(desired), () =>
            this.api.apply<ServiceObject>(objectPath(desired), desired, fieldManager),
          ),
        );
        if (desired.kind === 'Service') service = applied;
      }
      // The node proxy connects to the ClusterIP the API server gave the Service (nodes need no
      // cluster DNS), so it waits for one; the API server assigns it when it creates the Service,
      // and a later change reaches this reconcile through the Service watch.
      const wantsNodeProxy = effective.spec.nodeAccess.mode === 'NodeProxy';
      const clusterIP = wantsNodeProxy ? assignedClusterIP(service) : undefined;
      if (clusterIP) {
        const nodeProxy = renderNodeProxy(effective, this.options, clusterIP);
        await attempt(() =>
          about('apply', referenceTo(nodeProxy), () =>
            this.api.apply(objectPath(nodeProxy), nodeProxy, fieldManager),
          ),
        );
      } else if (wantsNodeProxy && service) {
        this.logger.warn({ registry: key }, 'registry Service has no ClusterIP yet');
      }
      for (const absent of registryObjectsAbsent(effective)) {
        if (this.managed(absent.kind, absent.namespace, absent.name))
          await attempt(() =>
            about('delete', absent, () =>
              this.api.delete(
                objectPath({
                  apiVersion: absent.apiVersion,
                  kind: absent.kind,
                  metadata: { name: absent.name, namespace: absent.namespace },
                }),
              ),
            ),
          );
      }
    }
    const conflict = holder
      ? {
          reason: 'NodePortConflict',
          message: `nodeAccess.port ${registry.spec.nodeAccess.port} is held on every node by Registry ${holder}; choose another port (no node proxy runs until then)`,
        }
      : undefined;
    const failed =
      failures.length > 0 ? { reason: 'ApplyFailed', message: summarize(failures) } : undefined;
    const missingSecret = await attempt(() => this.namedSecretProblem(registry));

    const namespace = registry.metadata.namespace;
    const deployment = this.sources.deployments.get(`${namespace}/${names.deployment}`);
    const daemonSet = this.sources.daemonSets.get(`${namespace}/${names.nodeProxy}`);
    const now = new Date();
    const rendered = renderRegistryStatus(
      effective,
      {
        deployment: deploymentState(deployment),
        nodeProxy: daemonSetState(daemonSet),
      },
      previous,
      now,
      // What the API refused is the more urgent fix, and the one this reconcile could not do.
      failed ?? missingSecret ?? conflict,
    );
    const contenders = nodePortContenders(this.sources.grants.nodePortConflicts, key);
    const port = nodePortCondition(registry, holder, contenders);
    const status: RegistryStatus = port
      ? {
          ...rendered,
          conditions: [...(rendered.conditions ?? []), condition(previous, port, now)],
        }
      : rendered;
    const wasConflicted = previous?.some((c) => c.reason === 'NodePortConflict');
    const portBefore = previous?.find((c) => c.type === 'NodePort');
    if (conflict && !wasConflicted)
      await this.events.record(object, 'Warning', conflict.reason, conflict.message);
    // The port changed hands, or another Registry now asks for it: pods' localhost:<port> pulls
    // reach whichever holds it, so both sides hear of it.
    if (port?.status === 'True' && wasConflicted)
      await this.events.record(object, 'Normal', 'NodePortAcquired', port.message);
    else if (
      port?.status === 'True' &&
      contenders.length > 0 &&
      portBefore?.message !== port.message
    )
      await this.events.record(object, 'Warning', 'NodePortContested', port.message);
    // Every failed attempt: the recorder counts repeats on one Event.
    if (failed) await this.events.record(object, 'Warning', failed.reason, failed.message);
    if (missingSecret)
      await this.events.record(object, 'Warning', missingSecret.reason, missingSecret.message);
    const wasReady = previous?.find((c) => c.type === 'Ready')?.status === 'True';
    const ready = status.conditions?.find((c) => c.type === 'Ready');
    const isReady = ready?.status === 'True';
    const written = await attempt(() =>
      about('write the status of', self, async () => {
        await this.writeStatus(object, status);
        return true;
      }),
    );
    // A transition is announced once its status is stored, so a retry does not announce it twice.
    if (written && isReady && !wasReady)
      await this.events.record(object, 'Normal', 'Available', 'the registry is serving');
    if (written && !isReady && wasReady)
      await this.events.record(object, 'Warning', 'Unavailable', ready?.message ?? 'not ready');
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) throw new AggregateError(failures, summarize(failures));
    // The user's Secret is not watched (the Secret cache holds Berth's own): look again soon.
    // The certificate is renewed when due, not when some event happens to come.
    const waits = [
      ...(missingSecret ? [namedSecretRecheckMillis] : []),
      ...(generated?.renewAt ? [Math.max(0, generated.renewAt.getTime() - Date.now())] : []),
    ];
    return waits.length > 0 ? { requeueAfterMillis: Math.min(...waits) } : {};
  }

  /**
   * Why a Secret the spec names (tls.certificateSecret, storage.s3.credentialsSecret) cannot
   * serve, if one cannot: missing, or without the keys the pods mount. The pods would wait for it
   * without a word in the Registry's status. The first problem, in the order namedSecrets gives.
   */
  private async namedSecretProblem(
    registry: RegistryResource,
  ): Promise<{ reason: string; message: string } | undefined> {
    const namespace = registry.metadata.namespace;
    for (const { field, name, keys } of [...namedSecrets(registry), ...mirrorSecrets(registry)]) {
      const secret = await about('read', { kind: 'Secret', namespace, name }, async () => {
        try {
          return await this.api.get<SecretObject>(
            `/api/v1/namespaces/${namespace}/secrets/${name}`,
          );
        } catch (error) {
          if (isNotFound(error)) return undefined;
          throw error;
        }
      });
      if (!secret)
        return {
          reason: 'SecretNotFound',
          message: `${field} ${name} does not exist in namespace ${namespace}: the registry pods cannot start until it does`,
        };
      const missing = keys.filter((key) => !secret.data?.[key]);
      if (missing.length > 0)
        return {
          reason: 'SecretIncomplete',
          message: `${field} ${name} has no ${missing.join(', ')}: the registry pods cannot start until it does`,
        };
    }
    return undefined;
  }

  /**
   * The Secrets' generated values: kept once they exist, made once when they do not; the CA and
   * serving certificate renewed when due (planCertificates), with when to look again.
   */
  private async secretsFor(registry: RegistryResource): Promise<GeneratedSecrets> {
    const names = registryObjectNames(registry.metadata.name);
    const read = (name: string): Promise<Record<string, string> | undefined> =>
      about('read', { kind: 'Secret', namespace: registry.metadata.namespace, name }, async () => {
        try {
          const secret = await this.api.get<SecretObject>(
            `/api/v1/namespaces/${registry.metadata.namespace}/secrets/${name}`,
          );
          return Object.fromEntries(
            Object.entries(secret.data ?? {}).map(([key, value]) => [
              key,
              Buffer.from(value, 'base64').toString('utf8'),
            ]),
          );
        } catch (error) {
          if (isNotFound(error)) return undefined;
          throw error;
        }
      });
    const keys = await read(names.keys);
    const admin = await read(names.admin);
    const plan = registry.spec.tls.certificateSecret
      ? undefined
      : await this.certificatesFor(registry, read);
    return {
      secrets: {
        signingKeys: keys?.['signing-keys.json'] ?? (await generateKeyFile()),
        adminPassword: admin?.password ?? randomBytes(24).toString('base64url'),
        certificates: plan ? { ca: plan.ca, serving: plan.serving } : undefined,
      },
      renewAt: plan?.nextAt,
      renewed:
        plan && plan.renewed !== 'none' && plan.hadCertificate
          ? { renewed: plan.renewed, notAfter: plan.servingNotAfter }
          : undefined,
    };
  }

  /**
   * Berth's own CA and serving certificate for the registry Service, from the stored ones:
   * `ca.crt` of the CA Secret is the trust bundle (the signing CA first, then older CAs until
   * they expire), which the serving Secret's `ca.crt` repeats for the node proxies.
   */
  private async certificatesFor(
    registry: RegistryResource,
    read: (name: string) => Promise<Record<string, string> | undefined>,
  ) {
    const names = registryObjectNames(registry.metadata.name);
    const stored = await read(names.ca);
    const tls = await read(names.tls);
    const service = `${names.service}.${registry.metadata.namespace}`;
    const plan = planCertificates(
      {
        ca:
          stored?.['ca.crt'] && stored['ca.key']
            ? { certificatePem: stored['ca.crt'], privateKeyPem: stored['ca.key'] }
            : undefined,
        serving:
          tls?.['tls.crt'] && tls['tls.key']
            ? { certificatePem: tls['tls.crt'], privateKeyPem: tls['tls.key'] }
            : undefined,
      },
      {
        caName: `berth ${registry.metadata.namespace}/${registry.metadata.name} CA`,
        commonName: service,
        names: [
          names.service,
          service,
          `${service}.svc`,
          `${service}.svc.cluster.local`,
          'localhost',
          '127.0.0.1',
        ],
        lifetimeMillis: certificateLifetime(registry),
      },
    );
    return {
      ...plan,
      hadCertificate: tls?.['tls.crt'] !== undefined,
      servingNotAfter: new X509Certificate(plan.serving.certificatePem).validToDate.toISOString(),
    };
  }

  /** Whether the caches hold a Berth-managed object of this kind (label-selected caches). */
  private managed(kind: string, namespace: string, name: string): boolean {
    const cache =
      kind === 'DaemonSet'
        ? this.sources.daemonSets
        : kind === 'Secret'
          ? this.sources.secrets
          : undefined;
    return cache?.get(`${namespace}/${name}`) !== undefined;
  }

  private async writeStatus(
    object: RegistryObject & { kind: 'Registry' },
    status: RegistryStatus,
  ): Promise<void> {
    if (await writeStatus(this.api, object, status))
      this.logger.debug({ registry: registryKey(object) }, 'status written');
  }
}

/** What secretsFor generated, and when the certificates are next due. */
interface GeneratedSecrets {
  readonly secrets: RegistrySecrets;
  readonly renewAt?: Date | undefined;
  /** Set when this reconcile renewed a certificate that existed (not on the first issue). */
  readonly renewed?: { readonly renewed: 'serving' | 'ca'; readonly notAfter: string } | undefined;
}

/** `spec.tls.certificateLifetime`, or 90 days. */
export function certificateLifetime(registry: RegistryResource): number {
  const text = registry.spec.tls.certificateLifetime;
  if (text === undefined) return defaultCertificateLifetimeMillis;
  const millis = parseDuration(text);
  if (millis === undefined) throw new Error(`tls.certificateLifetime ${text} is not a duration`);
  return millis;
}

function keyOf(registry: RegistryObject): KeyOf<'Registry'> {
  return {
    kind: 'Registry',
    namespace: registry.metadata.namespace as string,
    name: registry.metadata.name,
  };
}

/** The Registry a Berth-rendered object belongs to, by its `app.kubernetes.io/instance` label. */
function ownerKeys(object: KubeObject): WorkKey[] {
  const instance = object.metadata.labels?.['app.kubernetes.io/instance'];
  const namespace = object.metadata.namespace;
  return instance && namespace ? [{ kind: 'Registry', namespace, name: instance }] : [];
}

/** An object Berth renders, as failures name it. */
function referenceTo(object: KubeObject): ObjectReference {
  return {
    kind: object.kind ?? 'object',
    namespace: object.metadata.namespace,
    name: object.metadata.name,
  };
}

/** The failures of one reconcile in one message, bounded: the first three and how many more. */
function summarize(failures: readonly ApplyError[]): string {
  const shown = failures.slice(0, 3).map((failure) => failure.message);
  const more = failures.length - shown.length;
  return more > 0 ? `${shown.join('; ')}; and ${more} more` : shown.join('; ');
}

/** The Service's ClusterIP once the API server has assigned one (not headless `None`). */
function assignedClusterIP(service: ServiceObject | undefined): string | undefined {
  const address = service?.spec?.clusterIP;
  return address && isIP(address) ? address : undefined;
}

function daemonSetState(daemonSet: DaemonSetObject | undefined): DaemonSetState | undefined {
  if (!daemonSet) return undefined;
  return {
    desired: daemonSet.status?.desiredNumberScheduled ?? 0,
    ready: daemonSet.status?.numberReady ?? 0,
    observedGeneration: daemonSet.status?.observedGeneration ?? 0,
    generation: daemonSet.metadata.generation ?? 0,
  };
}

function deploymentState(deployment: DeploymentObject | undefined): DeploymentState | undefined {
  if (!deployment) return undefined;
  return {
    replicas: deployment.spec?.replicas ?? 1,
    readyReplicas: deployment.status?.readyReplicas ?? 0,
    updatedReplicas: deployment.status?.updatedReplicas ?? 0,
    observedGeneration: deployment.status?.observedGeneration ?? 0,
    generation: deployment.metadata.generation ?? 0,
  };
}
