import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { stringify } from 'yaml';
import { repositoryRoot } from '../support/cli.ts';
import {
  clusterLayout,
  clusterToolNames,
  removeStaleClusters,
  startCluster,
  type Cluster,
} from '../support/cluster/cluster.ts';
import { leftovers } from '../support/cluster/teardown.ts';
import { importBerthImage, restrictedPodSpec } from '../support/cluster/berth-image.ts';
import { resourceExists, serviceAccountCan } from '../support/control-plane.ts';
import { run, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

/** The image `kubectl apply -k` of the overlay below runs: Berth's own, under another name. */
const overriddenImage = 'berth.test/berth:override';
const pushedImage = 'localhost:5000/team-a/web:1';
const secretName = 'berth-pull.berth-system.main';

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface Pod {
  metadata: { name: string; namespace: string };
  spec: { containers: { image: string }[]; imagePullSecrets?: { name: string }[] };
  status: {
    phase: string;
    conditions?: Condition[];
    containerStatuses?: {
      ready: boolean;
      state: { waiting?: { reason: string; message?: string } };
    }[];
  };
}

/**
 * Berth as users run it: its image built by `npm run image`, installed with `kubectl apply -k`,
 * running as real pods on a real kubelet, and the kubelet pulling from it with what Berth put on
 * the ServiceAccounts.
 */
describeWithTools([...clusterToolNames, 'crane'], 'Berth on a real single-node cluster', () => {
  let cluster: Cluster;
  let work: string;
  const kubectl = (...args: string[]) => cluster.kubectl(args);
  const json = async <T>(...args: string[]): Promise<T> =>
    JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
  const pods = async (namespace: string, selector: string): Promise<Pod[]> =>
    (await json<{ items: Pod[] }>('get', 'pods', '-n', namespace, '-l', selector)).items;
  const ready = (pod: Pod): boolean =>
    pod.status.conditions?.some(
      (condition) => condition.type === 'Ready' && condition.status === 'True',
    ) ?? false;
  const waitingReason = (pod: Pod): string | undefined =>
    pod.status.containerStatuses?.[0]?.state.waiting?.reason;

  /** A pod of the pushed image with no imagePullSecrets: the ServiceAccount brings them. */
  const appPodSpec = (pullPolicy: 'Always' | 'IfNotPresent') =>
    restrictedPodSpec(pushedImage, pullPolicy);
  const appPod = (namespace: string, name: string, pullPolicy: 'Always' | 'IfNotPresent') =>
    stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, labels: { app: 'web' } },
      spec: appPodSpec(pullPolicy),
    });

  /** Creates a pod and waits until it runs (`started`) or its image pull fails (`refused`). */
  const startPod = async (
    namespace: string,
    name: string,
    pullPolicy: 'Always' | 'IfNotPresent' = 'Always',
  ): Promise<{ outcome: 'started' | 'refused'; pod: Pod; millis: number }> => {
    const started = Date.now();
    await cluster.kubectl(['apply', '-f', '-'], { input: appPod(namespace, name, pullPolicy) });
    let outcome: 'started' | 'refused' | undefined;
    let pod: Pod | undefined;
    await waitFor(
      async () => {
        pod = await json<Pod>('get', 'pod', name, '-n', namespace);
        if (ready(pod)) outcome = 'started';
        else if (['ErrImagePull', 'ImagePullBackOff'].includes(waitingReason(pod) ?? ''))
          outcome = 'refused';
        return outcome !== undefined;
      },
      60_000,
      `pod ${namespace}/${name} to start or fail its pull`,
    );
    return {
      outcome: outcome as 'started' | 'refused',
      pod: pod as Pod,
      millis: Date.now() - started,
    };
  };
  const deletePod = (namespace: string, name: string) =>
    kubectl('delete', 'pod', name, '-n', namespace, '--wait=false', '--ignore-not-found');

  const setLifetimes = (credentialLifetime: string, tokenTTL: string) =>
    kubectl(
      '-n',
      'berth-system',
      'patch',
      'registry',
      'main',
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { auth: { credentialLifetime, tokenTTL } } }),
    );
  const registryCondition = async (type: string): Promise<Condition | undefined> =>
    (
      await json<{ status?: { conditions?: Condition[] } }>(
        'get',
        'registry',
        'main',
        '-n',
        'berth-system',
      )
    ).status?.conditions?.find((condition) => condition.type === type);

  /** crane on the node, talking to the node proxy on localhost:5000 with `credentials`. */
  const crane = async (args: string[], credentials?: { username: string; password: string }) => {
    const config = join(work, `docker-${credentials?.username ?? 'anonymous'}`);
    await mkdir(config, { recursive: true });
    const env = { ...process.env, DOCKER_CONFIG: config };
    if (credentials)
      await cluster.onNode(
        'crane',
        ['auth', 'login', 'localhost:5000', '-u', credentials.username, '-p', credentials.password],
        {
          env,
        },
      );
    return cluster.onNode('crane', ['--insecure', ...args], { env, allowFailure: true });
  };
  const adminCredentials = async () => {
    const secret = await json<{ data: Record<string, string> }>(
      'get',
      'secret',
      'berth-main-admin',
      '-n',
      'berth-system',
    );
    const field = (key: string) => Buffer.from(secret.data[key] ?? '', 'base64').toString();
    return { username: field('username'), password: field('password') };
  };
  /** The credential in a namespace's pull secret for localhost:5000. */
  const pullCredentials = async (namespace: string) => {
    const secret = await json<{ data: Record<string, string> }>(
      'get',
      'secret',
      secretName,
      '-n',
      namespace,
    );
    const config = JSON.parse(
      Buffer.from(secret.data['.dockerconfigjson'] ?? '', 'base64').toString(),
    ) as {
      auths: Record<string, { username: string; password: string }>;
    };
    const entry = config.auths['localhost:5000'];
    if (!entry) throw new Error(`no localhost:5000 entry in ${namespace}'s pull secret`);
    return entry;
  };
  const serviceAccountEntries = async (namespace: string, account = 'default'): Promise<string[]> =>
    (
      (await json<{ imagePullSecrets?: { name: string }[] }>('get', 'sa', account, '-n', namespace))
        .imagePullSecrets ?? []
    ).map((entry) => entry.name);

  const repositoryManifest = stringify({
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Repository',
    metadata: { name: 'web', namespace: 'team-a' },
    spec: {
      registry: { name: 'main', namespace: 'berth-system' },
      visibility: 'Private',
      pull: { namespaces: ['team-b'], namespaceSelector: { matchLabels: { env: 'prod' } } },
    },
  });
  /** Applies a manifest the way Argo CD does: server-side apply under its own field manager. */
  const applyAsGitOps = (manifest: string) =>
    cluster.kubectl(['apply', '--server-side', '--field-manager=argocd-controller', '-f', '-'], {
      input: manifest,
    });
  const secretExists = (namespace: string): Promise<boolean> =>
    resourceExists(cluster, 'secret', secretName, namespace);
  /** How long until `check` holds; waits up to 5 s so a slow result is reported, not timed out. */
  const timed = async (check: () => Promise<boolean>, what: string): Promise<number> => {
    const started = Date.now();
    await waitFor(check, 5_000, what);
    return Date.now() - started;
  };

  beforeAll(async () => {
    cluster = await startCluster();
    process.stdout.write(
      `cluster: node Ready ${cluster.startup.nodeReadyMillis} ms, CoreDNS and storage ready ${cluster.startup.readyMillis} ms after start\n`,
    );
    work = join(cluster.root, 'test');
    await mkdir(work, { recursive: true });
    // The image as users build it without Docker, loaded as a preloaded image under the name
    // the overlay's `images:` sets.
    await importBerthImage(cluster, overriddenImage);
  }, 900_000);

  afterAll(async () => {
    if (!cluster) return;
    // Leave the cluster as a run that dies does, everything still running: the next start's
    // cleanup must remove all of it.
    cluster.abandon();
    await removeStaleClusters();
    expect(await leftovers(clusterLayout(cluster.network.name), cluster.network.name)).toEqual([]);
  }, 180_000);

  it('installs with kubectl apply -k: two operator pods Ready, one holding the Lease, all on the overridden image', async () => {
    const overlay = join(work, 'overlay');
    await mkdir(overlay, { recursive: true });
    const [name, tag] = overriddenImage.split(':') as [string, string];
    await writeFile(
      join(overlay, 'kustomization.yaml'),
      stringify({
        apiVersion: 'kustomize.config.k8s.io/v1beta1',
        kind: 'Kustomization',
        resources: [relative(overlay, join(repositoryRoot, 'deploy'))],
        images: [{ name: 'berth', newName: name, newTag: tag }],
      }),
    );
    await kubectl('apply', '-k', overlay);
    await kubectl(
      '-n',
      'berth-system',
      'rollout',
      'status',
      'deployment/berth-operator',
      '--timeout=120s',
    );
    const operators = await pods('berth-system', 'app.kubernetes.io/component=operator');
    expect(operators.filter(ready)).toHaveLength(2);
    expect(operators.map((pod) => pod.spec.containers[0]?.image)).toEqual([
      overriddenImage,
      overriddenImage,
    ]);
    let holder = '';
    await waitFor(
      async () => {
        const leases = await json<{ items: { spec: { holderIdentity?: string } }[] }>(
          'get',
          'lease',
          '-n',
          'berth-system',
        );
        holder = leases.items.map((lease) => lease.spec.holderIdentity ?? '').find(Boolean) ?? '';
        return holder !== '';
      },
      30_000,
      'a Lease holder',
    );
    // The operator's identity is its pod name and a suffix of its process.
    expect(operators.filter((pod) => holder.startsWith(`${pod.metadata.name}-`))).toHaveLength(1);
  });

  it('runs examples/registry.yaml: PVC Bound, registry and node-proxy pods Ready, Registry Ready from real readiness', async () => {
    await kubectl('apply', '-f', join(repositoryRoot, 'examples', 'registry.yaml'));
    await kubectl(
      '-n',
      'berth-system',
      'wait',
      '--for=condition=Ready',
      'registry/main',
      '--timeout=180s',
    );
    const registry = await json<{
      status: { endpoints: Record<string, string>; readyReplicas: number; conditions: Condition[] };
    }>('get', 'registry', 'main', '-n', 'berth-system');
    expect(registry.status.endpoints).toEqual({
      cluster: 'berth-main.berth-system.svc:5000',
      node: 'localhost:5000',
    });
    expect(registry.status.readyReplicas).toBe(1);
    expect(registry.status.conditions.find((c) => c.type === 'Ready')?.message).toBe(
      '1 of 1 registry pods ready; 1 of 1 node proxies ready',
    );
    const events = await json<{
      items: { reason: string; type: string; source: { component: string } }[];
    }>(
      'get',
      'events',
      '-n',
      'berth-system',
      '--field-selector',
      'involvedObject.kind=Registry,involvedObject.name=main',
    );
    expect(
      events.items.map((event) => [event.type, event.reason, event.source.component]),
    ).toContainEqual(['Normal', 'Available', 'berth-operator']);
    const claim = await json<{ status: { phase: string } }>(
      'get',
      'pvc',
      'berth-main-data',
      '-n',
      'berth-system',
    );
    expect(claim.status.phase).toBe('Bound');
    const registryPods = await pods(
      'berth-system',
      'app.kubernetes.io/instance=main,app.kubernetes.io/component=registry',
    );
    expect(registryPods.filter(ready)).toHaveLength(1);
    expect(registryPods[0]?.spec.containers[0]?.image).toBe(overriddenImage);
    // The container as the node runs it: uid 65532, read-only root filesystem, and how long
    // from the runtime starting it to the registry listening.
    const containerId = (
      await cluster.crictl([
        'ps',
        '-q',
        '--name',
        '^registry$',
        '--pod',
        (
          await cluster.crictl(['pods', '-q', '--name', registryPods[0]?.metadata.name ?? ''])
        ).stdout.trim(),
      ])
    ).stdout.trim();
    const inspected = JSON.parse((await cluster.crictl(['inspect', containerId])).stdout) as {
      status: { startedAt: string };
      info: { pid: number };
    };
    const processStatus = await readFile(`/proc/${inspected.info.pid}/status`, 'utf8');
    expect(processStatus).toMatch(/^Uid:\s+65532\s+65532/m);
    const rootMount = (await readFile(`/proc/${inspected.info.pid}/mountinfo`, 'utf8'))
      .split('\n')
      .find((line) => line.split(' ')[4] === '/');
    expect(rootMount?.split(' ')[5]?.split(',')).toContain('ro');
    const listening = (
      await kubectl('-n', 'berth-system', 'logs', registryPods[0]?.metadata.name ?? '')
    ).stdout
      .split('\n')
      .map((line) =>
        line.startsWith('{') ? (JSON.parse(line) as { msg?: string; time?: string }) : {},
      )
      .find((entry) => entry.msg === 'registry listening');
    const startMillis = Date.parse(listening?.time ?? '') - Date.parse(inspected.status.startedAt);
    process.stdout.write(`registry container: started to listening in ${startMillis} ms\n`);
    expect(startMillis).toBeGreaterThan(0);
    expect(startMillis).toBeLessThan(2000);
    const proxies = await pods(
      'berth-system',
      'app.kubernetes.io/instance=main,app.kubernetes.io/component=node-proxy',
    );
    expect(proxies.filter(ready)).toHaveLength(1);
    expect(proxies[0]?.spec.containers[0]?.image).toBe(overriddenImage);
    // The API server's own Pod Security check: at `restricted`, only the hostNetwork node proxy
    // of berth-system would be refused; the registry and operator pods meet it.
    const dryRun = await kubectl(
      'label',
      '--dry-run=server',
      '--overwrite',
      'namespace',
      'berth-system',
      'pod-security.kubernetes.io/enforce=restricted',
    );
    // Warnings name each violating pod: the node proxy, and none of the others.
    const violating = dryRun.stderr
      .split('\n')
      .map((line) => /^Warning: ([a-z0-9.-]+): /.exec(line)?.[1])
      .filter((name): name is string => name !== undefined);
    expect(violating).toEqual([proxies[0]?.metadata.name]);
  });

  it('the kubelet pulls a pushed image for an allowed namespace with no imagePullSecrets in the pod; a refused namespace gets ErrImagePull', async () => {
    for (const namespace of ['team-a', 'team-b', 'team-c', 'team-d'])
      await kubectl('create', 'namespace', namespace);
    // A user's own entry, which Berth must never touch.
    await waitFor(
      async () => await resourceExists(cluster, 'serviceaccount', 'default', 'team-b'),
      30_000,
      "team-b's default ServiceAccount",
    );
    await kubectl(
      '-n',
      'team-b',
      'patch',
      'serviceaccount',
      'default',
      '--type=merge',
      '-p',
      '{"imagePullSecrets":[{"name":"user-secret"}]}',
    );
    await applyAsGitOps(repositoryManifest);
    const layout = join(work, 'busybox-layout');
    await mkdir(layout, { recursive: true });
    await run('tar', [
      '-xf',
      join(cluster.root, 'images', 'berth-test-busybox-1.oci.tar'),
      '-C',
      layout,
    ]);
    const pushed = await crane(['push', layout, pushedImage], await adminCredentials());
    expect(pushed.stderr).not.toMatch(/error/i);
    await waitFor(
      async () => (await serviceAccountEntries('team-b')).includes(secretName),
      30_000,
      "team-b's pull secret",
    );

    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'web', namespace: 'team-b' },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: 'web' } },
          template: { metadata: { labels: { app: 'web' } }, spec: appPodSpec('IfNotPresent') },
        },
      }),
    });
    await kubectl('-n', 'team-b', 'rollout', 'status', 'deployment/web', '--timeout=120s');
    const [running] = await pods('team-b', 'app=web');
    expect(running?.spec.imagePullSecrets).toEqual([{ name: 'user-secret' }, { name: secretName }]);
    expect(await secretExists('team-a')).toBe(true);
    expect(await secretExists('team-c')).toBe(false);
    const repository = await json<{
      status: { conditions: Condition[]; url: string; pullNamespaces: number };
    }>('get', 'repository', 'web', '-n', 'team-a');
    expect(repository.status.conditions.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      reason: 'PullSecretsIssued',
    });
    expect(repository.status.url).toBe('localhost:5000/team-a/web');
    expect(repository.status.pullNamespaces).toBe(2);
    // The registry pod reads its policy with its own ServiceAccount, and can read nothing else.
    const registryCan = (verb: string, resource: string) =>
      serviceAccountCan(cluster, { namespace: 'berth-system', name: 'berth-main' }, verb, resource);
    expect(await registryCan('watch', 'repositories.berth.dev')).toBe('yes');
    expect(await registryCan('list', 'namespaces')).toBe('yes');
    expect(await registryCan('get', 'secrets')).toBe('no');
    expect(await registryCan('patch', 'repositories.berth.dev')).toBe('no');

    const refused = await startPod('team-c', 'web', 'Always');
    expect(refused.outcome).toBe('refused');
    const events = await json<{ items: { reason: string; message: string }[] }>(
      'get',
      'events',
      '-n',
      'team-c',
      '--field-selector',
      'involvedObject.name=web,reason=Failed',
    );
    expect(events.items.map((event) => event.message).join('\n')).toMatch(
      /insufficient_scope|unauthorized|denied/i,
    );
  });

  it('labelling a namespace into the selector lets its next pod start, a new ServiceAccount gets its entry within 1 s; removing the label refuses the next pod', async () => {
    let started = Date.now();
    await kubectl('label', 'namespace', 'team-d', 'env=prod');
    const secretMillis = await timed(
      async () =>
        (await secretExists('team-d')) &&
        (await serviceAccountEntries('team-d')).includes(secretName),
      "team-d's Secret and ServiceAccount entry",
    );
    expect(secretMillis).toBeLessThan(1000);
    const granted = await startPod('team-d', 'granted');
    expect(granted.outcome).toBe('started');
    const grantMillis = Date.now() - started;

    await kubectl('create', 'serviceaccount', 'builder', '-n', 'team-b');
    const accountMillis = await timed(
      async () => (await serviceAccountEntries('team-b', 'builder')).includes(secretName),
      'a new ServiceAccount to get the entry',
    );
    expect(accountMillis).toBeLessThan(1000);

    started = Date.now();
    await kubectl('label', 'namespace', 'team-d', 'env-');
    const revoked = await startPod('team-d', 'revoked');
    expect(revoked.outcome).toBe('refused');
    const revokeMillis = Date.now() - started;
    expect(await secretExists('team-d')).toBe(false);
    expect(await serviceAccountEntries('team-d')).not.toContain(secretName);
    process.stdout.write(
      `label -> Secret and entry ${secretMillis} ms, -> pod Ready ${grantMillis} ms; new ServiceAccount -> entry ${accountMillis} ms; ` +
        `label removed -> pull refused ${revokeMillis} ms\n`,
    );
  });

  it('keeps users’ entries and shows GitOps tools no conflict and no drift', async () => {
    expect(await serviceAccountEntries('team-b')).toEqual(['user-secret', secretName]);
    // Argo CD applies the same manifest again: no conflict, and a server-side diff is empty.
    await applyAsGitOps(repositoryManifest);
    const diff = await cluster.kubectl(
      ['diff', '--server-side', '--field-manager=argocd-controller', '-f', '-'],
      { input: repositoryManifest, allowFailure: true },
    );
    expect({ code: diff.code, diff: diff.stdout }).toEqual({ code: 0, diff: '' });
    const managed = await json<{
      metadata: { managedFields: { manager: string; subresource?: string }[] };
    }>('get', 'repository', 'web', '-n', 'team-a', '--show-managed-fields');
    const operatorFields = managed.metadata.managedFields.filter(
      (field) => field.manager === 'berth-operator',
    );
    expect(operatorFields.map((field) => field.subresource)).toEqual(['status']);
  });

  it('refuses a Repository that claims another namespace’s path, in status and an Event, and grants nothing', async () => {
    await applyAsGitOps(
      stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Repository',
        metadata: { name: 'steal', namespace: 'team-c' },
        spec: {
          registry: { name: 'main', namespace: 'berth-system' },
          path: 'team-a/web',
          pull: { namespaces: ['team-c'] },
        },
      }),
    );
    await waitFor(
      async () =>
        (
          await json<{ status?: { conditions?: Condition[] } }>(
            'get',
            'repository',
            'steal',
            '-n',
            'team-c',
          )
        ).status?.conditions?.some((c) => c.reason === 'PathNotOwned' && c.status === 'False') ??
        false,
      10_000,
      'the PathNotOwned condition',
    );
    const events = await json<{ items: { type: string; reason: string }[] }>(
      'get',
      'events',
      '-n',
      'team-c',
      '--field-selector',
      'involvedObject.kind=Repository,involvedObject.name=steal',
    );
    expect(events.items.map((event) => [event.type, event.reason])).toContainEqual([
      'Warning',
      'PathNotOwned',
    ]);
    expect(await secretExists('team-c')).toBe(false);
    expect((await startPod('team-c', 'steal')).outcome).toBe('refused');
  });

  it('credential rotation: 20 pod starts across several rotations, none fails to pull', async () => {
    // The shortest lifetime the API admits: a new credential every 40 s, the old one valid 20 s
    // longer. One pod start every 5 s spans 100 s, so three credentials at least.
    await setLifetimes('60s', '30s');
    const credentials = new Set<string>();
    const failures: string[] = [];
    for (let index = 0; index < 20; index++) {
      const slot = Date.now() + 5_000;
      credentials.add((await pullCredentials('team-b')).password);
      const result = await startPod('team-b', `rotation-${index}`);
      if (result.outcome !== 'started')
        failures.push(`rotation-${index}: ${waitingReason(result.pod)}`);
      await deletePod('team-b', `rotation-${index}`);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, slot - Date.now())));
    }
    process.stdout.write(
      `rotation: 20 pod starts across ${credentials.size} credentials, ${failures.length} failed\n`,
    );
    expect(failures).toEqual([]);
    expect(credentials.size).toBeGreaterThanOrEqual(3);
    await setLifetimes('720h', '5m');
  });

  it('faults: registry pod, node-proxy pod and leading operator deleted; each recovers', async () => {
    const teamB = await pullCredentials('team-b');
    const before = (await crane(['digest', pushedImage], teamB)).stdout.trim();
    expect(before).toMatch(/^sha256:/);

    // The registry pod, deleted while pulls go on: they fail while it is gone, then resume,
    // and what was pushed before is still there (the volume outlives the pod).
    const [registryPod] = await pods(
      'berth-system',
      'app.kubernetes.io/instance=main,app.kubernetes.io/component=registry',
    );
    await kubectl(
      '-n',
      'berth-system',
      'delete',
      'pod',
      registryPod?.metadata.name ?? '',
      '--wait=false',
    );
    let failed = 0;
    await waitFor(
      async () => {
        const digest = (await crane(['digest', pushedImage], teamB)).stdout.trim();
        if (digest !== before) failed++;
        const replacements = await pods(
          'berth-system',
          'app.kubernetes.io/instance=main,app.kubernetes.io/component=registry',
        );
        return (
          digest === before &&
          replacements.some((pod) => pod.metadata.name !== registryPod?.metadata.name && ready(pod))
        );
      },
      120_000,
      'pulls to resume from a new registry pod',
    );
    process.stdout.write(`registry pod replaced: ${failed} pulls failed while it was gone\n`);
    const pulled = await crane(['pull', pushedImage, join(work, 'after-restart.tar')], teamB);
    expect(pulled.code).toBe(0);

    // The node proxy: the next pull after it is back works.
    const [proxy] = await pods('berth-system', 'app.kubernetes.io/component=node-proxy');
    await kubectl(
      '-n',
      'berth-system',
      'delete',
      'pod',
      proxy?.metadata.name ?? '',
      '--wait=false',
    );
    // While the node has no ready proxy, the Registry says so.
    await waitFor(
      async () => (await registryCondition('Ready'))?.reason === 'NodeProxyUnavailable',
      30_000,
      'Ready=False with NodeProxyUnavailable',
    );
    await kubectl(
      '-n',
      'berth-system',
      'rollout',
      'status',
      'daemonset/berth-main-node-proxy',
      '--timeout=120s',
    );
    expect((await startPod('team-b', 'after-proxy')).outcome).toBe('started');

    // The leading operator: the other takes over and puts back a deleted Service.
    const leaseHolder = async () =>
      (
        await json<{ items: { spec: { holderIdentity?: string } }[] }>(
          'get',
          'lease',
          '-n',
          'berth-system',
        )
      ).items
        .map((lease) => lease.spec.holderIdentity ?? '')
        .find(Boolean) ?? '';
    const leader = await leaseHolder();
    const operators = await pods('berth-system', 'app.kubernetes.io/component=operator');
    const leaderPod = operators.find((pod) => leader.startsWith(`${pod.metadata.name}-`));
    await kubectl(
      '-n',
      'berth-system',
      'delete',
      'pod',
      leaderPod?.metadata.name ?? '',
      '--wait=false',
    );
    await waitFor(
      async () => !['', leader].includes(await leaseHolder()),
      90_000,
      'another operator to take the Lease',
    );
    await kubectl('-n', 'berth-system', 'delete', 'service', 'berth-main');
    await waitFor(
      async () =>
        (
          await kubectl(
            '-n',
            'berth-system',
            'get',
            'service',
            'berth-main',
            '--ignore-not-found',
            '-o',
            'name',
          )
        ).stdout.trim() !== '',
      60_000,
      'the Service to be put back',
    );
    // The new Service has a new ClusterIP, so the node proxies roll to it; Ready comes back.
    await waitFor(
      async () => (await registryCondition('Ready'))?.status === 'True',
      60_000,
      'the Registry to be Ready again',
    );
  });

  it('node isolation (KEP-2535): a namespace with no pull right and an image already on the node', async () => {
    // team-b pulled the image onto the node; team-c may not pull it. Each policy gets a new pod
    // with imagePullPolicy IfNotPresent.
    const outcomes: Record<string, string> = {};
    const tryPolicy = async (policy: string | undefined, pod: string) => {
      if (policy !== undefined) {
        await cluster.restartKubelet({ imagePullCredentialsVerificationPolicy: policy });
        await waitFor(
          async () =>
            (
              await kubectl(
                'get',
                'node',
                '-o',
                'jsonpath={.items[0].status.conditions[?(@.type=="Ready")].status}',
              )
            ).stdout === 'True',
          60_000,
          'the node to be Ready again',
        );
      }
      outcomes[policy ?? 'default'] = (await startPod('team-c', pod, 'IfNotPresent')).outcome;
    };
    await tryPolicy(undefined, 'cached-default');
    await tryPolicy('NeverVerify', 'cached-never-verify');
    await tryPolicy('AlwaysVerify', 'cached-always-verify');
    process.stdout.write(
      `KEP-2535, a pod of a namespace with no pull right: ${JSON.stringify(outcomes)}\n`,
    );
    // NeverVerify is the old behaviour: whatever is on the node runs, whoever asks.
    expect(outcomes).toEqual({
      default: 'refused',
      NeverVerify: 'started',
      AlwaysVerify: 'refused',
    });
  });

  it('removes every grant when the Repository is deleted', async () => {
    await kubectl('delete', 'repository', 'web', '-n', 'team-a');
    await waitFor(
      async () =>
        !(await secretExists('team-a')) &&
        !(await secretExists('team-b')) &&
        !(await serviceAccountEntries('team-b')).includes(secretName) &&
        !(await serviceAccountEntries('team-b', 'builder')).includes(secretName),
      10_000,
      'every Secret and entry to go',
    );
    expect(await serviceAccountEntries('team-b')).toEqual(['user-secret']);
    expect((await startPod('team-b', 'after-delete')).outcome).toBe('refused');
  });
});
