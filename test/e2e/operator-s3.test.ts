import { replicasNeedS3 } from '../../src/operator/api/registry.ts';
import { controlPlaneToolNames, resourceExists } from '../support/control-plane.ts';
import { startOperatorHarness, type OperatorHarness } from '../support/operator-harness.ts';
import { Daemon, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const namespace = 'images';

function registry(name: string, spec: Record<string, unknown>) {
  return {
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Registry',
    metadata: { name, namespace },
    spec: { nodeAccess: { mode: 'None' }, ...spec },
  };
}

const s3 = {
  bucket: 'images',
  endpoint: 'http://s3.storage.svc:7070',
  forcePathStyle: true,
  prefix: 'registries/shared',
  credentialsSecret: 'images-s3',
};

const credentials = {
  apiVersion: 'v1',
  kind: 'Secret',
  metadata: { name: 'images-s3', namespace },
  type: 'Opaque',
  stringData: { AWS_ACCESS_KEY_ID: 'access', AWS_SECRET_ACCESS_KEY: 'secret' },
};

interface Container {
  env?: { name: string; valueFrom?: { secretKeyRef?: Record<string, unknown> } }[];
  volumeMounts: { name: string; mountPath: string }[];
}
interface Deployment {
  spec: {
    replicas: number;
    strategy: Record<string, unknown>;
    template: {
      spec: {
        containers: Container[];
        volumes: { name: string; secret?: { secretName: string } }[];
        topologySpreadConstraints?: unknown[];
      };
    };
  };
}

/**
 * A Registry on S3 with three replicas, on a real API server with deploy/'s RBAC: what the
 * operator renders for it (and no longer for a volume), the credentials Secret it waits for, and
 * the CEL rule that keeps a volume to one replica. The harness plays the kubelet.
 */
describeWithTools(controlPlaneToolNames, 'the operator renders a Registry on S3', () => {
  let harness: OperatorHarness;
  let operator: Daemon;
  const output = () => operator.output.slice(-3000);
  let degraded: unknown;
  /** The Degraded condition's reason, kept for the failure message. */
  const degradedReason = async (name: string) => {
    const found = await harness.condition('registry', name, namespace, 'Degraded');
    degraded = found;
    return found?.reason;
  };
  /** A timed-out wait, with the condition last seen and the operator's last words. */
  const explain = (error: unknown): never => {
    throw new Error(
      `${String(error)}: Degraded ${JSON.stringify(degraded)}; operator: ${output()}`,
    );
  };
  const exists = (kind: string, name: string) =>
    resourceExists(harness.cluster, kind, name, namespace);
  const deployment = (name: string) =>
    harness.getJson<Deployment>(['get', 'deployment', name, '-n', namespace]);

  beforeAll(async () => {
    harness = await startOperatorHarness('operator-s3', [namespace]);
    operator = harness.startOperator();
  });

  afterAll(async () => {
    await operator?.stop();
    await harness?.stop();
  });

  it('refuses three replicas on a volume, saying why, and admits them on S3', async () => {
    const refused = await harness.cluster.kubectl(['apply', '--dry-run=server', '-f', '-'], {
      input: JSON.stringify(registry('volume', { replicas: 3 })),
      allowFailure: true,
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(replicasNeedS3);
    await harness.cluster.kubectl(['apply', '--dry-run=server', '-f', '-'], {
      input: JSON.stringify(registry('bucket', { replicas: 3, storage: { s3 } })),
    });
  });

  it('reports a missing credentials Secret as Degraded SecretNotFound with an Event, until it is made', async () => {
    await harness.apply(registry('shared', { replicas: 3, storage: { s3 } }));
    const message =
      'storage.s3.credentialsSecret images-s3 does not exist in namespace images: the registry pods cannot start until it does';
    await waitFor(
      async () => (await degradedReason('shared')) === 'SecretNotFound',
      30_000,
      'Degraded SecretNotFound',
    ).catch(explain);
    expect(await harness.condition('registry', 'shared', namespace, 'Degraded')).toMatchObject({
      status: 'True',
      message,
    });
    expect(await harness.condition('registry', 'shared', namespace, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'SecretNotFound',
      message: `${message}; 0 of 3 registry pods ready`,
    });
    const [event] = await harness.events(namespace, 'shared', 'SecretNotFound');
    expect(event).toMatchObject({ type: 'Warning', message });

    // With the access key id alone the Secret is incomplete; the session token may be left out.
    await harness.apply({ ...credentials, stringData: { AWS_ACCESS_KEY_ID: 'access' } });
    await waitFor(
      async () => (await degradedReason('shared')) === 'SecretIncomplete',
      30_000,
      'Degraded SecretIncomplete',
    ).catch(explain);
    await harness.apply(credentials);
    await waitFor(
      async () =>
        (await harness.condition('registry', 'shared', namespace, 'Degraded'))?.status === 'False',
      30_000,
      `Degraded cleared once the Secret exists (operator: ${output()})`,
    );
    await harness.markRegistryPodsReady(namespace, 'shared');
    await waitFor(
      async () =>
        (await harness.condition('registry', 'shared', namespace, 'Ready'))?.status === 'True',
      30_000,
      `Ready with 3 of 3 pods (operator: ${output()})`,
    );
    expect((await harness.condition('registry', 'shared', namespace, 'Ready'))?.message).toBe(
      '3 of 3 registry pods ready',
    );
  });

  it('renders three rolling replicas spread over nodes, a disruption budget, the keys from the Secret, and no volume', async () => {
    const { spec } = await deployment('berth-shared');
    expect(spec).toMatchObject({
      replicas: 3,
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
    });
    const podLabels = { 'app.kubernetes.io/instance': 'shared' };
    // The API server keeps the spread as rendered (its full shape is in render/registry.test.ts).
    expect(spec.template.spec.topologySpreadConstraints).toMatchObject([
      { topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway' },
    ]);
    const [container] = spec.template.spec.containers;
    expect(container?.env).toEqual([
      {
        name: 'AWS_ACCESS_KEY_ID',
        valueFrom: { secretKeyRef: { name: 'images-s3', key: 'AWS_ACCESS_KEY_ID' } },
      },
      {
        name: 'AWS_SECRET_ACCESS_KEY',
        valueFrom: { secretKeyRef: { name: 'images-s3', key: 'AWS_SECRET_ACCESS_KEY' } },
      },
      {
        name: 'AWS_SESSION_TOKEN',
        valueFrom: {
          secretKeyRef: { name: 'images-s3', key: 'AWS_SESSION_TOKEN', optional: true },
        },
      },
    ]);
    // The signing keys come from the keys Secret; there is no data volume to keep them on.
    expect(container?.volumeMounts.map((mount) => mount.name)).toEqual([
      'config',
      'keys',
      'admin',
      'tls',
      'tmp',
    ]);
    expect(spec.template.spec.volumes.find((volume) => volume.name === 'keys')?.secret).toEqual(
      expect.objectContaining({ secretName: 'berth-shared-keys' }),
    );
    expect(await exists('persistentvolumeclaim', 'berth-shared-data')).toBe(false);

    const budget = await harness.getJson<{ spec: Record<string, unknown> }>([
      'get',
      'poddisruptionbudget',
      'berth-shared',
      '-n',
      namespace,
    ]);
    expect(budget.spec).toMatchObject({
      maxUnavailable: 1,
      selector: { matchLabels: podLabels },
      unhealthyPodEvictionPolicy: 'AlwaysAllow',
    });
    const service = await harness.getJson<{ spec: { sessionAffinity: string } }>([
      'get',
      'service',
      'berth-shared',
      '-n',
      namespace,
    ]);
    expect(service.spec.sessionAffinity).toBe('None');

    const config = await harness.getJson<{ data: Record<string, string> }>([
      'get',
      'configmap',
      'berth-shared-config',
      '-n',
      namespace,
    ]);
    const text = config.data['registry.yaml'] ?? '';
    expect(text).toContain('bucket: images');
    expect(text).toContain('signingKeyFile: /etc/berth/keys/signing-keys.json');
    expect(text).not.toContain('access');
    expect(text).not.toContain('AWS');
  });

  it('puts a deleted disruption budget back', async () => {
    await harness.cluster.kubectl([
      'delete',
      'poddisruptionbudget',
      'berth-shared',
      '-n',
      namespace,
    ]);
    await waitFor(
      () => exists('poddisruptionbudget', 'berth-shared'),
      30_000,
      `the disruption budget restored (operator: ${output()})`,
    );
  });

  it('renders a Registry on a volume as before: one pod recreated on its claim, no budget, no spread', async () => {
    await harness.apply(registry('volume', { storage: { filesystem: { size: '1Gi' } } }));
    await waitFor(
      () => exists('deployment', 'berth-volume'),
      30_000,
      `the Deployment (operator: ${output()})`,
    );
    const { spec } = await deployment('berth-volume');
    expect(spec.replicas).toBe(1);
    expect(spec.strategy).toEqual({ type: 'Recreate' });
    expect(spec.template.spec.topologySpreadConstraints).toBeUndefined();
    expect(spec.template.spec.containers[0]?.env).toBeUndefined();
    expect(spec.template.spec.containers[0]?.volumeMounts).toContainEqual({
      name: 'data',
      mountPath: '/var/lib/berth',
    });
    expect(await exists('persistentvolumeclaim', 'berth-volume-data')).toBe(true);
    expect(await exists('poddisruptionbudget', 'berth-volume')).toBe(false);
  });
});
