import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify } from 'yaml';
import {
  minFreeNeedsFilesystem,
  mirrorPrefixesOverlap,
  registrySpecSchema,
  replicasNeedS3,
} from '../../src/operator/api/registry.ts';
import { renderPullSecret } from '../../src/operator/render/pull-secret.ts';
import { renderRegistry } from '../../src/operator/render/registry.ts';
import { createCertificateAuthority, issueServingCertificate } from '../../src/tls/certificates.ts';
import {
  controlPlaneToolNames,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { describeWithTools } from '../support/tools.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

function registry(spec: Record<string, unknown>): string {
  return stringify({
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Registry',
    metadata: { name: 'bad', namespace: 'default' },
    spec,
  });
}

/** The generated CRDs on a real kube-apiserver: they install, default, explain and refuse bad objects. */
describeWithTools(controlPlaneToolNames, 'CRDs on a real API server', () => {
  let cluster: ControlPlane;

  beforeAll(async () => {
    cluster = await startControlPlane();
    await cluster.kubectl(['apply', '--server-side', '-k', `${root}/crds`]);
    await cluster.kubectl([
      'wait',
      '--for=condition=Established',
      'crd/registries.berth.dev',
      'crd/repositories.berth.dev',
      '--timeout=60s',
    ]);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('accepts the examples and fills in defaults', async () => {
    await cluster.kubectl(['create', 'namespace', 'berth-system']);
    await cluster.kubectl(['create', 'namespace', 'team-a']);
    await cluster.kubectl([
      'apply',
      '-f',
      `${root}/examples/registry.yaml`,
      '-f',
      `${root}/examples/repository.yaml`,
    ]);
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: 'minimal', namespace: 'berth-system' },
        spec: {},
      }),
    });
    const minimal = JSON.parse(
      (await cluster.kubectl(['get', 'registry', 'minimal', '-n', 'berth-system', '-o', 'json']))
        .stdout,
    ) as {
      spec: Record<string, unknown>;
    };
    expect(minimal.spec).toMatchObject({
      replicas: 1,
      storage: { filesystem: { size: '20Gi', reclaimPolicy: 'Retain' } },
      nodeAccess: { mode: 'NodeProxy', port: 5000 },
      pullSecrets: { mode: 'Secrets' },
    });
    // No online collection and no registry-wide limit unless the Registry asks for them.
    expect(minimal.spec).not.toHaveProperty('gc');
    expect(minimal.spec).not.toHaveProperty('limits');
    const collecting = JSON.parse(
      (
        await cluster.kubectl(['apply', '--dry-run=server', '-o', 'json', '-f', '-'], {
          input: stringify({
            apiVersion: 'berth.dev/v1alpha1',
            kind: 'Registry',
            metadata: { name: 'collecting', namespace: 'berth-system' },
            spec: { gc: {} },
          }),
        })
      ).stdout,
    ) as { spec: Record<string, unknown> };
    expect(collecting.spec.gc).toEqual({ interval: '1h', gracePeriod: '1h', untagged: 'keep' });
    const repository = JSON.parse(
      (await cluster.kubectl(['get', 'repository', 'web', '-n', 'team-a', '-o', 'json'])).stdout,
    ) as {
      spec: { visibility: string };
    };
    expect(repository.spec.visibility).toBe('Private');
  });

  it('accepts every object the Registry renderer makes (server-side dry run)', async () => {
    const spec = registrySpecSchema.parse(
      parseYaml(await readFile(`${root}/examples/registry.yaml`, 'utf8')).spec,
    );
    const objects = renderRegistry(
      {
        metadata: {
          name: 'main',
          namespace: 'berth-system',
          uid: '00000000-0000-4000-8000-000000000000',
        },
        spec,
      },
      (() => {
        const ca = createCertificateAuthority('e2e ca', 86_400_000);
        return {
          signingKeys: '{"keys":[]}',
          adminPassword: 'secret',
          certificates: {
            ca,
            serving: issueServingCertificate(ca, 'berth-main', ['berth-main'], 86_400_000),
          },
        };
      })(),
      { image: 'berth:test' },
    );
    objects.push(
      renderPullSecret({
        registry: { name: 'main', namespace: 'berth-system' },
        namespace: 'team-a',
        endpoints: ['localhost:5000', 'berth-main.berth-system.svc:5000'],
        credential: 'jwt',
        keyId: 'kid-1',
        issuedAt: new Date(),
        expiresAt: new Date(Date.now() + 86_400_000),
      }),
    );
    const result = await cluster.kubectl(['apply', '--dry-run=server', '-f', '-'], {
      input: objects.map((object) => stringify(object)).join('---\n'),
    });
    expect(result.stdout.trim().split('\n')).toHaveLength(objects.length);
  });

  it('teaches the API through kubectl explain', async () => {
    const explained = (await cluster.kubectl(['explain', 'registry.spec.storage'])).stdout;
    expect(explained).toContain('An S3-compatible bucket, shared by every registry pod.');
    expect(
      (await cluster.kubectl(['explain', 'repository.spec.pull.namespaceSelector'])).stdout,
    ).toContain('labels');
    // Defaults, and what leaving a field out means in a cluster, are in the text.
    const registry = (await cluster.kubectl(['explain', 'repository.spec.registry'])).stdout;
    expect(registry.replace(/\s+/g, ' ')).toContain(
      'Left out, every Registry in the cluster whose tenants.namespaceSelector admits this namespace serves it',
    );
    const port = (await cluster.kubectl(['explain', 'registry.spec.nodeAccess.port'])).stdout;
    expect(port.replace(/\s+/g, ' ')).toContain('5000 by default');
    const gc = (await cluster.kubectl(['explain', 'registry.spec.gc'])).stdout;
    expect(gc.replace(/\s+/g, ' ')).toContain('Left out, the registry never collects by itself.');
    const minFree = (await cluster.kubectl(['explain', 'registry.spec.limits.storage.minFree']))
      .stdout;
    expect(minFree.replace(/\s+/g, ' ')).toContain('a bucket has no free space to measure');
  });

  it.each([
    [
      'S3 storage beside a volume',
      {
        storage: { filesystem: { size: '1Gi' }, s3: { bucket: 'images', credentialsSecret: 's3' } },
      },
      'set storage.filesystem or storage.s3, not both',
    ],
    ['no storage kind', { storage: {} }, 'set storage.filesystem (a volume) or storage.s3'],
    ['replicas on a volume', { replicas: 3 }, replicasNeedS3],
    [
      'replicas on the default volume, named',
      { replicas: 2, storage: { filesystem: { size: '1Gi' } } },
      replicasNeedS3,
    ],
    [
      'S3 without a credentials Secret',
      { storage: { s3: { bucket: 'images' } } },
      'credentialsSecret',
    ],
    [
      'an S3 endpoint that is not a URL of the S3 API',
      {
        storage: {
          s3: { bucket: 'images', credentialsSecret: 's3', endpoint: 'ftp://s3.example' },
        },
      },
      'storage.s3.endpoint is the http(s) URL of the S3 API',
    ],
    [
      'an S3 prefix that climbs out',
      { storage: { s3: { bucket: 'images', credentialsSecret: 's3', prefix: 'a/../b' } } },
      'no . or .. between slashes',
    ],
    [
      'an S3 field Berth does not act on',
      { storage: { s3: { bucket: 'images', credentialsSecret: 's3', storageClass: 'GLACIER' } } },
      'storageClass',
    ],
    ['a privileged node port', { nodeAccess: { port: 80 } }, 'spec.nodeAccess.port'],
    [
      'an unknown node access mode',
      { nodeAccess: { mode: 'HostPort' } },
      'Unsupported value: "HostPort"',
    ],
    [
      'a size that is not a quantity',
      { storage: { filesystem: { size: 'lots' } } },
      'storage.filesystem.size "lots" is not a size; write e.g. 512Mi or 20Gi',
    ],
    [
      'an empty volume',
      { storage: { filesystem: { size: '0Gi' } } },
      'storage.filesystem.size must be more than 0',
    ],
    [
      'a duration that is not one',
      { auth: { tokenTTL: '5 minutes' } },
      'tokenTTL "5 minutes" is not a duration; write e.g. 30s, 5m or 24h',
    ],
    [
      'a credential that expires at once',
      { auth: { credentialLifetime: '0s', tokenTTL: '30s' } },
      'credentialLifetime 0s is out of range: write from 60s to 8760h',
    ],
    [
      'a credential that lives for centuries',
      { auth: { credentialLifetime: '1000000h' } },
      'credentialLifetime 1000000h is out of range: write from 60s to 8760h',
    ],
    [
      'a token that lives for centuries',
      { auth: { tokenTTL: '1000000h', credentialLifetime: '8760h' } },
      'tokenTTL 1000000h is out of range: write from 30s to 24h',
    ],
    [
      'a token shorter than a pull',
      { auth: { tokenTTL: '500ms' } },
      'tokenTTL 500ms is out of range: write from 30s to 24h',
    ],
    [
      'a token that outlives its credential',
      { auth: { tokenTTL: '2h', credentialLifetime: '1h' } },
      'tokenTTL 2h must be shorter than credentialLifetime 1h',
    ],
    [
      'a credential shorter than the default token',
      { auth: { credentialLifetime: '2m' } },
      'tokenTTL 5m must be shorter than credentialLifetime 2m',
    ],
    [
      'an externalURL with a path',
      { externalURL: 'https://registry.example.com/berth' },
      'externalURL is a scheme and a host',
    ],
    [
      'an unknown service account mode',
      { pullSecrets: { serviceAccounts: 'Some' } },
      'Unsupported value: "Some"',
    ],
    [
      'serviceAccounts with mode CredentialProvider, which writes no Secret',
      { pullSecrets: { mode: 'CredentialProvider', serviceAccounts: 'Default' } },
      'mode CredentialProvider writes none: remove it',
    ],
    [
      'a gc interval that is not a duration',
      { gc: { interval: 'hourly' } },
      'gc.interval "hourly" is not a duration; write e.g. 30s, 5m or 24h',
    ],
    [
      'a gc interval of zero',
      { gc: { interval: '0s' } },
      'gc.interval 0s is too short: write at least 1ms',
    ],
    [
      'a grace period shorter than a second',
      { gc: { gracePeriod: '500ms' } },
      'gc.gracePeriod 500ms is too short: write at least 1s',
    ],
    [
      'a gc window that is not HH:MM-HH:MM',
      { gc: { window: '1:00-25:00' } },
      'gc.window "1:00-25:00" is not HH:MM-HH:MM (UTC)',
    ],
    ['an unknown untagged mode', { gc: { untagged: 'all' } }, 'Unsupported value: "all"'],
    [
      'a gc field Berth does not act on',
      { gc: { schedule: '@daily' } },
      'unknown field "spec.gc.schedule"',
    ],
    [
      'a storage limit that is not a size',
      { limits: { storage: { size: 'lots' } } },
      'limits.storage.size "lots" is not a size',
    ],
    [
      'a storage limit of nothing',
      { limits: { storage: { size: '0' } } },
      'limits.storage.size must be more than 0',
    ],
    [
      'a free-space floor on a bucket',
      {
        storage: { s3: { bucket: 'images', credentialsSecret: 's3' } },
        limits: { storage: { minFree: '1Gi' } },
      },
      minFreeNeedsFilesystem,
    ],
    [
      'two mirrors under one prefix',
      {
        mirrors: [
          { url: 'https://registry-1.docker.io', prefix: 'docker.io' },
          { url: 'https://mirror.example', prefix: 'docker.io' },
        ],
      },
      mirrorPrefixesOverlap,
    ],
    [
      'a mirror nested under another',
      {
        mirrors: [
          { url: 'https://ghcr.io', prefix: 'mirror' },
          { url: 'https://quay.io', prefix: 'mirror/quay.io' },
        ],
      },
      mirrorPrefixesOverlap,
    ],
    [
      'a mirror prefix with a port',
      { mirrors: [{ url: 'http://upstream.test:5000', prefix: 'upstream.test:5000' }] },
      'mirrors[].prefix "upstream.test:5000" is not repository path components',
    ],
    [
      'a mirror url with a path',
      { mirrors: [{ url: 'https://ghcr.io/v2', prefix: 'ghcr.io' }] },
      'mirrors[].url is the base URL of the upstream registry',
    ],
    [
      'a mirror tag TTL that is not a duration',
      { mirrors: [{ url: 'https://ghcr.io', prefix: 'ghcr.io', tagTTL: 'soon' }] },
      'mirrors[].tagTTL "soon" is not a duration',
    ],
    [
      'a mirror CA for an http upstream',
      { mirrors: [{ url: 'http://ghcr.io', prefix: 'ghcr.io', tls: { caSecret: 'ca' } }] },
      'mirrors[].tls applies to an https:// url only',
    ],
    [
      "a mirror field the registry's file config has but the Registry does not",
      {
        mirrors: [
          { url: 'https://ghcr.io', prefix: 'ghcr.io', credentials: { usernameFile: '/u' } },
        ],
      },
      'unknown field "spec.mirrors[0].credentials"',
    ],
  ])('refuses %s at apply time, saying what is wrong', async (_label, spec, message) => {
    const result = await cluster.kubectl(['apply', '-f', '-'], {
      input: registry(spec),
      allowFailure: true,
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
  });

  it.each([
    ['the shortest lifetimes', { auth: { tokenTTL: '30s', credentialLifetime: '60s' } }],
    ['the longest lifetimes', { auth: { tokenTTL: '24h', credentialLifetime: '8760h' } }],
    ['lifetimes in other units', { auth: { tokenTTL: '0.5m', credentialLifetime: '1h30m' } }],
    ['an externalURL with a port', { externalURL: 'https://registry.example.com:8443/' }],
    ['a stopped registry', { replicas: 0 }],
    [
      'gc and storage limits on a volume',
      {
        gc: { interval: '30m', window: '22:00-04:00', gracePeriod: '1s', untagged: 'delete' },
        limits: { storage: { size: '100Gi', minFree: '1Gi' } },
      },
    ],
    [
      'a storage size limit on a bucket',
      {
        storage: { s3: { bucket: 'images', credentialsSecret: 's3' } },
        limits: { storage: { size: '1Ti' } },
      },
    ],
    [
      'three replicas on S3',
      {
        replicas: 3,
        storage: {
          s3: {
            bucket: 'images',
            endpoint: 'http://s3.storage.svc:7070',
            forcePathStyle: true,
            prefix: 'registries/main',
            credentialsSecret: 'images-s3',
          },
        },
      },
    ],
    [
      'mirrors with credentials, a CA and a tag TTL',
      {
        mirrors: [
          {
            url: 'https://registry-1.docker.io',
            prefix: 'docker.io',
            credentialsSecret: 'hub-login',
            tagTTL: '10m',
          },
          { url: 'https://ghcr.io', prefix: 'mirror/ghcr.io', tls: { caSecret: 'ghcr-ca' } },
          { url: 'http://upstream.test:5000', prefix: 'mirror/upstream.test' },
        ],
      },
    ],
  ])('admits %s (server-side dry run)', async (_label, spec) => {
    await cluster.kubectl(['apply', '--dry-run=server', '-f', '-'], { input: registry(spec) });
  });

  it('keeps a Registry on the storage kind it was made with', async () => {
    const apply = (storage: Record<string, unknown>, allowFailure = false) =>
      cluster.kubectl(['apply', '-f', '-'], {
        input: stringify({
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Registry',
          metadata: { name: 'moving', namespace: 'default' },
          spec: { storage },
        }),
        allowFailure,
      });
    await apply({ filesystem: { size: '1Gi' } });
    const moved = await apply({ s3: { bucket: 'images', credentialsSecret: 's3' } }, true);
    expect(moved.code).not.toBe(0);
    expect(moved.stderr).toContain('storage cannot change between filesystem and s3');
    await cluster.kubectl(['delete', 'registry', 'moving', '-n', 'default']);
  });

  it('lets a volume grow but not shrink or change its StorageClass', async () => {
    const apply = (filesystem: Record<string, unknown>) =>
      cluster.kubectl(['apply', '-f', '-'], {
        input: stringify({
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Registry',
          metadata: { name: 'volume', namespace: 'default' },
          spec: { storage: { filesystem } },
        }),
        allowFailure: true,
      });
    expect((await apply({ size: '10Gi', storageClassName: 'fast' })).code).toBe(0);
    const shrunk = await apply({ size: '5Gi', storageClassName: 'fast' });
    expect(shrunk.code).not.toBe(0);
    expect(shrunk.stderr).toContain('storage.filesystem.size cannot shrink');
    expect((await apply({ size: '30Gi', storageClassName: 'fast' })).code).toBe(0);
    for (const filesystem of [{ size: '30Gi', storageClassName: 'slow' }, { size: '30Gi' }]) {
      const moved = await apply(filesystem);
      expect(moved.code).not.toBe(0);
      expect(moved.stderr).toContain('storage.filesystem.storageClassName cannot change');
    }
  });

  it('refuses a repository path that is not a repository name', async () => {
    const bad = stringify({
      apiVersion: 'berth.dev/v1alpha1',
      kind: 'Repository',
      metadata: { name: 'bad', namespace: 'team-a' },
      spec: { path: 'Team-A/../web', visibility: 'Hidden' },
    });
    const result = await cluster.kubectl(['apply', '-f', '-'], { input: bad, allowFailure: true });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('spec.path');
    expect(result.stderr).toContain('Unsupported value: "Hidden"');
  });

  it('keeps crds/ and the served schema the same', async () => {
    const served = JSON.parse(
      (await cluster.kubectl(['get', 'crd', 'registries.berth.dev', '-o', 'json'])).stdout,
    ) as {
      spec: { versions: { schema: unknown }[] };
    };
    const file = await readFile(`${root}/crds/registries.berth.dev.yaml`, 'utf8');
    expect(file).toContain(replicasNeedS3);
    expect(JSON.stringify(served.spec.versions[0]?.schema)).toContain(replicasNeedS3);
  });
});
