import { controlPlaneToolNames } from '../support/control-plane.ts';
import { startOperatorHarness, type OperatorHarness } from '../support/operator-harness.ts';
import type { Daemon } from '../support/processes.ts';
import { waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

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

  it('removes Secrets and entries in CredentialProvider mode, grants the token RBAC, and restores them in Both and Secrets', async () => {
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

    await applyRegistry({ mode: 'CredentialProvider' });
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
    // Ready needs a ready registry pod, which nothing runs here.
    await harness.markRegistryPodsReady('berth-system', 'main');
    await waitFor(
      async () =>
        (await harness.condition('repository', 'web', 'team-a', 'Ready'))?.reason ===
        'ServiceAccountTokens',
      30_000,
      `the Repository reports ServiceAccountTokens ${log()}`,
    );

    await applyRegistry({ mode: 'Both', audience: 'registry.example' });
    await waitFor(
      async () =>
        (await secretsExist()).every(Boolean) &&
        (await entries('team-b')).includes(secretName) &&
        (await nodeAudiences()).join() === 'registry.example',
      60_000,
      `pull Secrets and the audience role in mode Both ${log()}`,
    );
    expect((await entries('team-b')).sort()).toEqual([secretName, 'theirs'].sort());
    expect(await tokenReviewers()).toEqual(['berth-system/berth-main']);
    await waitFor(
      async () => (await registryConfig()).includes('audience: registry.example'),
      30_000,
      `the registry takes the new audience ${log()}`,
    );

    await applyRegistry({ mode: 'Secrets' });
    await waitFor(
      async () => (await nodeAudiences()).length === 0 && (await tokenReviewers()).length === 0,
      30_000,
      `no token RBAC in mode Secrets ${log()}`,
    );
    expect(await secretsExist()).toEqual([true, true]);
    await waitFor(
      async () => !(await registryConfig()).includes('serviceAccountTokens'),
      30_000,
      `the registry takes no tokens in mode Secrets ${log()}`,
    );
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
