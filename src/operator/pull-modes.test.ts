import { createHash } from 'node:crypto';
import { registrySpecSchema } from './api/registry.ts';
import type { RegistryResource } from './api/registry-resource.ts';
import { effectivePullModes, olderPodsMayRun, type RolloutDeployment } from './pull-modes.ts';
import { renderRegistryConfig } from './render/registry.ts';

function registry(pullSecrets: object): RegistryResource {
  return {
    metadata: { name: 'main', namespace: 'berth-system', uid: 'uid-main' },
    spec: registrySpecSchema.parse({ pullSecrets }),
  };
}

/** The registry Deployment with the template of `of`, and its rollout status. */
function deployment(
  of: RegistryResource,
  status: RolloutDeployment['status'],
  generation = 2,
): RolloutDeployment {
  const hash = createHash('sha256').update(renderRegistryConfig(of)).digest('hex');
  return {
    metadata: { name: 'berth-main', namespace: 'berth-system', generation },
    spec: {
      replicas: 2,
      template: { metadata: { annotations: { 'berth.dev/config-sha256': hash } } },
    },
    status,
  };
}

const done = { observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 2 };
const secrets = registry({});
const provider = registry({ mode: 'CredentialProvider' });

describe('pull modes', () => {
  it('count older pods until every pod runs the template of the rendered config', () => {
    expect(olderPodsMayRun(provider, deployment(provider, done))).toBe(false);
    // The registry controller has not yet written the new template.
    expect(olderPodsMayRun(provider, deployment(secrets, done))).toBe(true);
    // Not yet seen by the Deployment controller.
    expect(
      olderPodsMayRun(provider, deployment(provider, { ...done, observedGeneration: 1 })),
    ).toBe(true);
    // A pod of the old ReplicaSet still runs (surge, or not yet replaced).
    expect(olderPodsMayRun(provider, deployment(provider, { ...done, replicas: 3 }))).toBe(true);
    expect(olderPodsMayRun(provider, deployment(provider, { ...done, updatedReplicas: 1 }))).toBe(
      true,
    );
    // A new pod not available yet, no old one left: nothing older runs.
    expect(olderPodsMayRun(provider, deployment(provider, { ...done, availableReplicas: 1 }))).toBe(
      false,
    );
    // No Deployment, or one with no pod (just created, scaled to zero): nothing older runs.
    expect(olderPodsMayRun(provider, undefined)).toBe(false);
    expect(olderPodsMayRun(provider, deployment(secrets, {}))).toBe(false);
  });

  it('write for the old and the new mode while a change rolls out, then for the new only', () => {
    const before = effectivePullModes(secrets, deployment(secrets, done), undefined);
    expect(before).toMatchObject({ secrets: true, tokens: false, settled: true, audiences: [] });

    const rolling = effectivePullModes(provider, deployment(secrets, done), before.running);
    expect(rolling).toMatchObject({
      secrets: true,
      tokens: true,
      settled: false,
      audiences: ['berth.dev/berth-system/main'],
    });
    const after = effectivePullModes(provider, deployment(provider, done), rolling.running);
    expect(after).toMatchObject({ secrets: false, tokens: true, settled: true });

    // And back: the token audience of the old pods stays until none runs.
    const custom = registry({ mode: 'CredentialProvider', audience: 'registry.example' });
    const settled = effectivePullModes(custom, deployment(custom, done), after.running);
    const back = effectivePullModes(secrets, deployment(custom, done), settled.running);
    expect(back).toMatchObject({ secrets: true, tokens: true, audiences: ['registry.example'] });
    expect(effectivePullModes(secrets, deployment(secrets, done), back.running)).toMatchObject({
      secrets: true,
      tokens: false,
      audiences: [],
    });
  });

  it('keep every mode a pod may run when changed twice within one rollout', () => {
    const first = effectivePullModes(secrets, deployment(secrets, done), undefined);
    const second = effectivePullModes(provider, deployment(secrets, done), first.running);
    const third = effectivePullModes(
      registry({ mode: 'Secrets' }),
      deployment(provider, { ...done, updatedReplicas: 1 }),
      second.running,
    );
    // Pods of the CredentialProvider template may have started: their token review stays.
    expect(third).toMatchObject({ secrets: true, tokens: true, settled: false });
  });

  it('assume any mode in a rollout begun before the operator started', () => {
    expect(effectivePullModes(provider, deployment(secrets, done), undefined)).toMatchObject({
      secrets: true,
      tokens: true,
    });
    expect(effectivePullModes(secrets, deployment(provider, done), undefined)).toMatchObject({
      secrets: true,
      tokens: true,
      audiences: ['berth.dev/berth-system/main'],
    });
  });
});
