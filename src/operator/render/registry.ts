import type {
  V1ConfigMap,
  V1DaemonSet,
  V1Deployment,
  V1PersistentVolumeClaim,
  V1PodDisruptionBudget,
  V1Secret,
  V1SecretVolumeSource,
  V1Service,
  V1ServiceAccount,
} from '@kubernetes/client-node';
import type { z } from 'zod';
import type { registryConfigSchema } from '../../config/registry.ts';
import { createHash } from 'node:crypto';
import { parseSize } from '../../config/units.ts';
import { stringify } from 'yaml';
import type { KubeObject } from '../../kube/client.ts';
import type { RegistryResource } from '../api/registry-resource.ts';
import type { IssuedCertificate } from '../../tls/certificates.ts';
import { registryPort, registryTokenIdentity } from './endpoints.ts';
import { registryLabels, registryObjectNames } from './labels.ts';
import { tokenAudience } from './token-access.ts';
import type { NamedSecret } from './named-secrets.ts';

/** Secrets are generated once by the controller and passed in, so rendering stays pure. */
export interface RegistrySecrets {
  /** signing-keys.json as the registry's key ring reads it. */
  readonly signingKeys: string;
  readonly adminPassword: string;
  /** Berth's CA and serving certificate, unless the Registry names its own certificate Secret. */
  readonly certificates?:
    { readonly ca: IssuedCertificate; readonly serving: IssuedCertificate } | undefined;
}

export interface RenderOptions {
  /** The image that runs `berth`. */
  readonly image: string;
}

const configDirectory = '/etc/berth/config';
const keysDirectory = '/etc/berth/keys';
const adminDirectory = '/etc/berth/admin';
const dataDirectory = '/var/lib/berth';
const tlsDirectory = '/etc/berth/tls';
const nodeProxyCaDirectory = '/etc/berth/ca';
const nodeProxyCacheDirectory = '/var/cache/berth';
const mirrorsDirectory = '/etc/berth/mirrors';

function ownerReference(registry: RegistryResource) {
  return {
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Registry',
    name: registry.metadata.name,
    uid: registry.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function metadata(
  registry: RegistryResource,
  name: string,
  component: 'registry' | 'node-proxy',
  owned = true,
) {
  return {
    name,
    namespace: registry.metadata.namespace,
    labels: registryLabels(registry.metadata.name, component),
    ...(owned ? { ownerReferences: [ownerReference(registry)] } : {}),
  };
}

/** The `berth registry` configuration the Deployment runs with. */
export function renderRegistryConfig(registry: RegistryResource): string {
  const { auth } = registry.spec;
  const audience = tokenAudience(registry);
  // Checked against the registry's own schema at compile time: a field the registry does not
  // read, or reads with another type, fails the typecheck here rather than the pod at start.
  const config = {
    listen: `0.0.0.0:${registryPort}`,
    storage: renderStorageConfig(registry),
    tls: { certificateFile: `${tlsDirectory}/tls.crt`, keyFile: `${tlsDirectory}/tls.key` },
    log: { level: 'info', requests: true },
    auth: {
      ...registryTokenIdentity(registry),
      tokenTTL: auth.tokenTTL,
      credentialLifetime: auth.credentialLifetime,
      anonymousPull: auth.anonymousPull,
      adminPasswordFile: `${adminDirectory}/password`,
      signingKeyFile: `${keysDirectory}/signing-keys.json`,
      // Policy from Repository objects and Namespaces, the same compiler as the operator's.
      kubernetes: {
        registry: { name: registry.metadata.name, namespace: registry.metadata.namespace },
        ...(registry.spec.tenants.namespaceSelector
          ? { tenants: registry.spec.tenants.namespaceSelector }
          : {}),
      },
      // Pods' own tokens as logins, checked with the pod's in-cluster account.
      ...(audience ? { serviceAccountTokens: { audience } } : {}),
    },
    ...renderCollection(registry),
    ...renderMirrors(registry),
  } satisfies z.input<typeof registryConfigSchema>;
  return stringify(config);
}

type StorageConfig = z.input<typeof registryConfigSchema>['storage'];
type RegistryConfigInput = z.input<typeof registryConfigSchema>;

/**
 * Online garbage collection and the registry-wide storage limits, each only when the Registry
 * sets it: an absent gc means the registry never collects by itself, absent limits none.
 */
function renderCollection(registry: RegistryResource) {
  const { gc, limits } = registry.spec;
  const storage = limits?.storage;
  return {
    ...(gc
      ? {
          gc: {
            interval: gc.interval,
            ...(gc.window !== undefined ? { window: gc.window } : {}),
            gracePeriod: gc.gracePeriod,
            untagged: gc.untagged,
          },
        }
      : {}),
    ...(storage && (storage.size !== undefined || storage.minFree !== undefined)
      ? {
          limits: {
            storage: {
              ...(storage.size !== undefined ? { size: storage.size } : {}),
              ...(storage.minFree !== undefined ? { minFree: storage.minFree } : {}),
            },
          },
        }
      : {}),
  } satisfies Pick<RegistryConfigInput, 'gc' | 'limits'>;
}

type MirrorSpec = NonNullable<RegistryResource['spec']['mirrors']>[number];

/** Where mirror `index`'s Secrets are mounted: one directory each, so each updates in place. */
function mirrorDirectories(index: number) {
  return {
    credentials: `${mirrorsDirectory}/${index}/credentials`,
    ca: `${mirrorsDirectory}/${index}/ca`,
  };
}

/**
 * The pull-through mirrors, with the files their Secrets are mounted as (mirrorVolumes). The
 * registry reads the credential files at each upstream token request, and a mounted Secret
 * updates in place, so a rotated Secret is used without a restart.
 */
function renderMirrors(registry: RegistryResource) {
  const mirrors = registry.spec.mirrors ?? [];
  if (mirrors.length === 0) return {};
  return {
    mirrors: mirrors.map((mirror, index) => {
      const directories = mirrorDirectories(index);
      return {
        url: mirror.url,
        prefix: mirror.prefix,
        tagTTL: mirror.tagTTL,
        ...(mirror.credentialsSecret
          ? {
              credentials: {
                usernameFile: `${directories.credentials}/username`,
                passwordFile: `${directories.credentials}/password`,
              },
            }
          : {}),
        ...(mirror.tls ? { tls: { caFile: `${directories.ca}/ca.crt` } } : {}),
      };
    }),
  } satisfies Pick<RegistryConfigInput, 'mirrors'>;
}

/**
 * The mirrors' Secrets as read-only volumes, only the keys the registry reads: the credentials
 * Secret's username and password, the CA Secret's ca.crt. Whole-directory mounts (no subPath),
 * which the kubelet updates in place when the Secret changes.
 */
function mirrorVolumes(mirrors: readonly MirrorSpec[]) {
  const volumes: { name: string; secret: V1SecretVolumeSource }[] = [];
  const mounts: { name: string; mountPath: string; readOnly: true }[] = [];
  mirrors.forEach((mirror, index) => {
    const directories = mirrorDirectories(index);
    const add = (name: string, secretName: string, keys: string[], mountPath: string) => {
      volumes.push({
        name,
        secret: {
          secretName,
          defaultMode: 0o400,
          items: keys.map((key) => ({ key, path: key })),
        },
      });
      mounts.push({ name, mountPath, readOnly: true });
    };
    if (mirror.credentialsSecret)
      add(
        `mirror-${index}-credentials`,
        mirror.credentialsSecret,
        ['username', 'password'],
        directories.credentials,
      );
    if (mirror.tls) add(`mirror-${index}-ca`, mirror.tls.caSecret, ['ca.crt'], directories.ca);
  });
  return { volumes, mounts };
}

/**
 * The Secrets the mirrors name, with the keys the pods mount from each, in the form the
 * controller checks them (a missing one shows as a Degraded condition naming it). Pure.
 */
export function mirrorSecrets(registry: RegistryResource): NamedSecret[] {
  return (registry.spec.mirrors ?? []).flatMap((mirror, index) => [
    ...(mirror.credentialsSecret
      ? [
          {
            field: `mirrors[${index}].credentialsSecret`,
            name: mirror.credentialsSecret,
            keys: ['username', 'password'],
          },
        ]
      : []),
    ...(mirror.tls
      ? [{ field: `mirrors[${index}].tls.caSecret`, name: mirror.tls.caSecret, keys: ['ca.crt'] }]
      : []),
  ]);
}

/**
 * Where the registry keeps images: the mounted volume, or the bucket. The S3 credentials are not
 * here: they reach the pods as environment variables from the Secret (s3Environment).
 */
function renderStorageConfig(registry: RegistryResource) {
  const s3 = registry.spec.storage.s3;
  if (!s3) return { filesystem: { rootDirectory: dataDirectory } } satisfies StorageConfig;
  const { bucket, endpoint, region, forcePathStyle, prefix } = s3;
  return {
    s3: { bucket, endpoint, region, forcePathStyle, ...(prefix ? { prefix } : {}) },
  } satisfies StorageConfig;
}

/** The variables the registry's S3 client reads its keys from, each from the named Secret. */
function s3Environment(secretName: string) {
  const fromSecret = (key: string, optional: boolean) => ({
    name: key,
    valueFrom: { secretKeyRef: { name: secretName, key, ...(optional ? { optional } : {}) } },
  });
  return [
    fromSecret('AWS_ACCESS_KEY_ID', false),
    fromSecret('AWS_SECRET_ACCESS_KEY', false),
    fromSecret('AWS_SESSION_TOKEN', true),
  ];
}

/** An object a Registry's spec says must not exist (any more): rendered before, not now. */
export interface AbsentObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

/**
 * The objects Berth renders for some specs and not for this one, so the controller removes them
 * (server-side apply alone never deletes): the node proxy without `NodeProxy` mode, Berth's own
 * CA and serving certificate once `tls.certificateSecret` names another. Never the data volume.
 * Pure.
 */
export function registryObjectsAbsent(registry: RegistryResource): AbsentObject[] {
  const names = registryObjectNames(registry.metadata.name);
  const namespace = registry.metadata.namespace;
  const absent: AbsentObject[] = [];
  if (registry.spec.nodeAccess.mode !== 'NodeProxy')
    absent.push({ apiVersion: 'apps/v1', kind: 'DaemonSet', namespace, name: names.nodeProxy });
  const own = registry.spec.tls.certificateSecret;
  if (own) {
    for (const name of [names.ca, names.tls])
      if (name !== own) absent.push({ apiVersion: 'v1', kind: 'Secret', namespace, name });
  }
  return absent;
}

/**
 * Every object a Registry needs, from the Registry alone (plus its generated secrets), but the
 * node proxy (renderNodeProxy), which needs the Service's ClusterIP. Pure: the same input gives
 * the same objects, so applying them again changes nothing. The data volume and the signing
 * keys have no owner reference under `reclaimPolicy: Retain`, so deleting the Registry keeps the
 * images, and a Registry made again under the same name signs with the same keys: the pull
 * secrets and tokens issued before stay valid.
 */
export function renderRegistry(
  registry: RegistryResource,
  secrets: RegistrySecrets,
  options: RenderOptions,
): KubeObject[] {
  const names = registryObjectNames(registry.metadata.name);
  const selector = {
    'app.kubernetes.io/instance': registry.metadata.name,
    'app.kubernetes.io/component': 'registry',
  };
  const filesystem = registry.spec.storage.filesystem;
  const retained = filesystem?.reclaimPolicy !== 'Delete';
  const objects: KubeObject[] = [
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: metadata(registry, names.serviceAccount, 'registry'),
      automountServiceAccountToken: false,
    } satisfies V1ServiceAccount,
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: metadata(registry, names.config, 'registry'),
      data: { 'registry.yaml': renderRegistryConfig(registry) },
    } satisfies V1ConfigMap,
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: metadata(registry, names.keys, 'registry', !retained),
      type: 'Opaque',
      stringData: { 'signing-keys.json': secrets.signingKeys },
    } satisfies V1Secret,
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: metadata(registry, names.admin, 'registry'),
      type: 'Opaque',
      stringData: { username: 'admin', password: secrets.adminPassword },
    } satisfies V1Secret,
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: metadata(registry, names.service, 'registry'),
      spec: {
        selector,
        ports: [{ name: 'registry', port: registryPort, targetPort: 'registry', protocol: 'TCP' }],
        // Every pod serves every request from the bucket: each connection may go to any of them,
        // and owning the field puts back a hand-set ClientIP.
        ...(registry.spec.storage.s3 ? { sessionAffinity: 'None' } : {}),
      },
    } satisfies V1Service,
  ];
  if (!registry.spec.tls.certificateSecret) {
    const certificates = secrets.certificates;
    if (!certificates)
      throw new Error('a Registry without its own certificate Secret needs generated certificates');
    objects.push(
      {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: metadata(registry, names.ca, 'registry'),
        type: 'Opaque',
        stringData: {
          'ca.crt': certificates.ca.certificatePem,
          'ca.key': certificates.ca.privateKeyPem,
        },
      } satisfies V1Secret,
      {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: metadata(registry, names.tls, 'registry'),
        type: 'kubernetes.io/tls',
        stringData: {
          'tls.crt': certificates.serving.certificatePem,
          'tls.key': certificates.serving.privateKeyPem,
          'ca.crt': certificates.ca.certificatePem,
        },
      } satisfies V1Secret,
    );
  }
  if (filesystem) {
    objects.push({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: metadata(registry, names.data, 'registry', filesystem.reclaimPolicy === 'Delete'),
      spec: {
        accessModes: ['ReadWriteOnce'],
        resources: { requests: { storage: filesystem.size } },
        ...(filesystem.storageClassName ? { storageClassName: filesystem.storageClassName } : {}),
      },
    } satisfies V1PersistentVolumeClaim);
  }
  if (registry.spec.storage.s3) objects.push(renderDisruptionBudget(registry, selector));
  objects.push(renderDeployment(registry, options, selector));
  return objects;
}

const restrictedContainer = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

/**
 * With S3 (any number of pods serve from one bucket): a drain or an autoscaler evicts one registry
 * pod at a time, whatever the replica count, so more than one replica keeps serving through it.
 * maxUnavailable rather than minAvailable, so that one replica still drains. A pod that is not
 * ready (e.g. it cannot reach the bucket) serves nothing and may always be evicted.
 */
function renderDisruptionBudget(
  registry: RegistryResource,
  selector: Record<string, string>,
): KubeObject {
  const names = registryObjectNames(registry.metadata.name);
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: metadata(registry, names.disruptionBudget, 'registry'),
    spec: {
      maxUnavailable: 1,
      selector: { matchLabels: selector },
      unhealthyPodEvictionPolicy: 'AlwaysAllow',
    },
  } satisfies V1PodDisruptionBudget;
}

/**
 * How the Deployment replaces pods, and where it puts them. A filesystem volume is ReadWriteOnce:
 * the old pod goes before the new one mounts it. With S3 a new pod comes up beside the old ones
 * and takes traffic once its /readyz (which probes the bucket) passes, and only then does an old
 * one go (maxUnavailable 0): a rollout never serves with fewer pods than asked for, and one that
 * cannot reach the bucket stops with every old pod still serving. The pods spread over nodes
 * where they can (ScheduleAnyway: a one-node cluster still runs them all); this is rendered for
 * any replica count, so scaling changes no pod template and rolls nothing.
 */
function placement(registry: RegistryResource, selector: Record<string, string>) {
  if (!registry.spec.storage.s3) return { strategy: { type: 'Recreate' }, spread: {} };
  return {
    strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
    spread: {
      topologySpreadConstraints: [
        {
          maxSkew: 1,
          topologyKey: 'kubernetes.io/hostname',
          whenUnsatisfiable: 'ScheduleAnyway',
          labelSelector: { matchLabels: selector },
        },
      ],
    },
  };
}

function renderDeployment(
  registry: RegistryResource,
  options: RenderOptions,
  selector: Record<string, string>,
): KubeObject {
  const names = registryObjectNames(registry.metadata.name);
  const s3 = registry.spec.storage.s3;
  const { strategy, spread } = placement(registry, selector);
  const mirrors = mirrorVolumes(registry.spec.mirrors ?? []);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(registry, names.deployment, 'registry'),
    spec: {
      replicas: registry.spec.replicas,
      selector: { matchLabels: selector },
      strategy,
      template: {
        metadata: {
          labels: { ...registryLabels(registry.metadata.name, 'registry'), ...selector },
          // The registry reads its configuration at start: a new one must roll the pods.
          annotations: {
            'berth.dev/config-sha256': createHash('sha256')
              .update(renderRegistryConfig(registry))
              .digest('hex'),
          },
        },
        spec: {
          serviceAccountName: names.serviceAccount,
          ...spread,
          // The registry watches Repositories and Namespaces (ClusterRole berth-registry).
          automountServiceAccountToken: true,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 65532,
            runAsGroup: 65532,
            fsGroup: 65532,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          containers: [
            {
              name: 'registry',
              image: options.image,
              args: ['registry', '--config', `${configDirectory}/registry.yaml`],
              ports: [{ name: 'registry', containerPort: registryPort, protocol: 'TCP' }],
              ...(s3 ? { env: s3Environment(s3.credentialsSecret) } : {}),
              readinessProbe: {
                httpGet: { path: '/readyz', port: 'registry', scheme: 'HTTPS' },
                periodSeconds: 5,
              },
              // Endpoints are removed while the pod terminates, but kube-proxy on every node
              // applies that a moment later: the pause keeps serving until no node routes here.
              lifecycle: { preStop: { sleep: { seconds: 5 } } },
              livenessProbe: {
                httpGet: { path: '/healthz', port: 'registry', scheme: 'HTTPS' },
                periodSeconds: 10,
                failureThreshold: 6,
              },
              resources: {
                requests: { cpu: '100m', memory: '192Mi' },
                limits: { memory: '512Mi' },
              },
              securityContext: restrictedContainer,
              volumeMounts: [
                { name: 'config', mountPath: configDirectory, readOnly: true },
                { name: 'keys', mountPath: keysDirectory, readOnly: true },
                { name: 'admin', mountPath: adminDirectory, readOnly: true },
                { name: 'tls', mountPath: tlsDirectory, readOnly: true },
                ...(s3 ? [] : [{ name: 'data', mountPath: dataDirectory }]),
                { name: 'tmp', mountPath: '/tmp' },
                ...mirrors.mounts,
              ],
            },
          ],
          terminationGracePeriodSeconds: 45,
          volumes: [
            { name: 'config', configMap: { name: names.config } },
            { name: 'keys', secret: { secretName: names.keys, defaultMode: 0o400 } },
            {
              name: 'admin',
              secret: {
                secretName: names.admin,
                defaultMode: 0o400,
                items: [{ key: 'password', path: 'password' }],
              },
            },
            {
              name: 'tls',
              secret: {
                secretName: registry.spec.tls.certificateSecret ?? names.tls,
                defaultMode: 0o400,
                items: [
                  { key: 'tls.crt', path: 'tls.crt' },
                  { key: 'tls.key', path: 'tls.key' },
                ],
              },
            },
            ...(s3 ? [] : [{ name: 'data', persistentVolumeClaim: { claimName: names.data } }]),
            { name: 'tmp', emptyDir: {} },
            ...mirrors.volumes,
          ],
        },
      },
    },
  } satisfies V1Deployment;
}

/**
 * `berth node-proxy` on every node (in `NodeProxy` mode): hostNetwork, listening on loopback
 * only, a blob cache on an emptyDir bounded by `nodeAccess.cacheSize`, and TLS to the registry
 * Service verified with the CA from the serving certificate's Secret (only `ca.crt` is mounted,
 * never a key). It connects to the Service's ClusterIP, so it works on nodes whose host network
 * cannot resolve cluster DNS names (a kubelet's usually cannot), and verifies the Service's DNS
 * name, which Berth's serving certificate carries. Pure.
 */
export function renderNodeProxy(
  registry: RegistryResource,
  options: RenderOptions,
  serviceClusterIP: string,
): KubeObject {
  const names = registryObjectNames(registry.metadata.name);
  // An IPv6 ClusterIP needs brackets in a URL.
  const upstreamHost = serviceClusterIP.includes(':') ? `[${serviceClusterIP}]` : serviceClusterIP;
  const selector = {
    'app.kubernetes.io/instance': registry.metadata.name,
    'app.kubernetes.io/component': 'node-proxy',
  };
  const port = registry.spec.nodeAccess.port;
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: metadata(registry, names.nodeProxy, 'node-proxy'),
    spec: {
      selector: { matchLabels: selector },
      template: {
        metadata: {
          labels: { ...registryLabels(registry.metadata.name, 'node-proxy'), ...selector },
        },
        spec: {
          hostNetwork: true,
          // The proxy resolves no names, so the node's own resolver is enough.
          dnsPolicy: 'Default',
          automountServiceAccountToken: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 65532,
            runAsGroup: 65532,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          tolerations: [{ operator: 'Exists' }],
          containers: [
            {
              name: 'node-proxy',
              image: options.image,
              args: [
                'node-proxy',
                '--listen',
                `127.0.0.1:${port}`,
                '--upstream',
                `https://${upstreamHost}:${registryPort}`,
                '--tls-server-name',
                `${names.service}.${registry.metadata.namespace}.svc`,
                '--ca-file',
                `${nodeProxyCaDirectory}/ca.crt`,
                '--cache-dir',
                nodeProxyCacheDirectory,
                '--cache-size',
                registry.spec.nodeAccess.cacheSize,
              ],
              // The kubelet probes over the node's network; the proxy answers on loopback.
              readinessProbe: {
                httpGet: { host: '127.0.0.1', path: '/readyz', port },
                periodSeconds: 10,
              },
              livenessProbe: {
                httpGet: { host: '127.0.0.1', path: '/healthz', port },
                periodSeconds: 20,
                failureThreshold: 3,
              },
              resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
              securityContext: restrictedContainer,
              volumeMounts: [
                { name: 'ca', mountPath: nodeProxyCaDirectory, readOnly: true },
                { name: 'cache', mountPath: nodeProxyCacheDirectory },
              ],
            },
          ],
          volumes: [
            {
              name: 'ca',
              secret: {
                secretName: registry.spec.tls.certificateSecret ?? names.tls,
                items: [{ key: 'ca.crt', path: 'ca.crt' }],
              },
            },
            {
              name: 'cache',
              // A quarter more than the cache keeps: blobs being fetched sit beside a full cache
              // until they are complete, and the kubelet evicts a pod over its emptyDir limit.
              emptyDir: {
                sizeLimit: String(
                  Math.ceil((parseSize(registry.spec.nodeAccess.cacheSize) ?? 0) * 1.25),
                ),
              },
            },
          ],
        },
      },
    },
  } satisfies V1DaemonSet;
}
