import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { Logger } from '../../observability/logger.ts';
import { isNotFound, type KubeClient, type KubeObject } from '../../kube/client.ts';
import type { Informer } from '../../kube/informer.ts';
import type { QueueResult } from '../../kube/queue.ts';
import { collectionPath, objectPath } from '../../kube/resources.ts';
import { generateKeyFile } from '../../registry/auth/keys.ts';
import { createCertificateAuthority, issueServingCertificate } from '../../tls/certificates.ts';
import { registrySpecSchema, type RegistryStatus } from '../api/registry.ts';
import { about, ApplyError, type ObjectReference } from '../apply-error.ts';
import type { EventRecorder } from '../events.ts';
import { fieldManager, registryObjectNames } from '../render/labels.ts';
import {
  registryObjectsAbsent,
  renderNodeProxy,
  renderRegistry,
  type RegistryResource,
  type RegistrySecrets,
} from '../render/registry.ts';
import {
  condition,
  renderRegistryStatus,
  type Condition,
  type DaemonSetState,
  type DeploymentState,
} from '../render/status.ts';
import { nodePortCondition, withoutNodeProxy } from '../node-ports.ts';

const day = 86_400_000;
/** How soon a Registry whose named Secret is missing looks again. */
const namedSecretRecheckMillis = 15_000;

export interface RegistryObject extends KubeObject {
  spec?: unknown;
  status?: RegistryStatus;
}

export interface DeploymentObject extends KubeObject {
  spec?: { replicas?: number };
  status?: { readyReplicas?: number; updatedReplicas?: number; observedGeneration?: number };
}

export interface DaemonSetObject extends KubeObject {
  status?: { desiredNumberScheduled?: number; numberReady?: number; observedGeneration?: number };
}

interface ServiceObject extends KubeObject {
  spec?: { clusterIP?: string };
}

interface SecretObject extends KubeObject {
  data?: Record<string, string>;
}

export interface RegistryControllerOptions {
  readonly image: string;
  /** The older Registry holding this one's node port, if any (it then runs no node proxy). */
  readonly nodePortHolder?: (key: string) => string | undefined;
  /** The Registries kept off the node port this one holds. */
  readonly nodePortContenders?: (key: string) => readonly string[];
}

/**
 * Reconciles one Registry: renders everything it needs and applies it with server-side apply
 * under one field manager (so a deleted or hand-edited object is put back), then reports status
 * from its Deployment and node-proxy DaemonSet. Level-based: it reads the current state each
 * time and never depends on which event woke it.
 */
export class RegistryController {
  private readonly client: KubeClient;
  private readonly registries: Informer<RegistryObject>;
  private readonly deployments: Informer<DeploymentObject>;
  private readonly daemonSets: Informer<DaemonSetObject>;
  /** Whether the caches hold a Berth-managed object of this kind. */
  private readonly managed: (kind: string, namespace: string, name: string) => boolean;
  private readonly events: EventRecorder;
  private readonly options: RegistryControllerOptions;
  private readonly logger: Logger;

  constructor(
    client: KubeClient,
    informers: {
      registries: Informer<RegistryObject>;
      deployments: Informer<DeploymentObject>;
      daemonSets: Informer<DaemonSetObject>;
      managed: (kind: string, namespace: string, name: string) => boolean;
    },
    events: EventRecorder,
    options: RegistryControllerOptions,
    logger: Logger,
  ) {
    this.client = client;
    this.registries = informers.registries;
    this.deployments = informers.deployments;
    this.daemonSets = informers.daemonSets;
    this.managed = informers.managed;
    this.events = events;
    this.options = options;
    this.logger = logger;
  }

  async reconcile(key: string): Promise<QueueResult> {
    const cached = this.registries.get(key);
    // List items may lack apiVersion and kind; events and paths need them.
    const object = cached && { ...cached, apiVersion: 'berth.dev/v1alpha1', kind: 'Registry' };
    // Deleted: the garbage collector removes what it owned (a retained volume stays).
    if (!object || object.metadata.deletionTimestamp) return {};
    const previous = object.status?.conditions as Condition[] | undefined;
    const parsed = registrySpecSchema.safeParse(object.spec ?? {});
    if (!parsed.success) {
      // The CRD schema should have refused it; report instead of retrying forever.
      const message = parsed.error.issues
        .map((issue) => `${issue.path.join('.')}: ${issue.message}`)
        .join('; ');
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
    const registry: RegistryResource & { metadata: { generation?: number } } = {
      metadata: {
        name: object.metadata.name,
        namespace: object.metadata.namespace as string,
        uid: object.metadata.uid as string,
        ...(object.metadata.generation !== undefined
          ? { generation: object.metadata.generation }
          : {}),
      },
      spec: parsed.data,
    };
    const holder = this.options.nodePortHolder?.(key);
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
    const secrets = await attempt(() => this.secretsFor(registry));
    if (secrets) {
      let service: ServiceObject | undefined;
      for (const desired of renderRegistry(effective, secrets, this.options)) {
        const applied = await attempt(() =>
          about('apply', referenceTo(desired), () =>
            this.client.apply<ServiceObject>(objectPath(desired), desired, fieldManager),
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
            this.client.apply(objectPath(nodeProxy), nodeProxy, fieldManager),
          ),
        );
      } else if (wantsNodeProxy && service) {
        this.logger.warn({ registry: key }, 'registry Service has no ClusterIP yet');
      }
      for (const absent of registryObjectsAbsent(effective)) {
        if (this.managed(absent.kind, absent.namespace, absent.name))
          await attempt(() =>
            about('delete', absent, () =>
              this.client.delete(
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
    const deployment = this.deployments.get(`${namespace}/${names.deployment}`);
    const daemonSet = this.daemonSets.get(`${namespace}/${names.nodeProxy}`);
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
    const contenders = this.options.nodePortContenders?.(key) ?? [];
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
    return missingSecret ? { requeueAfterMillis: namedSecretRecheckMillis } : {};
  }

  /**
   * Why the Secret the spec names (tls.certificateSecret) cannot serve, if it cannot: missing,
   * or without the keys the registry and its node proxies mount. The pods would wait for it
   * without a word in the Registry's status.
   */
  private async namedSecretProblem(
    registry: RegistryResource,
  ): Promise<{ reason: string; message: string } | undefined> {
    const name = registry.spec.tls.certificateSecret;
    if (!name) return undefined;
    const namespace = registry.metadata.namespace;
    const secret = await about('read', { kind: 'Secret', namespace, name }, async () => {
      try {
        return await this.client.get<SecretObject>(
          `/api/v1/namespaces/${namespace}/secrets/${name}`,
        );
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    });
    const needed = [
      'tls.crt',
      'tls.key',
      ...(registry.spec.nodeAccess.mode === 'NodeProxy' ? ['ca.crt'] : []),
    ];
    const missing = needed.filter((key) => !secret?.data?.[key]);
    if (!secret)
      return {
        reason: 'SecretNotFound',
        message: `tls.certificateSecret ${name} does not exist in namespace ${namespace}: the registry pods cannot start until it does`,
      };
    if (missing.length > 0)
      return {
        reason: 'SecretIncomplete',
        message: `tls.certificateSecret ${name} has no ${missing.join(', ')}: the registry pods cannot start until it does`,
      };
    return undefined;
  }

  /** The Secrets' generated values: kept once they exist, made once when they do not. */
  private async secretsFor(registry: RegistryResource): Promise<RegistrySecrets> {
    const names = registryObjectNames(registry.metadata.name);
    const read = (name: string): Promise<Record<string, string> | undefined> =>
      about('read', { kind: 'Secret', namespace: registry.metadata.namespace, name }, async () => {
        try {
          const secret = await this.client.get<SecretObject>(
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
    return {
      signingKeys: keys?.['signing-keys.json'] ?? (await generateKeyFile()),
      adminPassword: admin?.password ?? randomBytes(24).toString('base64url'),
      certificates: registry.spec.tls.certificateSecret
        ? undefined
        : await this.certificatesFor(registry, read),
    };
  }

  /** Berth's own CA (ten years) and serving certificate (one year) for the registry Service. */
  private async certificatesFor(
    registry: RegistryResource,
    read: (name: string) => Promise<Record<string, string> | undefined>,
  ): Promise<NonNullable<RegistrySecrets['certificates']>> {
    const names = registryObjectNames(registry.metadata.name);
    const stored = await read(names.ca);
    const ca =
      stored?.['ca.crt'] && stored['ca.key']
        ? { certificatePem: stored['ca.crt'], privateKeyPem: stored['ca.key'] }
        : createCertificateAuthority(
            `berth ${registry.metadata.namespace}/${registry.metadata.name} CA`,
            10 * 365 * day,
          );
    const tls = await read(names.tls);
    const current = tls?.['tls.crt'] && tls['tls.key'] && tls['ca.crt'] === ca.certificatePem;
    const service = `${names.service}.${registry.metadata.namespace}`;
    const serving = current
      ? { certificatePem: tls['tls.crt'] as string, privateKeyPem: tls['tls.key'] as string }
      : issueServingCertificate(
          ca,
          service,
          [
            names.service,
            service,
            `${service}.svc`,
            `${service}.svc.cluster.local`,
            'localhost',
            '127.0.0.1',
          ],
          365 * day,
        );
    return { ca, serving };
  }

  private async writeStatus(object: RegistryObject, status: RegistryStatus): Promise<void> {
    if (JSON.stringify(object.status ?? {}) === JSON.stringify(status)) return;
    const namespace = object.metadata.namespace as string;
    await this.client.apply(
      `${collectionPath('berth.dev/v1alpha1', 'Registry', namespace)}/${object.metadata.name}/status`,
      {
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: object.metadata.name, namespace: object.metadata.namespace },
        status,
      },
      fieldManager,
    );
    this.logger.debug(
      { registry: `${object.metadata.namespace}/${object.metadata.name}` },
      'status written',
    );
  }
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
