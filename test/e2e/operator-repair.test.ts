import { generateKeyFile, KeyRing } from '../../src/credentials/keys.ts';
import { TokenService } from '../../src/credentials/tokens.ts';
import { registryTokenIdentity } from '../../src/operator/render/endpoints.ts';
import { registrySpecSchema } from '../../src/operator/api/registry.ts';
import { controlPlaneToolNames, type ControlPlane } from '../support/control-plane.ts';
import {
  startOperatorHarness,
  type Condition,
  type EventObject,
  type OperatorHarness,
} from '../support/operator-harness.ts';
import { Daemon, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

interface SecretObject {
  metadata: { annotations?: Record<string, string>; resourceVersion: string };
  data: Record<string, string>;
}

type Auths = Record<string, { username: string; password: string; auth: string }>;

const secretName = 'berth-pull.berth-system.main';
const mainRegistry = {
  apiVersion: 'berth.dev/v1alpha1',
  kind: 'Registry',
  metadata: { name: 'main', namespace: 'berth-system' },
  spec: {
    nodeAccess: { mode: 'None' },
    storage: { filesystem: { size: '1Gi', storageClassName: 'slow' } },
  },
};

/** The claims of a JWT, unverified: what the Secret says it holds. */
function claims(token: string): Record<string, unknown> {
  const payload = token.split('.')[1];
  if (!payload) return {};
  try {
    return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<
      string,
      unknown
    >;
  } catch {
    return {};
  }
}

/**
 * What a user does to the operator on a real API server, and what they must see: pull Secrets
 * edited by hand are repaired (whatever in them is wrong, also across a restart), refused writes
 * show in status and as one Warning Event, and a Repository served by several Registries names
 * them all.
 */
describeWithTools(controlPlaneToolNames, 'the operator repairs and reports', () => {
  let harness: OperatorHarness;
  let cluster: ControlPlane;
  let operator: Daemon;

  const getJson = <T>(args: string[]): Promise<T> => harness.getJson<T>(args);
  const apply = (...objects: unknown[]) => harness.apply(...objects);
  const startOperator = (): Daemon => harness.startOperator();
  const secret = (namespace: string) =>
    getJson<SecretObject>(['get', 'secret', secretName, '-n', namespace]);
  const auths = async (namespace: string): Promise<Auths> =>
    (
      JSON.parse(
        Buffer.from((await secret(namespace)).data['.dockerconfigjson'] ?? '', 'base64').toString(
          'utf8',
        ),
      ) as { auths: Auths }
    ).auths;
  /** Every host entry of the namespace's pull Secret given this password, as a hand edit would. */
  const forge = async (namespace: string, password: string): Promise<void> => {
    const forged = Object.fromEntries(
      Object.keys(await auths(namespace)).map((host) => [
        host,
        {
          username: namespace,
          password,
          auth: Buffer.from(`${namespace}:${password}`).toString('base64'),
        },
      ]),
    );
    const content = Buffer.from(JSON.stringify({ auths: forged })).toString('base64');
    await cluster.kubectl([
      'patch',
      'secret',
      secretName,
      '-n',
      namespace,
      '--type=merge',
      '-p',
      JSON.stringify({ data: { '.dockerconfigjson': content } }),
    ]);
  };
  /** Waits until every entry carries a credential other than `forged`, naming the namespace. */
  const repaired = async (namespace: string, forged: string, what: string): Promise<number> => {
    const started = Date.now();
    await waitFor(
      async () => {
        const entries = Object.values(await auths(namespace));
        return (
          entries.length > 0 &&
          entries.every(
            (entry) =>
              entry.password !== forged &&
              entry.username === namespace &&
              claims(entry.password).sub === `namespace:${namespace}` &&
              entry.auth === Buffer.from(`${namespace}:${entry.password}`).toString('base64'),
          )
        );
      },
      15_000,
      `${what} to be repaired (operator: ${operator.output.slice(-3000)})`,
    );
    return Date.now() - started;
  };
  const registryStatus = (name = 'main', namespace = 'berth-system') =>
    getJson<{
      metadata: { generation: number; resourceVersion: string };
      status?: { conditions?: Condition[]; observedGeneration?: number };
    }>(['get', 'registry', name, '-n', namespace]);
  const degraded = async (): Promise<Condition | undefined> =>
    (await registryStatus()).status?.conditions?.find((c) => c.type === 'Degraded');
  const events = (namespace: string, name: string, reason: string) =>
    harness.events(namespace, name, reason);

  beforeAll(async () => {
    harness = await startOperatorHarness('operator-repair', ['team-a', 'team-b', 'other']);
    cluster = harness.cluster;
    operator = startOperator();
    await apply(mainRegistry, {
      apiVersion: 'berth.dev/v1alpha1',
      kind: 'Repository',
      metadata: { name: 'web', namespace: 'team-a' },
      spec: {
        registry: { name: 'main', namespace: 'berth-system' },
        pull: { namespaces: ['team-b'] },
      },
    });
    for (const namespace of ['team-a', 'team-b'])
      await waitFor(
        async () => Object.keys(await auths(namespace)).length > 0,
        60_000,
        `the pull Secret in ${namespace} (operator: ${operator.output.slice(-3000)})`,
      );
    // A Repository is Ready only while its Registry has a ready pod.
    await harness.markRegistryPodsReady('berth-system', 'main');
  });

  afterAll(async () => {
    await operator?.stop();
    await harness?.stop();
  });

  it('reissues a pull Secret whose credential was replaced by hand: garbage, another namespace’s, another key’s, an expired one', async () => {
    await forge('team-a', 'garbage');
    const took = await repaired('team-a', 'garbage', 'a garbage password');
    expect(took).toBeLessThan(10_000);
    process.stdout.write(`operator e2e: garbage pull secret repaired in ${took} ms\n`);

    // Another namespace's credential, signed by the right key: a valid JWT for the wrong identity.
    const foreign = Object.values(await auths('team-b'))[0]?.password as string;
    expect(claims(foreign).sub).toBe('namespace:team-b');
    await forge('team-a', foreign);
    await repaired('team-a', foreign, 'another namespace’s credential');

    // A well-formed credential for team-a from a key the Registry does not have.
    const registry = {
      metadata: { name: 'main', namespace: 'berth-system', uid: 'unused' },
      spec: registrySpecSchema.parse(mainRegistry.spec),
    };
    const settings = {
      ...registryTokenIdentity(registry),
      tokenTtlMillis: 300_000,
      credentialLifetimeMillis: 3_600_000,
    };
    const stranger = new TokenService(await KeyRing.fromContent(await generateKeyFile()), settings);
    const unsigned = await stranger.issueCredential('team-a');
    await forge('team-a', unsigned);
    await repaired('team-a', unsigned, 'a credential signed by another key');

    // Signed by the Registry's own key for the right namespace, but expired.
    const keyFile = Buffer.from(
      (await getJson<SecretObject>(['get', 'secret', 'berth-main-keys', '-n', 'berth-system']))
        .data['signing-keys.json'] as string,
      'base64',
    ).toString('utf8');
    const own = new TokenService(await KeyRing.fromContent(keyFile), settings);
    const expired = await own.issueCredential('team-a', 1000);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    await forge('team-a', expired);
    await repaired('team-a', expired, 'an expired credential');
  });

  it('repairs a pull Secret edited while no operator ran, once one starts again', async () => {
    expect(await operator.stop()).toBe(0);
    await forge('team-b', 'garbage');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(Object.values(await auths('team-b'))[0]?.password).toBe('garbage');
    operator = startOperator();
    await repaired('team-b', 'garbage', 'a garbage password across a restart');
  });

  it('restores the berth.dev/registry annotation edited by hand', async () => {
    await cluster.kubectl([
      'annotate',
      'secret',
      secretName,
      '-n',
      'team-a',
      '--overwrite',
      'berth.dev/registry=somebody/else',
    ]);
    await waitFor(
      async () =>
        (await secret('team-a')).metadata.annotations?.['berth.dev/registry'] ===
        'berth-system/main',
      15_000,
      `the annotation to be restored (operator: ${operator.output.slice(-3000)})`,
    );
  });

  it('reports a refused apply as Degraded ApplyFailed with one Warning Event, writes no status in a loop, and clears it', async () => {
    // A claim that no volume is bound to cannot grow (nor can one whose StorageClass does not
    // expand): the API server refuses the PersistentVolumeClaim the larger size renders.
    await cluster.kubectl([
      'patch',
      'registry',
      'main',
      '-n',
      'berth-system',
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { storage: { filesystem: { size: '2Gi' } } } }),
    ]);
    await waitFor(
      async () => (await degraded())?.reason === 'ApplyFailed',
      30_000,
      `Degraded ApplyFailed (operator: ${operator.output.slice(-3000)})`,
    );
    const failing = await registryStatus();
    const condition = (await degraded()) as Condition;
    expect(condition.status).toBe('True');
    expect(condition.message).toContain('PersistentVolumeClaim berth-system/berth-main-data');
    expect(condition.message).toMatch(/resize|immutable/);
    // The status explains the generation it observed.
    expect(condition.observedGeneration).toBe(failing.metadata.generation);
    expect(failing.status?.observedGeneration).toBe(failing.metadata.generation);

    // Retries go on with backoff, but a failure that stays the same writes the same status: none.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const settled = (await registryStatus()).metadata.resourceVersion;
    await new Promise((resolve) => setTimeout(resolve, 4000));
    expect((await registryStatus()).metadata.resourceVersion).toBe(settled);

    // One Event object for the repeated failure, its count growing.
    const warnings = await events('berth-system', 'main', 'ApplyFailed');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      type: 'Warning',
      involvedObject: { kind: 'Registry', name: 'main' },
    });
    expect(warnings[0]?.message).toContain('PersistentVolumeClaim berth-system/berth-main-data');
    expect(warnings[0]?.count ?? 1).toBeGreaterThan(1);

    // The user's way out: remove the claim (no controller here clears its protection finalizer),
    // and the operator makes it again at the new size.
    await cluster.kubectl([
      'delete',
      'persistentvolumeclaim',
      'berth-main-data',
      '-n',
      'berth-system',
      '--wait=false',
    ]);
    await cluster.kubectl([
      'patch',
      'persistentvolumeclaim',
      'berth-main-data',
      '-n',
      'berth-system',
      '--type=merge',
      '-p',
      JSON.stringify({ metadata: { finalizers: null } }),
    ]);
    await waitFor(
      async () => (await degraded())?.status === 'False',
      60_000,
      `Degraded to clear (operator: ${operator.output.slice(-3000)})`,
    );
    expect((await degraded())?.reason).toBe('AsExpected');
    const claim = await getJson<{ spec: { resources: { requests: { storage: string } } } }>([
      'get',
      'persistentvolumeclaim',
      'berth-main-data',
      '-n',
      'berth-system',
    ]);
    expect(claim.spec.resources.requests.storage).toBe('2Gi');
  });

  it('reports a Repository status write the API refuses with a Warning Event, and writes it once allowed', async () => {
    // A ValidatingAdmissionPolicy refuses status writes of labelled Repositories: a real refusal.
    const message = 'status writes of frozen Repositories are refused by this test';
    await apply(
      {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'ValidatingAdmissionPolicy',
        metadata: { name: 'freeze-repository-status' },
        spec: {
          failurePolicy: 'Fail',
          matchConstraints: {
            resourceRules: [
              {
                apiGroups: ['berth.dev'],
                apiVersions: ['*'],
                operations: ['UPDATE'],
                resources: ['repositories/status'],
              },
            ],
          },
          validations: [
            {
              expression: "!has(object.metadata.labels) || !('frozen' in object.metadata.labels)",
              message,
            },
          ],
        },
      },
      {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'ValidatingAdmissionPolicyBinding',
        metadata: { name: 'freeze-repository-status' },
        spec: { policyName: 'freeze-repository-status', validationActions: ['Deny'] },
      },
    );
    // The policy takes effect within a few seconds; probe it with a write of our own.
    /** A Repository whose status writes the policy refuses. */
    const frozen = (
      namespace: string,
      name: string,
      registry: { name: string; namespace: string },
    ) =>
      apply({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Repository',
        metadata: { name, namespace, labels: { frozen: 'status' } },
        spec: { registry },
      });
    await frozen('other', 'probe', { name: 'absent', namespace: 'nowhere' });
    await waitFor(
      async () =>
        (
          await cluster.kubectl(
            [
              'patch',
              'repository',
              'probe',
              '-n',
              'other',
              '--subresource=status',
              '--type=merge',
              '-p',
              JSON.stringify({ status: { pullNamespaces: 7 } }),
            ],
            { allowFailure: true },
          )
        ).stderr.includes(message),
      30_000,
      'the admission policy to take effect',
    );

    await frozen('team-a', 'frozen', { name: 'main', namespace: 'berth-system' });
    await waitFor(
      async () => (await events('team-a', 'frozen', 'ApplyFailed')).length > 0,
      30_000,
      `the ApplyFailed Event (operator: ${operator.output.slice(-3000)})`,
    );
    const [warning, ...more] = await events('team-a', 'frozen', 'ApplyFailed');
    expect(more).toHaveLength(0);
    expect(warning).toMatchObject({
      type: 'Warning',
      involvedObject: { kind: 'Repository', name: 'frozen' },
    });
    expect(warning?.message).toContain('Repository team-a/frozen');
    expect(warning?.message).toContain(message);

    await cluster.kubectl([
      'delete',
      'validatingadmissionpolicybinding',
      'freeze-repository-status',
    ]);
    await waitFor(
      async () =>
        (
          await getJson<{ status?: { conditions?: Condition[] } }>([
            'get',
            'repository',
            'frozen',
            '-n',
            'team-a',
          ])
        ).status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
      60_000,
      'the status once writes are allowed',
    );
  });

  it('names every Registry that serves a Repository with no spec.registry', async () => {
    await apply(
      {
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: 'second', namespace: 'other' },
        spec: { nodeAccess: { mode: 'None' } },
      },
      {
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Repository',
        metadata: { name: 'shared', namespace: 'team-a' },
        spec: { pull: { namespaces: ['team-b'] } },
      },
    );
    const status = () =>
      getJson<{
        status?: {
          url?: string;
          registries?: { name: string; namespace: string; url: string }[];
          conditions?: Condition[];
        };
      }>(['get', 'repository', 'shared', '-n', 'team-a']);
    await waitFor(
      async () => ((await status()).status?.registries?.length ?? 0) === 2,
      30_000,
      `both Registries in the status (operator: ${operator.output.slice(-3000)})`,
    );
    const shown = (await status()).status;
    expect(shown?.registries).toEqual([
      {
        namespace: 'berth-system',
        name: 'main',
        url: 'berth-main.berth-system.svc:5000/team-a/shared',
      },
      { namespace: 'other', name: 'second', url: 'berth-second.other.svc:5000/team-a/shared' },
    ]);
    expect(shown?.url).toBe('berth-main.berth-system.svc:5000/team-a/shared');
    expect(shown?.conditions?.find((c) => c.type === 'Ready')?.message).toContain('2 Registries');
  });

  it('records each distinct Event once, counting repeats on the same object', async () => {
    const all = (await getJson<{ items: EventObject[] }>(['get', 'events', '-A'])).items.filter(
      (event) => event.source?.component === 'berth-operator',
    );
    expect(all.length).toBeGreaterThan(0);
    const seen = new Map<string, number>();
    for (const event of all) {
      const key = [event.involvedObject.uid, event.type, event.reason, event.message].join('|');
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    expect([...seen].filter(([, count]) => count > 1)).toEqual([]);
  });
});
