import { controlPlaneToolNames } from '../support/control-plane.ts';
import {
  startOperatorHarness,
  tableRows,
  type Condition,
  type OperatorHarness,
} from '../support/operator-harness.ts';
import { Daemon, freePort, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const registriesPath = '/apis/berth.dev/v1alpha1/registries';
const repositoriesPath = '/apis/berth.dev/v1alpha1/repositories';

function registry(namespace: string, name: string, spec: Record<string, unknown> = {}) {
  return {
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Registry',
    metadata: { name, namespace },
    spec: { nodeAccess: { mode: 'None' }, storage: { filesystem: { size: '1Gi' } }, ...spec },
  };
}

function repository(namespace: string, name: string, spec: Record<string, unknown>) {
  return {
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Repository',
    metadata: { name, namespace },
    spec,
  };
}

interface RepositoryStatus {
  url?: string;
  pullNamespaces?: number;
  pullNamespaceNames?: string[];
  conditions?: Condition[];
}

/**
 * What a user sees of the operator's state without `kubectl describe`, on a real API server:
 * the Table kubectl get prints, Repository conditions that follow their Registry, selectors that
 * say what they match, node ports changing hands, keys kept across a re-created Registry, and
 * the operator's metrics. Each `kubectl get` line a troubleshooting entry of the README quotes
 * is printed as it was seen.
 */
describeWithTools(controlPlaneToolNames, 'the operator explains its state', () => {
  let harness: OperatorHarness;
  let operator: Daemon;
  let metricsPort: number;

  const output = () => operator.output.slice(-3000);
  const repositoryStatus = async (namespace: string, name: string) =>
    (
      await harness.getJson<{ status?: RepositoryStatus }>([
        'get',
        'repository',
        name,
        '-n',
        namespace,
      ])
    ).status ?? {};
  const ready = (kind: string, name: string, namespace: string) =>
    harness.condition(kind, name, namespace, 'Ready');
  /** What a user runs, printed for the README's troubleshooting section. */
  const show = async (kind: string, name: string, namespace: string): Promise<string> => {
    const { stdout } = await harness.cluster.kubectl([
      'get',
      kind,
      name,
      '-n',
      namespace,
      '-o',
      'wide',
    ]);
    process.stdout.write(
      `operator e2e: kubectl get ${kind} ${name} -n ${namespace} -o wide\n${stdout}`,
    );
    return stdout;
  };
  const scrape = async (): Promise<string> =>
    (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();

  beforeAll(async () => {
    harness = await startOperatorHarness('operator-status', [
      'team-a',
      'team-b',
      'port-a',
      'port-b',
    ]);
    metricsPort = await freePort();
    operator = harness.startOperator(['--metrics-listen', `127.0.0.1:${metricsPort}`]);
  });

  afterAll(async () => {
    await operator?.stop();
    await harness?.stop();
  });

  it('shows in kubectl get why a Registry and its Repository are not ready, and when they are', async () => {
    await harness.apply(
      registry('berth-system', 'main'),
      repository('team-a', 'web', {
        registry: { name: 'main', namespace: 'berth-system' },
        pull: { namespaces: ['team-b'] },
      }),
      repository('team-b', 'solo', { registry: { name: 'main', namespace: 'berth-system' } }),
    );
    await waitFor(
      async () =>
        (await ready('repository', 'web', 'team-a'))?.message ===
        'no Registry serving this repository has a ready pod (berth-system/main: 0 of 1 registry pods ready)',
      30_000,
      `the Repository to wait for its Registry (operator: ${output()})`,
    );
    const registries = await harness.table(
      `/apis/berth.dev/v1alpha1/namespaces/berth-system/registries`,
    );
    expect(registries.columnDefinitions.map((column) => [column.name, column.priority])).toEqual([
      ['Name', 0],
      ['Ready', 0],
      ['Reason', 0],
      ['Endpoint', 0],
      ['Replicas', 0],
      ['Age', 0],
      ['Message', 1],
    ]);
    expect(tableRows(registries)[0]).toMatchObject({
      Name: 'main',
      Ready: 'False',
      Reason: 'Progressing',
      // The node endpoint is off: pods pull the cluster endpoint.
      Endpoint: 'berth-main.berth-system.svc:5000',
      Replicas: '0/1',
      Message: '0 of 1 registry pods ready',
    });
    const unavailable = tableRows(
      await harness.table(`/apis/berth.dev/v1alpha1/namespaces/team-a/repositories`),
    )[0];
    expect(unavailable).toMatchObject({
      Name: 'web',
      Ready: 'False',
      Reason: 'RegistryUnavailable',
    });
    expect(unavailable?.Message).toBe(
      'no Registry serving this repository has a ready pod (berth-system/main: 0 of 1 registry pods ready)',
    );
    await show('registry', 'main', 'berth-system');
    await show('repository', 'web', 'team-a');

    await harness.markRegistryPodsReady('berth-system', 'main');
    await waitFor(
      async () => (await ready('repository', 'web', 'team-a'))?.status === 'True',
      30_000,
      `the Repository to be Ready (operator: ${output()})`,
    );
    expect(tableRows(await harness.table(registriesPath))).toEqual([
      expect.objectContaining({
        Name: 'main',
        Ready: 'True',
        Reason: 'Available',
        Replicas: '1/1',
      }),
    ]);
    const rows = tableRows(await harness.table(repositoriesPath));
    expect(rows.find((row) => row.Name === 'web')).toMatchObject({
      Reason: 'PullSecretsIssued',
      'Pull Namespaces': 2,
      Message: '2 namespaces may pull from berth-system/main',
    });
    expect(rows.find((row) => row.Name === 'solo')?.Message).toBe(
      '1 namespace may pull from berth-system/main',
    );
    const web = await repositoryStatus('team-a', 'web');
    expect(web.pullNamespaceNames).toEqual(['team-a', 'team-b']);
    expect(web.conditions?.find((c) => c.type === 'RegistryAvailable')?.status).toBe('True');
  });

  it('says when a namespace selector matches no namespace or every one, and refuses malformed ones', async () => {
    await harness.cluster.kubectl(['label', 'namespace', 'team-b', 'team=b']);
    await harness.apply(
      repository('team-a', 'typo', {
        registry: { name: 'main', namespace: 'berth-system' },
        pull: { namespaceSelector: { matchLabels: { tem: 'b' } } },
      }),
      repository('team-a', 'everyone', {
        registry: { name: 'main', namespace: 'berth-system' },
        pull: { namespaceSelector: {} },
      }),
    );
    await waitFor(
      async () =>
        (await ready('repository', 'typo', 'team-a'))?.message ===
        '1 namespace may pull from berth-system/main; pull.namespaceSelector matches no namespace',
      30_000,
      `the typo to be reported (operator: ${output()})`,
    );
    await show('repository', 'typo', 'team-a');
    await waitFor(
      async () =>
        (await ready('repository', 'everyone', 'team-a'))?.message.endsWith(
          'pull.namespaceSelector is empty, so every namespace may pull',
        ) ?? false,
      30_000,
      'the empty selector to be reported',
    );
    const everyone = await repositoryStatus('team-a', 'everyone');
    expect(everyone.pullNamespaces).toBe(everyone.pullNamespaceNames?.length);
    expect(everyone.pullNamespaceNames).toEqual(
      expect.arrayContaining(['port-a', 'team-a', 'team-b']),
    );

    const refused = async (expression: Record<string, unknown>) =>
      (
        await harness.cluster.kubectl(['apply', '-f', '-'], {
          input: JSON.stringify(
            repository('team-a', 'bad', {
              pull: { namespaceSelector: { matchExpressions: [expression] } },
            }),
          ),
          allowFailure: true,
        })
      ).stderr;
    expect(await refused({ key: 'team', operator: 'Exists', values: ['b'] })).toContain(
      'matchExpressions key team: operator Exists takes no values: remove values, or use In',
    );
    expect(await refused({ key: 'team', operator: 'In', values: [] })).toContain(
      'matchExpressions key team: operator In needs at least one value in values, e.g. values: [prod]',
    );
  });

  it('shows who holds a node port on both Registries, announces it changing hands and the URLs it moved, and keeps retained keys', async () => {
    const nodeProxy = { nodeAccess: { mode: 'NodeProxy', port: 5100 } };
    await harness.apply(registry('port-a', 'first', nodeProxy));
    await waitFor(
      async () =>
        (await harness.condition('registry', 'first', 'port-a', 'NodePort'))?.status === 'True',
      30_000,
      `the first Registry to hold the port (operator: ${output()})`,
    );
    await harness.apply(
      registry('port-b', 'second', nodeProxy),
      repository('team-a', 'moved', { registry: { name: 'second', namespace: 'port-b' } }),
      repository('team-a', 'orphan', { registry: { name: 'first', namespace: 'port-a' } }),
    );
    await waitFor(
      async () =>
        (await harness.condition('registry', 'first', 'port-a', 'NodePort'))?.message ===
        'pods pull localhost:5100 from this Registry on every node; port-b/second also ask for port 5100 and run no node proxy',
      30_000,
      `the holder to name the contender (operator: ${output()})`,
    );
    await waitFor(
      async () =>
        (await harness.condition('registry', 'second', 'port-b', 'NodePort'))?.reason ===
          'NodePortConflict' &&
        (await harness.events('port-a', 'first', 'NodePortContested')).length === 1 &&
        (await harness.events('port-b', 'second', 'NodePortConflict')).length === 1,
      30_000,
      `the contender's condition and both Events (operator: ${output()})`,
    );
    expect(await harness.condition('registry', 'second', 'port-b', 'NodePort')).toMatchObject({
      status: 'False',
      message: 'port 5100 is held on every node by Registry port-a/first',
    });
    await show('registry', 'second', 'port-b');
    await waitFor(
      async () =>
        (await repositoryStatus('team-a', 'moved')).url ===
        'berth-second.port-b.svc:5000/team-a/moved',
      30_000,
      'the contender’s Repository at the cluster endpoint',
    );
    const keys = async (namespace: string, name: string) =>
      (
        await harness.getJson<{ data: Record<string, string> }>([
          'get',
          'secret',
          `berth-${name}-keys`,
          '-n',
          namespace,
        ])
      ).data['signing-keys.json'];
    const firstKeys = await keys('port-a', 'first');

    // The holder goes: the port changes hands, and the Repository's URL with it.
    await harness.cluster.kubectl(['delete', 'registry', 'first', '-n', 'port-a']);
    await waitFor(
      async () =>
        (await harness.condition('registry', 'second', 'port-b', 'NodePort'))?.status === 'True',
      30_000,
      `the port to change hands (operator: ${output()})`,
    );
    await waitFor(
      async () => (await harness.events('port-b', 'second', 'NodePortAcquired')).length === 1,
      30_000,
      'the NodePortAcquired Event',
    );
    await waitFor(
      async () => (await harness.events('team-a', 'moved', 'URLChanged')).length === 1,
      30_000,
      `the URLChanged Event (operator: ${output()})`,
    );
    const [changed] = await harness.events('team-a', 'moved', 'URLChanged');
    expect(changed?.message).toBe(
      'pods now pull this repository as localhost:5100/team-a/moved, no longer berth-second.port-b.svc:5000/team-a/moved: images that name the old one reach another registry or none',
    );
    await waitFor(
      async () => (await ready('repository', 'orphan', 'team-a'))?.reason === 'RegistryNotFound',
      30_000,
      'the orphaned Repository',
    );
    await show('repository', 'orphan', 'team-a');

    // reclaimPolicy Retain (the default) kept the keys: the same name signs with the same ones.
    expect(await keys('port-a', 'first')).toBe(firstKeys);
    await harness.apply(registry('port-a', 'first', nodeProxy));
    await waitFor(
      async () =>
        (await harness.condition('registry', 'first', 'port-a', 'NodePort'))?.reason ===
        'NodePortConflict',
      30_000,
      `the re-created Registry to find the port taken (operator: ${output()})`,
    );
    expect(await keys('port-a', 'first')).toBe(firstKeys);
  });

  it('reports a Secret the spec names that does not exist', async () => {
    await harness.apply(registry('team-b', 'tls', { tls: { certificateSecret: 'registry-tls' } }));
    await waitFor(
      async () => (await ready('registry', 'tls', 'team-b'))?.reason === 'SecretNotFound',
      30_000,
      `SecretNotFound (operator: ${output()})`,
    );
    expect((await ready('registry', 'tls', 'team-b'))?.message).toBe(
      'tls.certificateSecret registry-tls does not exist in namespace team-b: the registry pods cannot start until it does; 0 of 1 registry pods ready',
    );
    expect((await harness.condition('registry', 'tls', 'team-b', 'Degraded'))?.status).toBe('True');
    await show('registry', 'tls', 'team-b');
  });

  it("reports a mirror's login Secret that is missing, then incomplete, and clears once it serves", async () => {
    const degraded = () => harness.condition('registry', 'hub', 'team-b', 'Degraded');
    await harness.apply(
      registry('team-b', 'hub', {
        mirrors: [
          {
            url: 'https://registry-1.docker.io',
            prefix: 'docker.io',
            credentialsSecret: 'hub-login',
          },
        ],
      }),
    );
    await waitFor(
      async () => (await degraded())?.reason === 'SecretNotFound',
      30_000,
      `SecretNotFound for the mirror login (operator: ${output()})`,
    );
    expect((await degraded())?.message).toBe(
      'mirrors[0].credentialsSecret hub-login does not exist in namespace team-b: the registry pods cannot start until it does',
    );
    const login = (stringData: Record<string, string>) => ({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'hub-login', namespace: 'team-b' },
      type: 'Opaque',
      stringData,
    });
    await harness.apply(login({ username: 'hub-user' }));
    await waitFor(
      async () => (await degraded())?.reason === 'SecretIncomplete',
      30_000,
      `SecretIncomplete for a login without a password (operator: ${output()})`,
    );
    expect((await degraded())?.message).toBe(
      'mirrors[0].credentialsSecret hub-login has no password: the registry pods cannot start until it does',
    );
    const [event] = await harness.events('team-b', 'hub', 'SecretIncomplete');
    expect(event).toMatchObject({ type: 'Warning' });
    await harness.apply(login({ username: 'hub-user', password: 'hub-token' }));
    await waitFor(
      async () => (await degraded())?.status === 'False',
      30_000,
      `Degraded cleared once the login has both keys (operator: ${output()})`,
    );
  });

  it('exposes API errors, requeues, Registry conditions, pull Secrets and the earliest credential expiry as metrics', async () => {
    const text = await scrape();
    const value = (pattern: RegExp): number => Number(pattern.exec(text)?.[1] ?? Number.NaN);
    expect(
      value(/^berth_operator_registry_ready\{namespace="berth-system",name="main"\} (\d+)$/m),
    ).toBe(1);
    expect(
      value(/^berth_operator_registry_degraded\{namespace="team-b",name="tls"\} (\d+)$/m),
    ).toBe(1);
    expect(value(/^berth_operator_registry_ready\{namespace="team-b",name="tls"\} (\d+)$/m)).toBe(
      0,
    );
    // team-a and team-b hold a pull Secret of main.
    expect(value(/^berth_operator_pull_secrets (\d+)$/m)).toBeGreaterThanOrEqual(2);
    const expiry = value(
      /^berth_operator_pull_secret_expiry_earliest_timestamp_seconds ([\d.e+]+)$/m,
    );
    // credentialLifetime is 720h by default.
    expect(expiry * 1000).toBeGreaterThan(Date.now() + 700 * 3_600_000);
    expect(expiry * 1000).toBeLessThan(Date.now() + 721 * 3_600_000);
    // The missing Secret's Registry is looked at again on a timer; the reads of absent Secrets are 404s.
    expect(
      value(/^berth_operator_requeues_total\{kind="Registry",reason="scheduled"\} (\d+)$/m),
    ).toBeGreaterThan(0);
    expect(value(/^berth_operator_api_errors_total\{code="404"\} (\d+)$/m)).toBeGreaterThan(0);
    expect(text).toMatch(
      /^berth_operator_watch_errors_total\{resource="\/apis\/berth.dev\/v1alpha1\/registries"\} \d+$/m,
    );

    // A watch that fails: the API server goes away, and the informers count their errors.
    await harness.cluster.stopApiServer();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await harness.cluster.startApiServer();
    await waitFor(
      async () => {
        const after = await scrape();
        return /^berth_operator_watch_errors_total\{resource="\/api\/v1\/namespaces"\} [1-9]\d*$/m.test(
          after,
        );
      },
      60_000,
      'the watch errors to be counted',
    );
    expect(await scrape()).toMatch(/^berth_operator_api_errors_total\{code="network"\} [1-9]\d*$/m);
  });
});
