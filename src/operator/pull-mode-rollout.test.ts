import { createHash } from 'node:crypto';
import { FakeApi, FakeCache, silentLogger } from '../../test/support/fake-cluster.ts';
import { generateKeyFile } from '../credentials/keys.ts';
import type { KubeObject } from '../kube/client.ts';
import { parseRegistry, type RegistryObject } from './api/registry-resource.ts';
import { PullSecretController } from './controllers/pull-secrets.ts';
import { RegistryAccessController } from './controllers/registry-access.ts';
import { CredentialSigner } from './credentials.ts';
import { GrantTracker, type GrantChange } from './grant-tracker.ts';
import type { DeploymentObject, SecretObject, ServiceAccountObject } from './kube-objects.ts';
import type { RolloutDeployment } from './pull-modes.ts';
import { renderRegistryConfig } from './render/registry.ts';

const namespaceKey = { kind: 'Namespace', name: 'team-a' } as const;
const secretPath = '/api/v1/namespaces/team-a/secrets/berth-pull.berth-system.main';
const accountPath = '/api/v1/namespaces/team-a/serviceaccounts/default';
const reviewPath =
  '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/berth-registry-token-review';

function registryObject(mode: string, generation: number): RegistryObject {
  return {
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Registry',
    metadata: { name: 'main', namespace: 'berth-system', uid: 'uid-main', generation },
    spec: { pullSecrets: { mode } },
  } as RegistryObject;
}

/** The registry Deployment as the Deployment controller reports it, with the template of `of`. */
function deployment(
  of: RegistryObject,
  generation: number,
  status: { updated: number; total: number; available: number },
): RolloutDeployment {
  const parsed = parseRegistry(of);
  if (!parsed.valid) throw new Error('invalid Registry');
  const hash = createHash('sha256').update(renderRegistryConfig(parsed.registry)).digest('hex');
  return {
    metadata: {
      name: 'berth-main',
      namespace: 'berth-system',
      generation,
      labels: { 'app.kubernetes.io/component': 'registry', 'app.kubernetes.io/instance': 'main' },
    },
    spec: {
      replicas: 2,
      template: { metadata: { annotations: { 'berth.dev/config-sha256': hash } } },
    },
    status: {
      observedGeneration: generation,
      updatedReplicas: status.updated,
      replicas: status.total,
      availableReplicas: status.available,
    },
  };
}

/**
 * The grant tracker over fake caches, and the two controllers that write for a pull mode, with
 * the caches kept as watches would keep them after each write.
 */
async function setup() {
  const api = new FakeApi();
  const registries = new FakeCache<RegistryObject>([registryObject('Secrets', 1)]);
  const repositories = new FakeCache<KubeObject>([
    {
      apiVersion: 'berth.dev/v1alpha1',
      kind: 'Repository',
      metadata: { name: 'web', namespace: 'team-a' },
      spec: { registry: { name: 'main', namespace: 'berth-system' } },
    } as KubeObject,
  ]);
  const namespaces = new FakeCache<KubeObject>([{ metadata: { name: 'team-a' } }]);
  const deployments = new FakeCache<DeploymentObject>([
    deployment(registryObject('Secrets', 1), 1, { updated: 2, total: 2, available: 2 }),
  ]);
  const secrets = new FakeCache<SecretObject>();
  const serviceAccounts = new FakeCache<ServiceAccountObject>([
    { metadata: { name: 'default', namespace: 'team-a', resourceVersion: '1' } },
  ]);
  const grants = new GrantTracker(registries, repositories, namespaces, silentLogger, deployments);
  const changes: GrantChange[] = [];
  grants.onChange((change) => changes.push(change));
  const keys = await generateKeyFile();
  const pullSecrets = new PullSecretController(
    api,
    { namespaces, secrets, serviceAccounts, grants },
    new CredentialSigner(() => keys),
    silentLogger,
  );
  const access = new RegistryAccessController(api, grants);
  let version = 1;
  /** Recomputes as the scheduled turn would, reconciles both controllers, refreshes caches. */
  const settle = async () => {
    grants.stop();
    grants.recompute();
    await pullSecrets.reconcile(namespaceKey);
    await access.reconcile();
    const secret = api.objects.get(secretPath);
    // A deleted one stays cached (the fake has no delete): its revocation is then repeated.
    if (secret) secrets.put(secret as SecretObject);
    const account = api.objects.get(accountPath) as ServiceAccountObject | undefined;
    if (account)
      serviceAccounts.put({
        ...account,
        metadata: { name: 'default', namespace: 'team-a', resourceVersion: String(++version) },
      });
  };
  const state = () => ({
    secret: api.objects.has(secretPath),
    entries: (api.objects.get(accountPath) as ServiceAccountObject | undefined)?.imagePullSecrets,
    reviewers: (api.objects.get(reviewPath) as { subjects?: unknown[] } | undefined)?.subjects,
  });
  return { registries, deployments, settle, state, changes };
}

const reviewer = { kind: 'ServiceAccount', name: 'berth-main', namespace: 'berth-system' };
const entry = { name: 'berth-pull.berth-system.main' };

describe('a change of pullSecrets.mode', () => {
  it('keeps pull Secrets until every registry pod takes tokens, then removes them', async () => {
    const { registries, deployments, settle, state, changes } = await setup();
    await settle();
    expect(state()).toEqual({ secret: true, entries: [entry], reviewers: [] });

    // Switched: the old pods still take only Berth credentials; the new ones review tokens.
    const provider = registryObject('CredentialProvider', 2);
    registries.put(provider);
    await settle();
    expect(state()).toEqual({ secret: true, entries: [entry], reviewers: [reviewer] });

    // New template written; one new pod up, one old pod still running.
    deployments.put(deployment(provider, 2, { updated: 1, total: 2, available: 2 }));
    await settle();
    expect(state()).toMatchObject({ secret: true, entries: [entry] });

    changes.length = 0;
    deployments.put(deployment(provider, 2, { updated: 2, total: 2, available: 2 }));
    await settle();
    // The rollout's end alone tells the namespace's controller to reconcile.
    expect(changes.some((change) => change.namespaces.has('team-a'))).toBe(true);
    expect(state()).toEqual({ secret: false, entries: [], reviewers: [reviewer] });
  });

  it('keeps the token review until no registry pod takes tokens', async () => {
    const { registries, deployments, settle, state, changes } = await setup();
    const provider = registryObject('CredentialProvider', 2);
    registries.put(provider);
    deployments.put(deployment(provider, 2, { updated: 2, total: 2, available: 2 }));
    await settle();
    expect(state()).toMatchObject({ secret: false, reviewers: [reviewer] });

    const back = registryObject('Secrets', 3);
    registries.put(back);
    await settle();
    // Secrets at once, for the new pods; the review for the old ones.
    expect(state()).toEqual({ secret: true, entries: [entry], reviewers: [reviewer] });

    deployments.put(deployment(back, 3, { updated: 2, total: 3, available: 3 }));
    await settle();
    expect(state()).toMatchObject({ reviewers: [reviewer] });

    changes.length = 0;
    deployments.put(deployment(back, 3, { updated: 2, total: 2, available: 2 }));
    await settle();
    expect(changes.some((change) => change.registryAccess)).toBe(true);
    expect(state()).toEqual({ secret: true, entries: [entry], reviewers: [] });
  });
});
