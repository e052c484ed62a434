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
    ]);
    const binding = api.writes[0]?.body as { subjects: { namespace: string }[] };
    expect(binding.subjects.map((subject) => subject.namespace)).toEqual(['a', 'b']);
  });
});
