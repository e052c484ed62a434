import { parse } from 'yaml';
import { parseRegistryConfig } from '../../config/registry.ts';
import { registrySpecSchema } from '../api/registry.ts';
import { createCertificateAuthority, issueServingCertificate } from '../../tls/certificates.ts';
import { nodeProxyConfigSchema } from '../../config/node-proxy.ts';
import type { RegistryResource } from '../api/registry-resource.ts';
import {
  mirrorSecrets,
  registryObjectsAbsent,
  renderNodeProxy,
  renderRegistry,
} from './registry.ts';

interface PodSpec {
  hostNetwork?: boolean;
  dnsPolicy?: string;
  containers: { args?: string[] }[];
  volumes: unknown[];
}

function registry(spec: Record<string, unknown> = {}): RegistryResource {
  return {
    metadata: { name: 'main', namespace: 'berth-system', uid: 'uid-1' },
    spec: registrySpecSchema.parse(spec),
  };
}
const ca = createCertificateAuthority('test ca', 86_400_000);
const secrets = {
  signingKeys: '{"keys":[]}',
  adminPassword: 'secret',
  certificates: {
    ca,
    serving: issueServingCertificate(ca, 'berth-main', ['berth-main'], 86_400_000),
  },
};
const options = { image: 'berth:test' };
const byKind = (objects: ReturnType<typeof renderRegistry>, kind: string) =>
  objects.filter((object) => object.kind === kind);

describe('renderRegistry', () => {
  it('is pure: the same Registry renders the same objects', () => {
    expect(renderRegistry(registry(), secrets, options)).toEqual(
      renderRegistry(registry(), secrets, options),
    );
  });

  it('owns everything but a retained data volume and signing keys', () => {
    const retained = renderRegistry(registry(), secrets, options);
    for (const object of retained) {
      const owned = Boolean(object.metadata.ownerReferences?.length);
      expect({ name: object.metadata.name, owned }).toEqual({
        name: object.metadata.name,
        owned: !['berth-main-data', 'berth-main-keys'].includes(object.metadata.name),
      });
    }
    const deleted = renderRegistry(
      registry({ storage: { filesystem: { reclaimPolicy: 'Delete' } } }),
      secrets,
      options,
    );
    expect(byKind(deleted, 'PersistentVolumeClaim')[0]?.metadata.ownerReferences).toHaveLength(1);
    expect(
      deleted.find((object) => object.metadata.name === 'berth-main-keys')?.metadata
        .ownerReferences,
    ).toHaveLength(1);
  });

  it('serves a certificate Berth made, or the Secret the Registry names', () => {
    const own = renderRegistry(registry(), secrets, options);
    expect(own.filter((o) => o.kind === 'Secret').map((o) => o.metadata.name)).toEqual([
      'berth-main-keys',
      'berth-main-admin',
      'berth-main-ca',
      'berth-main-tls',
    ]);
    const named = renderRegistry(
      registry({ tls: { certificateSecret: 'from-cert-manager' } }),
      { ...secrets, certificates: undefined },
      options,
    );
    expect(named.filter((o) => o.kind === 'Secret').map((o) => o.metadata.name)).toEqual([
      'berth-main-keys',
      'berth-main-admin',
    ]);
    expect(JSON.stringify(named)).toContain('"secretName":"from-cert-manager"');
  });

  it('leaves the node proxy to renderNodeProxy, which needs the Service address', () => {
    expect(byKind(renderRegistry(registry(), secrets, options), 'DaemonSet')).toHaveLength(0);
  });

  it('gives the node proxy arguments it accepts: the ClusterIP, no DNS, and the CA but never a key', () => {
    const nodeProxy = (clusterIP: string) => {
      const daemonSet = renderNodeProxy(
        registry({ nodeAccess: { port: 5100, cacheSize: '5Gi' } }),
        options,
        clusterIP,
      );
      const pod = (daemonSet as unknown as { spec: { template: { spec: PodSpec } } }).spec.template
        .spec;
      const args = pod.containers[0]?.args ?? [];
      const flag = (name: string) => args[args.indexOf(name) + 1];
      const config = nodeProxyConfigSchema.parse({
        listen: flag('--listen'),
        upstream: flag('--upstream'),
        tlsServerName: flag('--tls-server-name'),
        caFile: flag('--ca-file'),
        cacheDirectory: flag('--cache-dir'),
        cacheSize: flag('--cache-size'),
      });
      return { pod, config };
    };
    const { pod, config } = nodeProxy('10.96.0.17');
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 5100 });
    expect(config.upstream.href).toBe('https://10.96.0.17:5000/');
    // The name the serving certificate Berth issues carries, verified instead of the address.
    expect(config.tlsServerName).toBe('berth-main.berth-system.svc');
    expect(config.cacheSize).toBe(5 * 1024 ** 3);
    expect(pod.volumes).toContainEqual({
      name: 'ca',
      secret: { secretName: 'berth-main-tls', items: [{ key: 'ca.crt', path: 'ca.crt' }] },
    });
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('Default');
    expect(nodeProxy('fd00:10:96::a').config.upstream.href).toBe('https://[fd00:10:96::a]:5000/');
  });

  it('names what a spec no longer wants, and never the data volume', () => {
    expect(registryObjectsAbsent(registry())).toEqual([]);
    expect(
      registryObjectsAbsent(
        registry({
          nodeAccess: { mode: 'None' },
          tls: { certificateSecret: 'berth-main-tls' },
        }),
      ).map((object) => `${object.kind}/${object.name}`),
    ).toEqual(['DaemonSet/berth-main-node-proxy', 'Secret/berth-main-ca']);
  });

  it('runs the registry as non-root on a read-only root filesystem', () => {
    const [deployment] = byKind(renderRegistry(registry(), secrets, options), 'Deployment');
    const pod = (deployment?.spec as { template: { spec: Record<string, unknown> } }).template
      .spec as {
      securityContext: Record<string, unknown>;
      containers: { securityContext: Record<string, unknown>; args: string[] }[];
    };
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532 });
    expect(pod.containers[0]?.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
  });

  it('gives the registry a configuration that berth registry accepts, with auth on', () => {
    const [configMap] = byKind(
      renderRegistry(registry({ auth: { tokenTTL: '10m' } }), secrets, options),
      'ConfigMap',
    );
    const text = (configMap?.data as Record<string, string>)['registry.yaml'] as string;
    const config = parseRegistryConfig(parse(text), 'rendered registry.yaml');
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 5000 });
    expect(config.tls).toEqual({
      certificateFile: '/etc/berth/tls/tls.crt',
      keyFile: '/etc/berth/tls/tls.key',
    });
    expect(config.auth).toMatchObject({
      tokenTTL: 600_000,
      adminPasswordFile: '/etc/berth/admin/password',
    });
  });
});

describe('renderRegistry with ServiceAccount tokens', () => {
  const config = (pullSecrets: Record<string, unknown>) => {
    const [configMap] = byKind(
      renderRegistry(registry({ pullSecrets }), secrets, options),
      'ConfigMap',
    );
    const text = (configMap?.data as Record<string, string>)['registry.yaml'] as string;
    return parseRegistryConfig(parse(text), 'rendered registry.yaml');
  };

  it('accepts tokens of the Registry audience in modes CredentialProvider and Both, with the in-cluster account', () => {
    expect(config({ mode: 'CredentialProvider' }).auth?.serviceAccountTokens).toEqual({
      audience: 'berth.dev/berth-system/main',
    });
    expect(
      config({ mode: 'Both', audience: 'registry.example' }).auth?.serviceAccountTokens,
    ).toEqual({ audience: 'registry.example' });
  });

  it('accepts none in mode Secrets, the default', () => {
    expect(config({}).auth?.serviceAccountTokens).toBeUndefined();
    expect(config({ mode: 'Secrets' }).auth?.serviceAccountTokens).toBeUndefined();
  });
});

describe('renderRegistry on S3', () => {
  const s3 = {
    bucket: 'images',
    endpoint: 'http://s3.storage.svc:7070',
    forcePathStyle: true,
    prefix: 'registries/main',
    credentialsSecret: 'images-s3',
  };
  const render = (replicas: number) =>
    renderRegistry(registry({ replicas, storage: { s3 } }), secrets, options);
  const podTemplate = (objects: ReturnType<typeof renderRegistry>) =>
    (byKind(objects, 'Deployment')[0]?.spec as { template: { spec: Record<string, unknown> } })
      .template;

  it('configures the bucket, and the signing keys from the keys Secret, with no credentials in the ConfigMap', () => {
    const [configMap] = byKind(render(3), 'ConfigMap');
    const text = (configMap?.data as Record<string, string>)['registry.yaml'] as string;
    const config = parseRegistryConfig(parse(text), 'rendered registry.yaml');
    expect(config.storage).toEqual({
      s3: {
        bucket: 'images',
        endpoint: 'http://s3.storage.svc:7070',
        region: 'us-east-1',
        forcePathStyle: true,
        prefix: 'registries/main',
      },
    });
    expect(config.auth?.signingKeyFile).toBe('/etc/berth/keys/signing-keys.json');
    expect(text).not.toContain('AWS');
    expect(text).not.toContain('images-s3');
  });

  it('reads the keys from the named Secret as environment variables, and mounts no data volume', () => {
    const pod = podTemplate(render(3)).spec as {
      containers: { env: unknown[]; volumeMounts: { name: string }[] }[];
      volumes: { name: string }[];
    };
    const ref = (key: string, optional?: boolean) => ({
      name: key,
      valueFrom: {
        secretKeyRef: { name: 'images-s3', key, ...(optional ? { optional } : {}) },
      },
    });
    expect(pod.containers[0]?.env).toEqual([
      ref('AWS_ACCESS_KEY_ID'),
      ref('AWS_SECRET_ACCESS_KEY'),
      ref('AWS_SESSION_TOKEN', true),
    ]);
    expect(pod.volumes.map((volume) => volume.name)).toEqual([
      'config',
      'keys',
      'admin',
      'tls',
      'tmp',
    ]);
    expect(pod.containers[0]?.volumeMounts.map((mount) => mount.name)).not.toContain('data');
    expect(byKind(render(3), 'PersistentVolumeClaim')).toEqual([]);
  });

  it('rolls one new pod in before an old one goes, spreads pods over nodes, and lets one be evicted at a time', () => {
    const objects = render(3);
    const deployment = byKind(objects, 'Deployment')[0]?.spec as Record<string, unknown>;
    expect(deployment.replicas).toBe(3);
    expect(deployment.strategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
    });
    const selector = {
      'app.kubernetes.io/instance': 'main',
      'app.kubernetes.io/component': 'registry',
    };
    expect(podTemplate(objects).spec.topologySpreadConstraints).toEqual([
      {
        maxSkew: 1,
        topologyKey: 'kubernetes.io/hostname',
        whenUnsatisfiable: 'ScheduleAnyway',
        labelSelector: { matchLabels: selector },
      },
    ]);
    expect(byKind(objects, 'PodDisruptionBudget').map((budget) => budget.spec)).toEqual([
      {
        maxUnavailable: 1,
        selector: { matchLabels: selector },
        unhealthyPodEvictionPolicy: 'AlwaysAllow',
      },
    ]);
    expect(byKind(objects, 'Service')[0]?.spec).toMatchObject({ sessionAffinity: 'None' });
    // Scaling changes the replica count alone: no pod template change, so nothing rolls.
    expect(podTemplate(render(1))).toEqual(podTemplate(objects));
  });

  it('keeps the signing keys when the Registry is deleted, as the bucket keeps the images', () => {
    const keys = render(3).find((object) => object.metadata.name === 'berth-main-keys');
    expect(keys?.metadata.ownerReferences).toBeUndefined();
  });
});

describe('renderRegistry with garbage collection and storage limits', () => {
  const renderedConfig = (objects: ReturnType<typeof renderRegistry>) => {
    const [configMap] = byKind(objects, 'ConfigMap');
    const text = (configMap?.data as Record<string, string>)['registry.yaml'] as string;
    return { text, config: parseRegistryConfig(parse(text), 'rendered registry.yaml') };
  };
  const configSha = (objects: ReturnType<typeof renderRegistry>) =>
    (
      byKind(objects, 'Deployment')[0]?.spec as {
        template: { metadata: { annotations: Record<string, string> } };
      }
    ).template.metadata.annotations['berth.dev/config-sha256'];

  it('leaves both out of the config when the Registry sets neither', () => {
    const { text, config } = renderedConfig(renderRegistry(registry(), secrets, options));
    expect(config.gc).toBeUndefined();
    expect(config.limits.storage).toBeUndefined();
    expect(parse(text)).not.toHaveProperty('gc');
    expect(parse(text)).not.toHaveProperty('limits');
  });

  it('renders gc with its defaults, and every field the Registry sets', () => {
    const defaults = renderedConfig(renderRegistry(registry({ gc: {} }), secrets, options));
    expect(defaults.config.gc).toEqual({
      interval: 3_600_000,
      gracePeriod: 3_600_000,
      untagged: 'keep',
    });
    const set = renderedConfig(
      renderRegistry(
        registry({
          gc: { interval: '30m', window: '22:00-04:00', gracePeriod: '2h', untagged: 'delete' },
        }),
        secrets,
        options,
      ),
    );
    expect(set.config.gc).toEqual({
      interval: 1_800_000,
      window: '22:00-04:00',
      gracePeriod: 7_200_000,
      untagged: 'delete',
    });
  });

  it('renders limits.storage on a volume, and size alone on a bucket', () => {
    const volume = renderedConfig(
      renderRegistry(
        registry({ limits: { storage: { size: '100Gi', minFree: '1Gi' } } }),
        secrets,
        options,
      ),
    );
    expect(volume.config.limits.storage).toEqual({ size: 100 * 1024 ** 3, minFree: 1024 ** 3 });
    const bucket = renderedConfig(
      renderRegistry(
        registry({
          storage: { s3: { bucket: 'images', credentialsSecret: 'images-s3' } },
          limits: { storage: { size: '1Ti' } },
        }),
        secrets,
        options,
      ),
    );
    expect(bucket.config.limits.storage).toEqual({ size: 1024 ** 4 });
    // An empty limits section renders nothing, as if it were left out.
    const empty = renderedConfig(
      renderRegistry(registry({ limits: { storage: {} } }), secrets, options),
    );
    expect(parse(empty.text)).not.toHaveProperty('limits');
  });

  it('rolls the pods when gc or a limit changes', () => {
    const shas = [
      registry(),
      registry({ gc: {} }),
      registry({ gc: { untagged: 'delete' } }),
      registry({ limits: { storage: { size: '10Gi' } } }),
    ].map((resource) => configSha(renderRegistry(resource, secrets, options)));
    expect(shas.every((sha) => typeof sha === 'string')).toBe(true);
    expect(new Set(shas).size).toBe(shas.length);
  });

  it('refuses in zod what the registry config would refuse', () => {
    for (const spec of [
      { gc: { interval: '0s' } },
      { gc: { interval: 'hourly' } },
      { gc: { gracePeriod: '500ms' } },
      { gc: { window: '25:00-04:00' } },
      { gc: { window: '1:00-4:00' } },
      { gc: { untagged: 'all' } },
      { gc: { schedule: '@daily' } },
      { limits: { storage: { size: '0' } } },
      { limits: { storage: { minFree: 'lots' } } },
      { limits: { maxConnections: 10 } },
    ]) {
      expect({ spec, success: registrySpecSchema.safeParse(spec).success }).toEqual({
        spec,
        success: false,
      });
    }
  });
});

describe('renderRegistry with mirrors', () => {
  const mirrored = registry({
    mirrors: [
      {
        url: 'https://registry-1.docker.io',
        prefix: 'docker.io',
        credentialsSecret: 'hub-login',
        tagTTL: '10m',
      },
      { url: 'https://ghcr.io', prefix: 'ghcr.io', tls: { caSecret: 'ghcr-ca' } },
      { url: 'http://upstream.test:5000', prefix: 'upstream.test' },
    ],
  });
  const objects = renderRegistry(mirrored, secrets, options);
  const [configMap] = byKind(objects, 'ConfigMap');
  const text = (configMap?.data as Record<string, string>)['registry.yaml'] as string;
  const config = parseRegistryConfig(parse(text), 'rendered registry.yaml');
  const pod = (
    byKind(objects, 'Deployment')[0]?.spec as {
      template: {
        metadata: { annotations: Record<string, string> };
        spec: {
          containers: { volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[] }[];
          volumes: { name: string; secret?: { secretName: string; items?: unknown[] } }[];
        };
      };
    }
  ).template;

  it('puts every mirror into the config, its Secrets as file paths and no secret value', () => {
    expect(config.mirrors).toEqual([
      {
        url: 'https://registry-1.docker.io',
        prefix: 'docker.io',
        credentials: {
          usernameFile: '/etc/berth/mirrors/0/credentials/username',
          passwordFile: '/etc/berth/mirrors/0/credentials/password',
        },
        tagTTL: 600_000,
      },
      {
        url: 'https://ghcr.io',
        prefix: 'ghcr.io',
        tls: { caFile: '/etc/berth/mirrors/1/ca/ca.crt' },
        tagTTL: 300_000,
      },
      { url: 'http://upstream.test:5000', prefix: 'upstream.test', tagTTL: 300_000 },
    ]);
    expect(text).not.toContain('hub-login');
  });

  it('mounts only the needed keys of each Secret, read-only, as whole directories that update in place', () => {
    const volumes = pod.spec.volumes.filter((volume) => volume.name.startsWith('mirror-'));
    expect(volumes).toEqual([
      {
        name: 'mirror-0-credentials',
        secret: {
          secretName: 'hub-login',
          defaultMode: 0o400,
          items: [
            { key: 'username', path: 'username' },
            { key: 'password', path: 'password' },
          ],
        },
      },
      {
        name: 'mirror-1-ca',
        secret: {
          secretName: 'ghcr-ca',
          defaultMode: 0o400,
          items: [{ key: 'ca.crt', path: 'ca.crt' }],
        },
      },
    ]);
    const mounts = pod.spec.containers[0]?.volumeMounts.filter((mount) =>
      mount.name.startsWith('mirror-'),
    );
    expect(mounts).toEqual([
      {
        name: 'mirror-0-credentials',
        mountPath: '/etc/berth/mirrors/0/credentials',
        readOnly: true,
      },
      { name: 'mirror-1-ca', mountPath: '/etc/berth/mirrors/1/ca', readOnly: true },
    ]);
    // subPath mounts are never updated by the kubelet: a rotated Secret would not be seen.
    expect(mounts?.some((mount) => 'subPath' in mount)).toBe(false);
  });

  it('names the Secrets the controller must find, with their keys', () => {
    expect(mirrorSecrets(mirrored)).toEqual([
      { field: 'mirrors[0].credentialsSecret', name: 'hub-login', keys: ['username', 'password'] },
      { field: 'mirrors[1].tls.caSecret', name: 'ghcr-ca', keys: ['ca.crt'] },
    ]);
    expect(mirrorSecrets(registry())).toEqual([]);
  });

  it('renders no mirrors and no mirror volumes when the Registry sets none', () => {
    const plain = renderRegistry(registry(), secrets, options);
    const [map] = byKind(plain, 'ConfigMap');
    expect(
      parse((map?.data as Record<string, string>)['registry.yaml'] as string),
    ).not.toHaveProperty('mirrors');
  });

  it('rolls the pods when a mirror changes', () => {
    const sha = (resource: RegistryResource) =>
      (
        byKind(renderRegistry(resource, secrets, options), 'Deployment')[0]?.spec as {
          template: { metadata: { annotations: Record<string, string> } };
        }
      ).template.metadata.annotations['berth.dev/config-sha256'];
    const one = { url: 'https://ghcr.io', prefix: 'ghcr.io' };
    expect(sha(registry({ mirrors: [one] }))).not.toBe(sha(registry()));
    expect(sha(registry({ mirrors: [{ ...one, tagTTL: '1m' }] }))).not.toBe(
      sha(registry({ mirrors: [one] })),
    );
  });

  it('refuses in zod what the registry config would refuse', () => {
    for (const mirrors of [
      [{ url: 'https://ghcr.io/v2', prefix: 'ghcr.io' }],
      [{ url: 'ftp://ghcr.io', prefix: 'ghcr.io' }],
      [{ url: 'https://ghcr.io', prefix: 'ghcr.io:443' }],
      [{ url: 'https://ghcr.io', prefix: 'GHCR.io' }],
      [{ url: 'https://ghcr.io', prefix: 'ghcr.io', tagTTL: 'soon' }],
      [{ url: 'https://ghcr.io', prefix: 'ghcr.io', credentials: { usernameFile: '/x' } }],
      [
        { url: 'https://ghcr.io', prefix: 'mirror' },
        { url: 'https://quay.io', prefix: 'mirror/quay.io' },
      ],
      [
        { url: 'https://ghcr.io', prefix: 'ghcr.io' },
        { url: 'https://ghcr.io', prefix: 'ghcr.io' },
      ],
    ]) {
      expect({ mirrors, success: registrySpecSchema.safeParse({ mirrors }).success }).toEqual({
        mirrors,
        success: false,
      });
    }
  });
});
