import { FakeApi } from '../../test/support/fake-cluster.ts';
import { writeStatus } from './status-writer.ts';

const stored = {
  observedGeneration: 2,
  conditions: [
    {
      type: 'Ready',
      status: 'True' as const,
      reason: 'Available',
      message: 'serving',
      lastTransitionTime: '2025-01-01T00:00:00Z',
    },
  ],
  endpoint: 'berth-main.berth-system.svc:5000',
};

describe('writeStatus', () => {
  it('writes nothing when the status says the same, whatever its key order', async () => {
    const api = new FakeApi();
    const object = {
      kind: 'Registry' as const,
      metadata: { name: 'main', namespace: 'b' },
      status: stored,
    };
    // Keys in another order, and an absent field spelled `undefined`: the same content.
    const same = {
      endpoint: stored.endpoint,
      replicas: undefined,
      conditions: [
        {
          lastTransitionTime: '2025-01-01T00:00:00Z',
          message: 'serving',
          reason: 'Available',
          status: 'True' as const,
          type: 'Ready',
        },
      ],
      observedGeneration: 2,
    };
    expect(await writeStatus(api, object, same)).toBe(false);
    expect(api.writes).toEqual([]);
  });

  it('applies a changed status to the status subresource', async () => {
    const api = new FakeApi();
    const object = {
      kind: 'Repository' as const,
      metadata: { name: 'web', namespace: 'team-a' },
      status: stored,
    };
    expect(await writeStatus(api, object, { ...stored, observedGeneration: 3 })).toBe(true);
    expect(api.writes.map((call) => call.path)).toEqual([
      '/apis/berth.dev/v1alpha1/namespaces/team-a/repositories/web/status',
    ]);
  });
});
