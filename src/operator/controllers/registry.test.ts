import {
  FakeApi,
  FakeCache,
  FakeEvents,
  FakeGrants,
  silentLogger,
} from '../../../test/support/fake-cluster.ts';
import type { KubeObject } from '../../kube/client.ts';
import type { RegistryObject } from '../api/registry-resource.ts';
import type { DaemonSetObject, DeploymentObject, SecretObject } from '../kube-objects.ts';
import { X509Certificate } from 'node:crypto';
import { planCertificates } from '../../tls/renewal.ts';
import { RegistryController } from './registry.ts';

const key = { kind: 'Registry', namespace: 'berth-system', name: 'main' } as const;
const statusPath = '/apis/berth.dev/v1alpha1/namespaces/berth-system/registries/main/status';

function setup(spec: unknown = {}) {
  const api = new FakeApi();
  const events = new FakeEvents();
  const registries = new FakeCache<RegistryObject>([
    { metadata: { name: 'main', namespace: 'berth-system', uid: 'uid-main', generation: 1 }, spec },
  ]);
  const deployments = new FakeCache<DeploymentObject>();
  const owned = new FakeCache<KubeObject>();
  const controller = new RegistryController(
    api,
    {
      registries,
      deployments,
      daemonSets: new FakeCache<DaemonSetObject>(),
      secrets: new FakeCache<SecretObject>(),
      owned: [owned],
      grants: new FakeGrants(),
    },
    events,
    { image: 'berth:test' },
    silentLogger,
  );
  return { api, events, registries, deployments, owned, controller };
}

describe('RegistryController', () => {
  it('applies what a Registry needs and its status, then only re-applies while nothing changed', async () => {
    const { api, registries, controller } = setup();
    await controller.reconcile(key);
    const applied = api.writes.filter((call) => call.verb === 'apply').map((call) => call.path);
    expect(applied).toEqual(
      expect.arrayContaining([
        '/apis/apps/v1/namespaces/berth-system/deployments/berth-main',
        '/api/v1/namespaces/berth-system/services/berth-main',
        statusPath,
      ]),
    );
    const status = (api.objects.get(statusPath) as RegistryObject).status;
    expect(status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('False');

    // The API server stores the status; the next reconcile renders the same and writes no status.
    registries.put({ ...(registries.get('berth-system/main') as RegistryObject), status });
    const before = api.writes.length;
    await controller.reconcile(key);
    expect(api.writes.slice(before).map((call) => call.path)).not.toContain(statusPath);
  });

  it('keeps the generated keys once they exist', async () => {
    const { api, controller } = setup();
    await controller.reconcile(key);
    const keysPath = '/api/v1/namespaces/berth-system/secrets/berth-main-keys';
    const first = api.objects.get(keysPath) as SecretObject & { stringData?: unknown };
    await controller.reconcile(key);
    expect(api.objects.get(keysPath)).toEqual(first);
  });

  it('reports a spec the schema refuses as InvalidSpec and applies nothing else', async () => {
    const { api, controller } = setup({ replicas: 'many' });
    expect(await controller.reconcile(key)).toEqual({});
    expect(api.writes.map((call) => call.path)).toEqual([statusPath]);
    const status = (api.objects.get(statusPath) as RegistryObject).status;
    expect(status?.conditions?.[0]?.reason).toBe('InvalidSpec');
  });

  it('maps a change to an object it rendered to its owner', () => {
    const { owned, controller } = setup();
    const keys: unknown[] = [];
    for (const source of controller.watches) source.subscribe((queued) => keys.push(queued));
    owned.put({
      metadata: {
        name: 'berth-main',
        namespace: 'berth-system',
        labels: { 'app.kubernetes.io/instance': 'main' },
      },
    });
    owned.put({ metadata: { name: 'unlabelled', namespace: 'berth-system' } });
    expect(keys).toEqual([key]);
    expect([...controller.keys()]).toEqual([key]);
  });

  describe('certificates', () => {
    const caPath = '/api/v1/namespaces/berth-system/secrets/berth-main-ca';
    const tlsPath = '/api/v1/namespaces/berth-system/secrets/berth-main-tls';
    const decoded = (api: FakeApi, path: string, key: string) =>
      Buffer.from((api.objects.get(path) as SecretObject).data?.[key] ?? '', 'base64').toString();

    it('issues the serving certificate for tls.certificateLifetime and comes back at two thirds', async () => {
      const { api, controller } = setup({ tls: { certificateLifetime: '10m' } });
      const result = await controller.reconcile(key);
      const certificate = new X509Certificate(decoded(api, tlsPath, 'tls.crt'));
      const issuedAt = certificate.validFromDate.getTime() + 60_000;
      expect(certificate.validToDate.getTime() - issuedAt).toBe(600_000);
      // Due at 6m40s after issue; the reconcile took a moment of that.
      expect(result.requeueAfterMillis).toBeLessThanOrEqual(400_000);
      expect(result.requeueAfterMillis).toBeGreaterThan(390_000);
      expect(decoded(api, tlsPath, 'ca.crt')).toBe(decoded(api, caPath, 'ca.crt'));
    });

    it('renews a serving certificate past two thirds of its lifetime, keeping the CA', async () => {
      const { api, events, controller } = setup({ tls: { certificateLifetime: '10m' } });
      const names = ['berth-main', 'berth-main.berth-system', 'berth-main.berth-system.svc'];
      const old = planCertificates(
        {},
        {
          caName: 'old CA',
          commonName: 'berth-main.berth-system',
          names: [...names, 'berth-main.berth-system.svc.cluster.local', 'localhost', '127.0.0.1'],
          lifetimeMillis: 600_000,
        },
        new Date(Date.now() - 7 * 60_000),
      );
      const secret = (name: string, data: Record<string, string>) => ({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name, namespace: 'berth-system' },
        data: Object.fromEntries(
          Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
        ),
      });
      api.objects.set(
        caPath,
        secret('berth-main-ca', {
          'ca.crt': old.ca.certificatePem,
          'ca.key': old.ca.privateKeyPem,
        }),
      );
      api.objects.set(
        tlsPath,
        secret('berth-main-tls', {
          'tls.crt': old.serving.certificatePem,
          'tls.key': old.serving.privateKeyPem,
          'ca.crt': old.ca.certificatePem,
        }),
      );
      const result = await controller.reconcile(key);
      const renewed = decoded(api, tlsPath, 'tls.crt');
      expect(renewed).not.toBe(old.serving.certificatePem);
      expect(decoded(api, caPath, 'ca.crt')).toBe(old.ca.certificatePem);
      expect(
        new X509Certificate(renewed).checkIssued(new X509Certificate(old.ca.certificatePem)),
      ).toBe(true);
      expect(events.recorded.map((event) => event.reason)).toContain('CertificateRenewed');
      expect(result.requeueAfterMillis).toBeGreaterThan(390_000);

      // Nothing due: nothing renewed, no second Event.
      const before = events.recorded.length;
      await controller.reconcile(key);
      expect(decoded(api, tlsPath, 'tls.crt')).toBe(renewed);
      expect(events.recorded.slice(before).map((event) => event.reason)).not.toContain(
        'CertificateRenewed',
      );
    });
  });
});
