import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import {
  controlPlaneToolNames,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { describeWithTools } from '../support/tools.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

const registry = (name: string, tls: Record<string, unknown>) =>
  stringify({
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Registry',
    metadata: { name, namespace: 'default' },
    spec: { tls },
  });

/** spec.tls.certificateLifetime on a real kube-apiserver: its bounds and what it cannot go with. */
describeWithTools(controlPlaneToolNames, 'tls.certificateLifetime on a real API server', () => {
  let cluster: ControlPlane;

  beforeAll(async () => {
    cluster = await startControlPlane();
    await cluster.kubectl(['apply', '--server-side', '-k', `${root}/crds`]);
    await cluster.kubectl([
      'wait',
      '--for=condition=Established',
      'crd/registries.berth.dev',
      '--timeout=60s',
    ]);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it.each([
    ['the shortest', '5m'],
    ['90 days', '2160h'],
    ['a year', '8760h'],
  ])('accepts %s (%s)', async (_what, lifetime) => {
    const name = `ok-${lifetime.replace(/[^0-9a-z]/g, '')}`;
    await cluster.kubectl(['apply', '-f', '-'], {
      input: registry(name, { certificateLifetime: lifetime }),
    });
    const stored = JSON.parse(
      (await cluster.kubectl(['get', 'registry', name, '-n', 'default', '-o', 'json'])).stdout,
    ) as { spec: { tls: { certificateLifetime?: string } } };
    expect(stored.spec.tls.certificateLifetime).toBe(lifetime);
  });

  it.each([
    [
      'shorter than a kubelet takes to bring the renewal to the pods',
      { certificateLifetime: '4m' },
      'tls.certificateLifetime 4m is out of range: write from 5m to 8760h',
    ],
    [
      'longer than strict clients accept',
      { certificateLifetime: '9000h' },
      'tls.certificateLifetime 9000h is out of range: write from 5m to 8760h',
    ],
    [
      'not a duration',
      { certificateLifetime: '90 days' },
      'tls.certificateLifetime "90 days" is not a duration',
    ],
    [
      'with a certificateSecret, whose issuer decides',
      { certificateSecret: 'from-cert-manager', certificateLifetime: '2160h' },
      'tls.certificateLifetime applies to the certificate Berth makes, not to certificateSecret',
    ],
  ])('refuses a lifetime %s', async (_what, tls, message) => {
    const result = await cluster.kubectl(['apply', '-f', '-'], {
      input: registry('bad', tls),
      allowFailure: true,
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
  });
});
