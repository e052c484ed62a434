import {
  FakeApi,
  FakeCache,
  FakeEvents,
  FakeGrants,
  silentLogger,
} from '../../../test/support/fake-cluster.ts';
import type { RegistryObject } from '../api/registry-resource.ts';
import type { RepositoryState } from '../grants.ts';
import { RepositoryController, type RepositoryObject } from './repository.ts';

const state: RepositoryState = {
  ready: true,
  reason: 'PullSecretsIssued',
  message: 'pull secrets issued to 1 namespace',
  url: 'localhost:5050/team-a/web',
  pullNamespaces: 1,
  pullNamespaceNames: ['team-a'],
  registries: [{ namespace: 'berth-system', name: 'main', url: 'localhost:5050/team-a/web' }],
};

function setup() {
  const api = new FakeApi();
  const events = new FakeEvents();
  const grants = new FakeGrants();
  grants.table = { secrets: new Map(), repositories: new Map([['team-a/web', state]]) };
  const repositories = new FakeCache<RepositoryObject>([
    { metadata: { name: 'web', namespace: 'team-a', generation: 1 }, spec: {} },
  ]);
  const registries = new FakeCache<RegistryObject>([
    {
      metadata: { name: 'main', namespace: 'berth-system' },
      status: { readyReplicas: 1 },
    },
  ]);
  const controller = new RepositoryController(
    api,
    { repositories, registries, grants },
    events,
    silentLogger,
  );
  return { api, events, grants, repositories, registries, controller };
}

const key = { kind: 'Repository', namespace: 'team-a', name: 'web' } as const;

describe('RepositoryController', () => {
  it('writes Ready status and announces it, then writes nothing while nothing changes', async () => {
    const { api, events, repositories, controller } = setup();
    await controller.reconcile(key, new Date('2025-01-01T00:00:00Z'));
    expect(api.writes.map((call) => call.path)).toEqual([
      '/apis/berth.dev/v1alpha1/namespaces/team-a/repositories/web/status',
    ]);
    expect(events.recorded.map((event) => event.reason)).toEqual(['PullSecretsIssued']);
    const written = api.writes[0]?.body as RepositoryObject;
    repositories.put({
      ...(repositories.get('team-a/web') as RepositoryObject),
      status: written.status,
    });

    // An hour later: the same state renders the same status, with the stored transition times.
    await controller.reconcile(key, new Date('2025-01-01T01:00:00Z'));
    expect(api.writes).toHaveLength(1);
    expect(events.recorded).toHaveLength(1);
  });

  it("leaves the registry's status.usage alone: neither rewritten nor a reason to write", async () => {
    const { api, repositories, controller } = setup();
    await controller.reconcile(key, new Date('2025-01-01T00:00:00Z'));
    const written = api.writes[0]?.body as RepositoryObject;
    expect(written.status?.usage).toBeUndefined();
    const usage = [{ registry: 'berth-system/main', bytes: 2048, size: '2Ki' }];
    repositories.put({
      ...(repositories.get('team-a/web') as RepositoryObject),
      status: { ...written.status, usage },
    });
    await controller.reconcile(key, new Date('2025-01-01T01:00:00Z'));
    expect(api.writes).toHaveLength(1);
  });

  it('says RegistryUnavailable while no Registry serving it has a ready pod', async () => {
    const { api, registries, controller } = setup();
    registries.put({ metadata: { name: 'main', namespace: 'berth-system' }, status: {} });
    await controller.reconcile(key);
    const status = (api.writes[0]?.body as RepositoryObject).status;
    expect(status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('RegistryUnavailable');
  });

  it('maps a Registry change to the Repositories it serves, and grant changes to theirs', () => {
    const { grants, registries, controller } = setup();
    const keys: unknown[] = [];
    for (const source of controller.watches) source.subscribe((queued) => keys.push(queued));
    registries.put({ metadata: { name: 'main', namespace: 'berth-system' } });
    registries.put({ metadata: { name: 'other', namespace: 'berth-system' } });
    grants.announce({ repositories: new Set(['team-b/api']) });
    expect(keys).toEqual([key, { kind: 'Repository', namespace: 'team-b', name: 'api' }]);
  });
});
