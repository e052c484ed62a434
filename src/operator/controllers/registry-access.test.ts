import { FakeApi, FakeGrants } from '../../../test/support/fake-cluster.ts';
import { registrySpecSchema } from '../api/registry.ts';
import { RegistryAccessController } from './registry-access.ts';

describe('RegistryAccessController', () => {
  it("applies one binding naming every Registry's ServiceAccount, when the set changes", async () => {
    const api = new FakeApi();
    const grants = new FakeGrants();
    grants.registries = new Map(
      ['b', 'a'].map((namespace) => [
        `${namespace}/main`,
        {
          metadata: { name: 'main', namespace, uid: namespace },
          spec: registrySpecSchema.parse({}),
        },
      ]),
    );
    const controller = new RegistryAccessController(api, grants);
    const keys: unknown[] = [];
    for (const source of controller.watches) source.subscribe((queued) => keys.push(queued));
    grants.announce({ registryAccess: false });
    grants.announce({ registryAccess: true });
    expect(keys).toEqual([{ kind: 'RegistryAccess' }]);

    await controller.reconcile();
    expect(api.writes.map((call) => call.path)).toEqual([
      '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/berth-registries',
      '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/berth-registry-token-review',
      '/apis/rbac.authorization.k8s.io/v1/clusterroles/berth-node-token-audiences',
    ]);
    const binding = api.writes[0]?.body as { subjects: { namespace: string }[] };
    expect(binding.subjects.map((subject) => subject.namespace)).toEqual(['a', 'b']);
    // Mode Secrets: no token reviews, no audience for the nodes.
    expect(api.writes[1]?.body).toMatchObject({ subjects: [] });
    expect(api.writes[2]?.body).toMatchObject({ rules: [] });
  });

  it('lets the accounts of token-taking Registries review tokens, and nodes request their audiences', async () => {
    const api = new FakeApi();
    const grants = new FakeGrants();
    const registry = (namespace: string, pullSecrets: object) => ({
      metadata: { name: 'main', namespace, uid: namespace },
      spec: registrySpecSchema.parse({ pullSecrets }),
    });
    grants.registries = new Map([
      ['a/main', registry('a', { mode: 'CredentialProvider' })],
      ['b/main', registry('b', { mode: 'Both', audience: 'registry.example' })],
      ['c/main', registry('c', {})],
    ]);
    await new RegistryAccessController(api, grants).reconcile();
    expect(api.writes[1]?.body).toMatchObject({
      roleRef: { kind: 'ClusterRole', name: 'berth-registry-token-review' },
      subjects: [
        { kind: 'ServiceAccount', name: 'berth-main', namespace: 'a' },
        { kind: 'ServiceAccount', name: 'berth-main', namespace: 'b' },
      ],
    });
    expect(api.writes[2]?.body).toMatchObject({
      rules: [
        {
          apiGroups: [''],
          resources: ['berth.dev/a/main', 'registry.example'],
          verbs: ['request-serviceaccounts-token-audience'],
        },
      ],
    });
  });
});
