import { controlPlaneToolNames } from '../support/control-plane.ts';
import { startOperatorHarness, type OperatorHarness } from '../support/operator-harness.ts';
import type { Daemon } from '../support/processes.ts';
import { waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const settleFor = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis));
const secretName = 'berth-pull.berth-system.main';
const audience = 'berth.dev/berth-system/main';

interface ServiceAccount {
  imagePullSecrets?: { name: string }[];
}

/**
 * spec.pullSecrets.mode on a real API server: CredentialProvider writes no pull Secret and no
 * ServiceAccount entry, has the registry take ServiceAccount tokens of its audience, and grants
 * the RBAC for both sides; switching back and forth removes and restores Berth's objects only.
 */
describeWithTools(controlPlaneToolNames, 'pull secret modes on a real API server', () => {
  let harness: OperatorHarness;
  let operator: Daemon | undefined;

  beforeAll(async () => {
    harness = await startOperatorHarness('credential-provider', ['team-a', 'team-b']);
    for (const namespace of ['team-a', 'team-b'])
      await harness.cluster.kubectl(['create', 'serviceaccount', 'builder', '-n', namespace]);
    // Someone else's entry, which Berth must keep whatever the mode.
    await harness.cluster.kubectl([
      'patch',
      'serviceaccount',
      'builder',
      '-n',
      'team-b',
      '--type=merge',
      '-p',
      JSON.stringify({ imagePullSecrets: [{ name: 'theirs' }] }),
    ]);
    operator = harness.startOperator(['--no-leader-elect']);
  });

  afterAll(async () => {
    await operator?.stop();
    await harness?.stop();
  });

  const applyRegistry = (pullSecrets: Record<string, unknown>) =>
    harness.apply({
      apiVersion: 'berth.dev/v1alpha1',
      kind: 'Registry',
      metadata: { name: 'main', namespace: 'berth-system' },
      spec: { pullSecrets },
    });

  const secretsExist = async (): Promise<boolean[]> =>
    Promise.all(
      ['team-a', 'team-b'].map(
        async (namespace) =>
          (
            await harness.cluster.kubectl(['get', 'secret', secretName, '-n', namespace], {
              allowFailure: true,
            })
          ).code === 0,
      ),
    );

  const entries = async (namespace: string): Promise<string[]> =>
    (
      (await harness.getJson<ServiceAccount>(['get', 'serviceaccount', 'builder', '-n', namespace]))
        .imagePullSecrets ?? []
    ).map((entry) => entry.name);

  const registryConfig = async (): Promise<string> =>
    (
      await harness.getJson<{ data: Record<string, string> }>([
        'get',
        'configmap',
        'berth-main-config',
        '-n',
        'berth-system',
      ])
    ).data['registry.yaml'] ?? '';

  const tokenReviewers = async (): Promise<string[]> =>
    (
      (
        await harness.getJson<{ subjects?: { namespace: string; name: string }[] }>([
          'get',
          'clusterrolebinding',
          'berth-registry-token-review',
        ])
      ).subjects ?? []
    ).map((subject) => `${subject.namespace}/${subject.name}`);

  const nodeAudiences = async (): Promise<string[]> =>
    (
      (
        await harness.getJson<{ rules?: { resources?: string[] }[] }>([
          'get',
          'clusterrole',
          'berth-node-token-audiences',
        ])
      ).rules ?? []
    ).flatMap((rule) => rule.resources ?? []);

  /** The config hash the registry Deployment's pod template carries. */
  const templateHash = async (): Promise<string> =>
    (
      await harness.getJson<{
        spec: { template: { metadata: { annotations?: Record<string, string> } } };
      }>(['get', 'deployment', 'berth-main', '-n', 'berth-system'])
    ).spec.template.metadata.annotations?.['berth.dev/config-sha256'] ?? '';

  /**
   * Applies the Registry and waits until the operator has written the Deployment's new pod
   * template: from then on, until the test marks the rollout done, old pods "run".
   */
  const switchMode = async (pullSecrets: Record<string, unknown>, log: () => string) => {
    const before = await templateHash();
    await applyRegistry(pullSecrets);
    await waitFor(
      async () => (await templateHash()) !== before,
      30_000,
      `a new registry pod template for ${JSON.stringify(pullSecrets)} ${log()}`,
    );
  };

  /** What the API server's authorizer answers a kubelet asking for a token of `wanted`. */
  const nodeMayRequest = async (wanted: string): Promise<boolean> => {
    const review = await harness.cluster.kubectl(['create', '-o', 'json', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: {
          user: 'system:node:node-1',
          groups: ['system:nodes', 'system:authenticated'],
          resourceAttributes: {
            verb: 'request-serviceaccounts-token-audience',
            group: '',
            resource: wanted,
            namespace: 'team-b',
            name: 'builder',
          },
        },
      }),
    });
    return (JSON.parse(review.stdout) as { status: { allowed?: boolean } }).status.allowed === true;
  };

  it('removes Secrets and entries in CredentialProvider mode once its pods rolled out, grants the token RBAC, and restores them in Both and Secrets', async () => {
    const log = () => `(operator: ${operator?.output ?? ''})`;
    await harness.apply({
      apiVersion: 'berth.dev/v1alpha1',
      kind: 'Repository',
      metadata: { name: 'web', namespace: 'team-a' },
      spec: {
        registry: { name: 'main', namespace: 'berth-system' },
        pull: { namespaces: ['team-b'] },
      },
    });
    await applyRegistry({});
    await waitFor(
      async () =>
        (await secretsExist()).every(Boolean) && (await entries('team-b')).includes(secretName),
      60_000,
      `pull Secrets in mode Secrets ${log()}`,
    );
    expect(await registryConfig()).not.toContain('serviceAccountTokens');
    expect(await nodeAudiences()).toEqual([]);
    expect(await tokenReviewers()).toEqual([]);
    // No kubelet here: the test plays the Deployment controller, one pod running the template.
    await harness.markRegistryPodsReady('berth-system', 'main');

    // The pod of the Secrets template still takes only pull Secrets; the new pods take tokens.
    await switchMode({ mode: 'CredentialProvider' }, log);
    await waitFor(
      async () => (await tokenReviewers()).includes('berth-system/berth-main'),
      30_000,
      `the token review for the new pods ${log()}`,
    );
    // Time for any revocation the switch would have started to land.
    await settleFor(2000);
    expect(await secretsExist()).toEqual([true, true]);
    expect(await entries('team-b')).toContain(secretName);
    // The rollout finishes: no pod takes only Secrets any more.
    await harness.markRegistryPodsReady('berth-system', 'main');
    await waitFor(
      async () =>
        (await secretsExist()).every((exists) => !exists) &&
        !(await entries('team-a')).includes(secretName) &&
        !(await entries('team-b')).includes(secretName),
      30_000,
      `no pull Secret nor entry in mode CredentialProvider ${log()}`,
    );
    expect(await entries('team-b')).toEqual(['theirs']);
    await waitFor(
      async () => (await registryConfig()).includes(audience),
      30_000,
      `the registry configured for ServiceAccount tokens ${log()}`,
    );
    expect(await registryConfig()).toMatch(
      /serviceAccountTokens:\n\s+audience: berth\.dev\/berth-system\/main/,
    );
    await waitFor(
      async () => (await nodeAudiences()).includes(audience),
      30_000,
      `the nodes' audience role ${log()}`,
    );
    expect(await tokenReviewers()).toEqual(['berth-system/berth-main']);
    // The authorizer's cache may lag the role by a moment.
    await waitFor(() => nodeMayRequest(audience), 30_000, 'nodes may request the audience');
    expect(await nodeMayRequest('https://other.example')).toBe(false);
    await waitFor(
      async () =>
        (await harness.condition('repository', 'web', 'team-a', 'Ready'))?.reason ===
        'ServiceAccountTokens',
      30_000,
      `the Repository reports ServiceAccountTokens ${log()}`,
    );

    await switchMode({ mode: 'Both', audience: 'registry.example' }, log);
    // Old pods take the old audience until they are gone.
    await waitFor(
      async () =>
        (await secretsExist()).every(Boolean) &&
        (await entries('team-b')).includes(secretName) &&
        (await nodeAudiences()).join() === `${audience},registry.example`,
      60_000,
      `pull Secrets and both audiences while mode Both rolls out ${log()}`,
    );
    await harness.markRegistryPodsReady('berth-system', 'main');
    await waitFor(
      async () => (await nodeAudiences()).join() === 'registry.example',
      30_000,
      `only the new audience once mode Both rolled out ${log()}`,
    );
    expect((await entries('team-b')).sort()).toEqual([secretName, 'theirs'].sort());
    expect(await tokenReviewers()).toEqual(['berth-system/berth-main']);
    await waitFor(
      async () => (await registryConfig()).includes('audience: registry.example'),
      30_000,
      `the registry takes the new audience ${log()}`,
    );

    await switchMode({ mode: 'Secrets' }, log);
    // The operator has seen the switch (the config) while the old pods still take tokens.
    await waitFor(
      async () => !(await registryConfig()).includes('serviceAccountTokens'),
      30_000,
      `the registry configured without tokens ${log()}`,
    );
    await settleFor(2000);
    expect(await tokenReviewers()).toEqual(['berth-system/berth-main']);
    expect(await nodeAudiences()).toEqual(['registry.example']);
    await harness.markRegistryPodsReady('berth-system', 'main');
    await waitFor(
      async () => (await nodeAudiences()).length === 0 && (await tokenReviewers()).length === 0,
      30_000,
      `no token RBAC in mode Secrets ${log()}`,
    );
    expect(await secretsExist()).toEqual([true, true]);
  });

  it('refuses an audience it would not use, and the API server audience', async () => {
    for (const pullSecrets of [
      { audience: 'registry.example' },
      { mode: 'CredentialProvider', audience: 'https://kubernetes.default.svc.cluster.local' },
    ]) {
      const result = await harness.cluster.kubectl(['apply', '-f', '-'], {
        allowFailure: true,
        input: JSON.stringify({
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Registry',
          metadata: { name: 'refused', namespace: 'berth-system' },
          spec: { pullSecrets },
        }),
      });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toContain('pullSecrets.audience');
    }
  });
});
