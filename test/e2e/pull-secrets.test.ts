import { join } from 'node:path';
import { stringify } from 'yaml';
import { startContainerd, type Containerd } from '../support/containerd.ts';
import {
  controlPlaneToolNames,
  getObject,
  resourceExists,
  serviceAccountCan,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { randomLayerTar } from '../support/images.ts';
import {
  runDaemonSet,
  runDeployment,
  type RunningNodeProxy,
  type RunningPod,
} from '../support/kubelet.ts';
import { pullAsKubelet, removeImage } from '../support/kubelet-pull.ts';
import { requestText, tokenFor } from '../support/node-proxy.ts';
import { installBerth, operatorKubeconfig, startOperatorProcess } from '../support/operator.ts';
import { Daemon, freePort, run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { describeWithTools, findTool } from '../support/tools.ts';

interface Condition {
  type: string;
  status: string;
  reason: string;
}

const secretName = 'berth-pull.berth-system.main';

/**
 * Repository policies end to end: a real API server and controller manager, the operator with
 * deploy/'s RBAC, the registry in Kubernetes mode with its own ServiceAccount, and containerd's
 * CRI pulling with what the kubelet would find for a pod.
 */
describeWithTools(
  [...controlPlaneToolNames, 'crane', 'crictl', 'containerd', 'ctr'],
  'pull secrets on a real API server, pulled by containerd CRI through the node proxy',
  () => {
    let cluster: ControlPlane;
    let work: Awaited<ReturnType<typeof temporaryDirectory>>;
    let operator: Daemon;
    let pod: RunningPod;
    let nodeProxy: RunningNodeProxy;
    let registryPort: number;
    let containerd: Containerd;
    let crictl: { binary: string; socket: string };
    let image: string;
    let port: number;

    const kubectl = (...args: string[]) => cluster.kubectl(args);
    const getJson = async <T>(...args: string[]): Promise<T> =>
      JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
    const secretExists = (namespace: string): Promise<boolean> =>
      resourceExists(cluster, 'secret', secretName, namespace);
    const entries = async (namespace: string, account = 'default'): Promise<string[]> =>
      (
        (
          await getJson<{ imagePullSecrets?: { name: string }[] }>(
            'get',
            'serviceaccount',
            account,
            '-n',
            namespace,
          )
        ).imagePullSecrets ?? []
      ).map((entry) => entry.name);
    const pull = (namespace: string, serviceAccount = 'default') =>
      pullAsKubelet(cluster, crictl, { namespace, serviceAccount, image });
    /** How long until `check` holds; waits up to 5 s so a slow result is reported, not timed out. */
    const timed = async (check: () => Promise<boolean>, what: string): Promise<number> => {
      const started = Date.now();
      await waitFor(check, 5_000, what);
      return Date.now() - started;
    };
    const repository = (pull: object) =>
      stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Repository',
        metadata: { name: 'web', namespace: 'team-a' },
        spec: { registry: { name: 'main', namespace: 'berth-system' }, pull },
      });
    /** Applies a Repository the way Argo CD does: server-side apply under its own field manager. */
    const applyAsGitOps = (manifest: string) =>
      run(
        findTool('kubectl') as string,
        [
          '--kubeconfig',
          cluster.kubeconfig,
          'apply',
          '--server-side',
          '--field-manager=argocd-controller',
          '-f',
          '-',
        ],
        { input: manifest },
      );
    const grant = {
      namespaces: ['team-b'],
      namespaceSelector: { matchLabels: { 'pull-web': 'web' } },
    };

    beforeAll(async () => {
      cluster = await startControlPlane();
      work = await temporaryDirectory('pull-secrets');
      await installBerth(cluster);
      for (const namespace of ['team-a', 'team-b', 'team-c', 'team-d'])
        await kubectl('create', 'namespace', namespace);
      // A user's own entry, which Berth must never touch.
      await waitFor(
        async () => await resourceExists(cluster, 'serviceaccount', 'default', 'team-b'),
        30_000,
        'the default ServiceAccount',
      );
      await kubectl(
        'patch',
        'serviceaccount',
        'default',
        '-n',
        'team-b',
        '--type=merge',
        '-p',
        '{"imagePullSecrets":[{"name":"user-secret"}]}',
      );

      operator = startOperatorProcess(await operatorKubeconfig(cluster, work.path), [
        '--no-leader-elect',
      ]);
      port = await freePort();
      await run(
        findTool('kubectl') as string,
        ['--kubeconfig', cluster.kubeconfig, 'apply', '-f', '-'],
        {
          input: stringify({
            apiVersion: 'berth.dev/v1alpha1',
            kind: 'Registry',
            metadata: { name: 'main', namespace: 'berth-system' },
            spec: { nodeAccess: { mode: 'NodeProxy', port } },
          }),
        },
      );
      await waitFor(
        async () => await resourceExists(cluster, 'deployment', 'berth-main', 'berth-system'),
        30_000,
        `the registry Deployment (operator: ${operator.output})`,
      );
      // The registry pod answers on a port of its own; the node proxy, as its DaemonSet runs it,
      // on localhost:<nodeAccess.port>, in front of it over TLS verified with the operator's CA.
      registryPort = await freePort();
      pod = await runDeployment(cluster, 'berth-system', 'berth-main', join(work.path, 'pod'), {
        port: registryPort,
      });
      nodeProxy = await runDaemonSet(
        cluster,
        'berth-system',
        'berth-main-node-proxy',
        join(work.path, 'node'),
        `https://localhost:${registryPort}`,
      );
      expect(nodeProxy.host).toBe(`localhost:${port}`);
      // containerd with no registry configuration at all: localhost is plain HTTP to it.
      const containerdDirectory = join(work.path, 'containerd');
      containerd = await startContainerd(
        { containerd: findTool('containerd') as string, ctr: findTool('ctr') as string },
        containerdDirectory,
      );
      crictl = { binary: findTool('crictl') as string, socket: containerd.socket };

      // The image, pushed with the admin credential.
      const admin = await getJson<{ data: Record<string, string> }>(
        'get',
        'secret',
        'berth-main-admin',
        '-n',
        'berth-system',
      );
      const password = Buffer.from(admin.data.password as string, 'base64').toString('utf8');
      const env = { ...process.env, DOCKER_CONFIG: join(work.path, 'docker') };
      const crane = findTool('crane') as string;
      await run(crane, ['auth', 'login', pod.host, '-u', 'admin', '-p', password, '--insecure'], {
        env,
      });
      image = `localhost:${port}/team-a/web:1`;
      const layer = await randomLayerTar(work.path, 'layer', 256 * 1024);
      await run(crane, ['append', '--insecure', '-f', layer, '-t', `${pod.host}/team-a/web:1`], {
        env,
      });
    });

    afterAll(async () => {
      await containerd?.stop();
      await nodeProxy?.stop();
      await pod?.stop();
      await operator?.stop();
      await cluster?.stop();
      await work?.remove();
    });

    it('gives exactly the allowed namespaces a pull Secret that containerd pulls with', async () => {
      await applyAsGitOps(repository(grant));
      await waitFor(
        async () =>
          (await secretExists('team-b')) && (await entries('team-b')).includes(secretName),
        10_000,
        `the pull secret in team-b (operator: ${operator.output})`,
      );
      expect(await secretExists('team-a')).toBe(true);
      expect(await secretExists('team-c')).toBe(false);

      const allowed = await pull('team-b');
      expect(allowed.secret).toBe(secretName);
      expect(allowed.username).toBe('team-b');
      expect({ code: allowed.result.code, output: allowed.result.stderr }).toEqual({
        code: 0,
        output: expect.any(String),
      });
      await removeImage(crictl, image);

      const refused = await pull('team-c');
      expect(refused.secret).toBeUndefined();
      expect(refused.result.code).not.toBe(0);
      expect(`${refused.result.stdout}${refused.result.stderr}`).toMatch(
        /pull access denied|insufficient_scope|401 Unauthorized/i,
      );

      const status = await getJson<{
        status: { conditions: Condition[]; url: string; pullNamespaces: number };
      }>('get', 'repository', 'web', '-n', 'team-a');
      expect(status.status.conditions.find((c) => c.type === 'Ready')).toMatchObject({
        status: 'True',
        reason: 'PullSecretsIssued',
      });
      expect(status.status.url).toBe(`localhost:${port}/team-a/web`);
      expect(status.status.pullNamespaces).toBe(2);

      // The registry pod reads its policy with its own ServiceAccount, and can read nothing else.
      const registryCan = (verb: string, resource: string) =>
        serviceAccountCan(
          cluster,
          { namespace: 'berth-system', name: 'berth-main' },
          verb,
          resource,
        );
      expect(await registryCan('watch', 'repositories.berth.dev')).toBe('yes');
      expect(await registryCan('list', 'namespaces')).toBe('yes');
      expect(await registryCan('get', 'secrets')).toBe('no');
      expect(await registryCan('patch', 'repositories.berth.dev')).toBe('no');
    });

    it('follows namespace labels and new ServiceAccounts within 1 s, and revokes at once', async () => {
      await kubectl('label', 'namespace', 'team-d', 'pull-web=web');
      const granted = await timed(
        async () =>
          (await secretExists('team-d')) && (await entries('team-d')).includes(secretName),
        'team-d to get the Secret and the ServiceAccount entry',
      );
      expect(granted).toBeLessThan(1000);
      const allowed = await pull('team-d');
      expect(allowed.result.code).toBe(0);
      await removeImage(crictl, image);

      await kubectl('create', 'serviceaccount', 'builder', '-n', 'team-b');
      const account = await timed(
        async () => (await entries('team-b', 'builder')).includes(secretName),
        'a new ServiceAccount to get the entry',
      );
      expect(account).toBeLessThan(1000);

      // The credential team-d holds now, tried directly against the registry after revocation.
      const credential = { username: allowed.username, password: allowed.password };
      await kubectl('label', 'namespace', 'team-d', 'pull-web-');
      const revoked = await timed(
        async () =>
          !(await secretExists('team-d')) &&
          !(await entries('team-d')).includes(secretName) &&
          (await manifestStatus(cluster, pod, credential)) !== 200,
        'team-d to lose the Secret, the entry and its access',
      );
      expect(revoked).toBeLessThan(1000);
      expect([401, 403]).toContain(await manifestStatus(cluster, pod, credential));
      process.stdout.write(
        `pull secrets e2e: label→secret ${granted} ms, new SA→entry ${account} ms, unlabel→revoked ${revoked} ms\n`,
      );
    });

    it('rotates credentials with overlap: pulls keep working across several rotations', async () => {
      await kubectl(
        'patch',
        'registry',
        'main',
        '-n',
        'berth-system',
        '--type=merge',
        '-p',
        '{"spec":{"auth":{"credentialLifetime":"6s"}}}',
      );
      const credentials = new Set<string>();
      let failures = 0;
      const until = Date.now() + 16_000;
      let pulls = 0;
      while (Date.now() < until) {
        const attempt = await pull('team-b');
        pulls += 1;
        if (attempt.result.code !== 0) failures += 1;
        if (attempt.password) credentials.add(attempt.password);
        await removeImage(crictl, image);
      }
      process.stdout.write(
        `pull secrets e2e: ${pulls} pulls across ${credentials.size} credentials, ${failures} failed\n`,
      );
      expect(failures).toBe(0);
      expect(credentials.size).toBeGreaterThanOrEqual(3);
    });

    it('keeps users’ entries and shows GitOps tools no conflict and no drift', async () => {
      expect(await entries('team-b')).toEqual(['user-secret', secretName]);
      // Argo CD applies the same manifest again: no conflict, and a server-side diff is empty.
      await applyAsGitOps(repository(grant));
      const diff = await run(
        findTool('kubectl') as string,
        [
          '--kubeconfig',
          cluster.kubeconfig,
          'diff',
          '--server-side',
          '--field-manager=argocd-controller',
          '-f',
          '-',
        ],
        { input: repository(grant), allowFailure: true },
      );
      expect({ code: diff.code, diff: diff.stdout }).toEqual({ code: 0, diff: '' });
      const managed = await getJson<{
        metadata: { managedFields: { manager: string; subresource?: string }[] };
      }>('get', 'repository', 'web', '-n', 'team-a', '--show-managed-fields');
      for (const entry of managed.metadata.managedFields.filter(
        (field) => field.manager === 'berth-operator',
      ))
        expect(entry.subresource).toBe('status');
    });

    it('refuses a Repository that claims another namespace’s path, in status and an Event', async () => {
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
            await getJson<{ status?: { conditions?: Condition[] } }>(
              'get',
              'repository',
              'steal',
              '-n',
              'team-c',
            )
          ).status?.conditions?.some((c) => c.reason === 'PathNotOwned' && c.status === 'False') ??
          false,
        5_000,
        'the PathNotOwned condition',
      );
      const events = await getJson<{ items: { type: string; reason: string }[] }>(
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
      expect((await pull('team-c')).result.code).not.toBe(0);
    });

    it('pulls through the node proxy again after the registry process restarts', async () => {
      await pod.stop();
      pod = await runDeployment(cluster, 'berth-system', 'berth-main', join(work.path, 'pod'), {
        port: registryPort,
      });
      const pulled = await pull('team-b');
      expect({ code: pulled.result.code, stderr: pulled.result.stderr }).toMatchObject({ code: 0 });
      await removeImage(crictl, image);
    });

    it('removes every grant when the Repository is deleted', async () => {
      await kubectl('delete', 'repository', 'web', '-n', 'team-a');
      await waitFor(
        async () =>
          !(await secretExists('team-a')) &&
          !(await secretExists('team-b')) &&
          !(await entries('team-b')).includes(secretName) &&
          !(await entries('team-b', 'builder')).includes(secretName),
        5_000,
        'every Secret and entry to go',
      );
      expect(await entries('team-b')).toEqual(['user-secret']);
      const refused = await pull('team-b');
      expect(refused.result.code).not.toBe(0);
    });
  },
);

/**
 * GET of the manifest straight from the registry pod with a namespace credential, through the
 * token flow, verifying the pod's certificate with the operator's CA: the HTTP status.
 */
async function manifestStatus(
  cluster: ControlPlane,
  pod: RunningPod,
  credential: { username?: string | undefined; password?: string | undefined },
): Promise<number> {
  const secret = await getObject<{ data: Record<string, string> }>(
    cluster,
    'secret',
    'berth-main-ca',
    'berth-system',
  );
  const ca = Buffer.from(secret.data['ca.crt'] as string, 'base64');
  const base = `https://${pod.host}`;
  const token = await tokenFor(
    base,
    'team-a/web',
    { username: credential.username ?? '', password: credential.password ?? '' },
    ca,
  );
  const manifest = await requestText(
    `${base}/v2/team-a/web/manifests/1`,
    {
      Authorization: `Bearer ${token}`,
      Accept:
        'application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json',
    },
    ca,
  );
  return manifest.status;
}
