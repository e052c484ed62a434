import {
  FakeApi,
  FakeCache,
  FakeGrants,
  silentLogger,
} from '../../../test/support/fake-cluster.ts';
import { generateKeyFile } from '../../credentials/keys.ts';
import type { KubeObject } from '../../kube/client.ts';
import { registrySpecSchema } from '../api/registry.ts';
import { CredentialSigner } from '../credentials.ts';
import type { SecretObject, ServiceAccountObject } from '../kube-objects.ts';
import { PullSecretController } from './pull-secrets.ts';

const key = { kind: 'Namespace', name: 'team-a' } as const;
const secretPath = '/api/v1/namespaces/team-a/secrets/berth-pull.berth-system.main';

async function setup() {
  const api = new FakeApi();
  const grants = new FakeGrants();
  grants.registries = new Map([
    [
      'berth-system/main',
      {
        metadata: { name: 'main', namespace: 'berth-system', uid: 'uid-main' },
        spec: registrySpecSchema.parse({}),
      },
    ],
  ]);
  grants.table = {
    secrets: new Map([['team-a', new Set(['berth-system/main'])]]),
    repositories: new Map(),
  };
  const keys = await generateKeyFile();
  const secrets = new FakeCache<SecretObject>();
  const serviceAccounts = new FakeCache<ServiceAccountObject>([
    { metadata: { name: 'default', namespace: 'team-a', resourceVersion: '7' } },
  ]);
  const controller = new PullSecretController(
    api,
    {
      namespaces: new FakeCache<KubeObject>([{ metadata: { name: 'team-a' } }]),
      secrets,
      serviceAccounts,
      grants,
    },
    new CredentialSigner(() => keys),
    silentLogger,
  );
  return { api, grants, secrets, controller };
}

describe('PullSecretController', () => {
  it('issues the pull Secret of a granted Registry and names it in the ServiceAccounts', async () => {
    const { api, controller } = await setup();
    const now = new Date('2025-01-01T00:00:00Z');
    const result = await controller.reconcile(key, now);
    expect(api.writes.map((call) => [call.verb, call.path])).toEqual([
      ['apply', secretPath],
      ['mergePatch', '/api/v1/namespaces/team-a/serviceaccounts/default'],
    ]);
    expect(api.writes[1]?.body).toEqual({
      metadata: { resourceVersion: '7' },
      imagePullSecrets: [{ name: 'berth-pull.berth-system.main' }],
    });
    // Rotation at two thirds of the default lifetime.
    expect(result.requeueAfterMillis).toBeGreaterThan(0);
  });

  it('keeps a current pull Secret and revokes one whose grant ended', async () => {
    const { api, grants, secrets, controller } = await setup();
    await controller.reconcile(key);
    secrets.put(api.objects.get(secretPath) as SecretObject);
    const before = api.writes.length;
    await controller.reconcile(key);
    expect(api.writes.slice(before).map((call) => call.path)).not.toContain(secretPath);

    grants.table = { secrets: new Map(), repositories: new Map() };
    await controller.reconcile(key);
    expect(api.writes.filter((call) => call.verb === 'delete').map((call) => call.path)).toEqual([
      secretPath,
    ]);
  });

  it('maps a grant change, and a pull Secret edited by hand, to the namespace', async () => {
    const { grants, secrets, controller } = await setup();
    const keys: unknown[] = [];
    for (const source of controller.watches) source.subscribe((queued) => keys.push(queued));
    grants.announce({ namespaces: new Set(['team-b']) });
    secrets.put({
      metadata: {
        name: 'berth-pull.berth-system.main',
        namespace: 'team-a',
        labels: { 'app.kubernetes.io/component': 'pull-secret' },
      },
    });
    expect(keys).toEqual([{ kind: 'Namespace', name: 'team-b' }, key]);
  });
});
