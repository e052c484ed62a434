import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parse, stringify } from 'yaml';
import { repositoryRoot } from '../support/cli.ts';
import {
  clusterLayout,
  clusterToolNames,
  removeStaleClusters,
  startCluster,
  type Cluster,
  type KubeletOptions,
} from '../support/cluster/cluster.ts';
import { startNodeS3Server, type NodeS3Server } from '../support/cluster/s3-server.ts';
import { leftovers } from '../support/cluster/teardown.ts';
import { importBerthImage, restrictedPodSpec } from '../support/cluster/berth-image.ts';
import { resourceExists } from '../support/control-plane.ts';
import { run, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

/** Berth's own image under another name, as the operator's overlay sets it. */
const berthImage = 'berth.test/berth:override';
const image = 'localhost:5000/team-a/web:1';
const audience = 'berth.dev/berth-system/main';
const secretName = 'berth-pull.berth-system.main';
const tenants = ['team-a', 'team-b', 'team-c', 'team-d'];
const registrySelector = 'app.kubernetes.io/instance=main,app.kubernetes.io/component=registry';

type Mode = 'Secrets' | 'CredentialProvider' | 'Both';
interface Pod {
  metadata: { name: string; namespace: string };
  spec: { imagePullSecrets?: { name: string }[] };
  status: {
    conditions?: { type: string; status: string }[];
    containerStatuses?: { state: { waiting?: { reason: string; message?: string } } }[];
  };
}
interface LogLine {
  msg?: string;
  time?: string | number;
  namespace?: string;
  serviceAccount?: string;
}

/**
 * KEP-4412 on a real kubelet: Berth's credential provider installed on the node by
 * deploy/credential-provider's DaemonSet, the kubelet started with the CredentialProviderConfig
 * and bin dir that DaemonSet wrote, and a Registry (on S3, so its pods roll without a gap)
 * switched between pull Secrets and pods' own ServiceAccount tokens.
 */
describeWithTools(
  [...clusterToolNames, 'crane', 'versitygw'],
  'the kubelet credential provider on a real cluster',
  () => {
    let cluster: Cluster;
    let s3: NodeS3Server;
    let work: string;
    let providerOptions: KubeletOptions;
    /** Stops a test's pull loop when the test fails before it does. */
    let stopLoop: (() => Promise<unknown>) | undefined;
    const kubectl = (...args: string[]) => cluster.kubectl(args);
    const json = async <T>(...args: string[]): Promise<T> =>
      JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
    const ready = (pod: Pod): boolean =>
      pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    const waiting = (pod: Pod) => pod.status.containerStatuses?.[0]?.state.waiting;

    const podManifest = (namespace: string, name: string, pullPolicy: 'Always' | 'IfNotPresent') =>
      stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace, labels: { app: 'web' } },
        spec: restrictedPodSpec(image, pullPolicy),
      });

    /** Creates a pod; resolves when it runs (`started`) or its pull fails (`refused`). */
    const startPod = async (
      namespace: string,
      name: string,
      pullPolicy: 'Always' | 'IfNotPresent' = 'Always',
    ): Promise<{ outcome: 'started' | 'refused'; pod: Pod }> => {
      await cluster.kubectl(['apply', '-f', '-'], {
        input: podManifest(namespace, name, pullPolicy),
      });
      let outcome: 'started' | 'refused' | undefined;
      let pod: Pod | undefined;
      await waitFor(
        async () => {
          pod = await json<Pod>('get', 'pod', name, '-n', namespace);
          if (ready(pod)) outcome = 'started';
          else if (['ErrImagePull', 'ImagePullBackOff'].includes(waiting(pod)?.reason ?? ''))
            outcome = 'refused';
          return outcome !== undefined;
        },
        90_000,
        `pod ${namespace}/${name} to start or fail its pull`,
      );
      return { outcome: outcome as 'started' | 'refused', pod: pod as Pod };
    };
    const deletePod = (namespace: string, name: string) =>
      kubectl('delete', 'pod', name, '-n', namespace, '--wait=false', '--ignore-not-found');
    const pullFailures = async (namespace: string, name: string): Promise<string> =>
      (
        await json<{ items: { message: string }[] }>(
          'get',
          'events',
          '-n',
          namespace,
          '--field-selector',
          `involvedObject.name=${name},reason=Failed`,
        )
      ).items
        .map((event) => event.message)
        .join('\n');

    const setMode = (mode: Mode) =>
      kubectl(
        '-n',
        'berth-system',
        'patch',
        'registry',
        'main',
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { pullSecrets: { mode } } }),
      );
    const setPullNamespaces = (namespaces: string[]) =>
      kubectl(
        '-n',
        'team-a',
        'patch',
        'repository',
        'web',
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { pull: { namespaces } } }),
      );
    const deploymentGeneration = async (): Promise<number> =>
      (
        await json<{ metadata: { generation: number } }>(
          'get',
          'deployment',
          'berth-main',
          '-n',
          'berth-system',
        )
      ).metadata.generation;
    /**
     * Switches the mode and, when the registry's configuration changes with it, waits until the
     * operator has rolled the Deployment: every pod of the new template Ready, the old ones gone.
     */
    const switchMode = async (mode: Mode, rolls: boolean): Promise<void> => {
      const before = await deploymentGeneration();
      await setMode(mode);
      if (!rolls) return;
      await waitFor(
        async () => (await deploymentGeneration()) > before,
        30_000,
        'the operator to roll the registry',
      );
      // Every registry pod runs the new configuration and is Ready, the old ones are gone
      // (read from the pods: the Deployment's status lags behind on a loaded machine).
      const key = 'berth.dev/config-sha256';
      let seen = '';
      try {
        await waitFor(
          async () => {
            const wanted = (
              await json<{
                spec: { template: { metadata: { annotations: Record<string, string> } } };
              }>('get', 'deployment', 'berth-main', '-n', 'berth-system')
            ).spec.template.metadata.annotations[key];
            const pods = (
              await json<{
                items: (Pod & {
                  metadata: { annotations?: Record<string, string>; deletionTimestamp?: string };
                })[];
              }>('get', 'pods', '-n', 'berth-system', '-l', registrySelector)
            ).items;
            seen = JSON.stringify(
              pods.map((pod) => [
                pod.metadata.name,
                pod.metadata.annotations?.[key] === wanted,
                ready(pod),
                pod.metadata.deletionTimestamp ?? '',
              ]),
            );
            return (
              pods.length > 0 &&
              pods.every(
                (pod) =>
                  pod.metadata.annotations?.[key] === wanted &&
                  ready(pod) &&
                  !pod.metadata.deletionTimestamp,
              )
            );
          },
          300_000,
          'the registry pods to run the new configuration',
        );
      } catch (error) {
        throw new Error(`${String(error)}: pods [name, new config, ready, deleting] ${seen}`);
      }
    };
    const secretExists = (namespace: string) =>
      resourceExists(cluster, 'secret', secretName, namespace);
    const serviceAccountEntries = async (namespace: string): Promise<string[]> =>
      (
        (
          await json<{ imagePullSecrets?: { name: string }[] }>(
            'get',
            'sa',
            'default',
            '-n',
            namespace,
          )
        ).imagePullSecrets ?? []
      ).map((entry) => entry.name);
    /** Whether any tenant holds Berth's pull Secret or an entry naming it. */
    const grantsWritten = async (): Promise<{ secrets: number; entries: number }> => {
      let secrets = 0;
      let entries = 0;
      for (const namespace of ['team-a', 'team-b']) {
        if (await secretExists(namespace)) secrets++;
        if ((await serviceAccountEntries(namespace)).includes(secretName)) entries++;
      }
      return { secrets, entries };
    };
    /** The registry pods' log lines from `since` on (epoch milliseconds). */
    const registryLog = async (since: number): Promise<LogLine[]> =>
      (
        await kubectl(
          '-n',
          'berth-system',
          'logs',
          '-l',
          registrySelector,
          '--tail=-1',
          '--prefix=false',
        )
      ).stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as LogLine)
        .filter((line) => new Date(line.time ?? 0).getTime() >= since);
    /** crane on the node with a ServiceAccount token of the audience as the password. */
    const craneWithToken = async (token: string, ...args: string[]) => {
      const config = join(work, `docker-token-${Date.now()}`);
      await mkdir(config, { recursive: true });
      await writeFile(
        join(config, 'config.json'),
        JSON.stringify({
          auths: {
            'localhost:5000': { auth: Buffer.from(`serviceaccount:${token}`).toString('base64') },
          },
        }),
      );
      return cluster.onNode('crane', ['--insecure', ...args], {
        env: { ...process.env, DOCKER_CONFIG: config },
        allowFailure: true,
      });
    };
    /** What the registry's /token grants a ServiceAccount token for pulling the image. */
    const tokenAccess = async (token: string): Promise<unknown[]> => {
      const answer = await cluster.onNode(
        'curl',
        [
          '-s',
          '-u',
          `serviceaccount:${token}`,
          'http://localhost:5000/token?service=berth-main.berth-system&scope=repository:team-a/web:pull',
        ],
        { allowFailure: true },
      );
      const issued = (JSON.parse(answer.stdout || '{}') as { token?: string }).token ?? '';
      const payload = issued.split('.')[1];
      if (!payload) throw new Error(`/token answered ${answer.stdout}`);
      return (
        (JSON.parse(Buffer.from(payload, 'base64url').toString()) as { access?: unknown[] })
          .access ?? []
      );
    };
    const nodeReady = () =>
      waitFor(
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
        'the node to be Ready',
      );

    /**
     * Starts a pod of team-b every cycle until stopped, each deleted once its outcome is known:
     * what a Deployment rolling all the time would ask of the kubelet.
     */
    const pullLoop = (label: () => string) => {
      let stopped = false;
      const outcomes: { name: string; phase: string; outcome: string; reason?: string }[] = [];
      const done = (async () => {
        for (let index = 0; !stopped; index++) {
          const name = `loop-${Date.now()}-${index}`;
          const phase = label();
          const { outcome, pod } = await startPod('team-b', name);
          outcomes.push({
            name,
            phase,
            outcome,
            ...(outcome === 'refused' ? { reason: waiting(pod)?.message ?? '' } : {}),
          });
          await deletePod('team-b', name);
        }
      })();
      return {
        outcomes,
        stop: async () => {
          stopped = true;
          await done;
          return outcomes;
        },
      };
    };

    beforeAll(async () => {
      cluster = await startCluster();
      work = join(cluster.root, 'test');
      await mkdir(work, { recursive: true });
      await importBerthImage(cluster, berthImage);
      s3 = await startNodeS3Server(cluster);

      // The operator, as berth.test.ts installs it.
      const overlay = join(work, 'overlay');
      await mkdir(overlay, { recursive: true });
      const [name, tag] = berthImage.split(':') as [string, string];
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

      // The installer DaemonSet as shipped, its host directory under the cluster's root.
      const hostDirectory = join(cluster.root, 'credential-provider');
      const daemonSet = parse(
        await readFile(
          join(repositoryRoot, 'deploy', 'credential-provider', 'daemonset.yaml'),
          'utf8',
        ),
      ) as {
        metadata: { namespace?: string };
        spec: {
          template: {
            spec: {
              containers: { image: string; imagePullPolicy?: string }[];
              volumes: { hostPath: { path: string } }[];
            };
          };
        };
      };
      const pod = daemonSet.spec.template.spec;
      daemonSet.metadata.namespace = 'berth-system';
      (pod.containers[0] as { image: string }).image = berthImage;
      (pod.containers[0] as { imagePullPolicy?: string }).imagePullPolicy = 'IfNotPresent';
      (pod.volumes[0] as { hostPath: { path: string } }).hostPath.path = hostDirectory;
      await cluster.kubectl(['apply', '-f', '-'], { input: stringify(daemonSet) });
      await kubectl(
        '-n',
        'berth-system',
        'rollout',
        'status',
        'daemonset/berth-credential-provider',
        '--timeout=120s',
      );
      const launcher = join(hostDirectory, 'bin', 'berth-credential-provider');
      try {
        await waitFor(
          async () => (await stat(launcher).catch(() => undefined))?.isFile() ?? false,
          120_000,
          'the installed launcher',
        );
      } catch (error) {
        const pods = await kubectl(
          '-n',
          'berth-system',
          'get',
          'pods',
          '-l',
          'app.kubernetes.io/component=credential-provider',
          '-o',
          'yaml',
        );
        const logs = await cluster.kubectl(
          ['-n', 'berth-system', 'logs', 'daemonset/berth-credential-provider'],
          { allowFailure: true },
        );
        throw new Error(
          `${String(error)}\n${pods.stdout.slice(-3000)}\n${logs.stdout}${logs.stderr}`,
        );
      }
      providerOptions = {
        credentialProvider: {
          configFile: join(hostDirectory, 'credential-provider-config.yaml'),
          binDir: join(hostDirectory, 'bin'),
        },
      };
      await cluster.restartKubelet(providerOptions);
      await nodeReady();
      await kubectl(
        '-n',
        'berth-system',
        'rollout',
        'status',
        'deployment/berth-operator',
        '--timeout=180s',
      );

      for (const namespace of tenants) await kubectl('create', 'namespace', namespace);
      await cluster.kubectl(['apply', '-f', '-'], {
        input: [
          {
            apiVersion: 'v1',
            kind: 'Secret',
            metadata: { name: 'main-s3', namespace: 'berth-system' },
            stringData: {
              AWS_ACCESS_KEY_ID: s3.accessKeyId,
              AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
            },
          },
          {
            apiVersion: 'berth.dev/v1alpha1',
            kind: 'Registry',
            metadata: { name: 'main', namespace: 'berth-system' },
            spec: {
              storage: {
                s3: {
                  bucket: s3.bucket,
                  endpoint: s3.endpoint,
                  forcePathStyle: true,
                  credentialsSecret: 'main-s3',
                },
              },
              nodeAccess: { mode: 'NodeProxy', port: 5000 },
              pullSecrets: { mode: 'Secrets' },
              auth: { anonymousPull: false },
            },
          },
          {
            apiVersion: 'berth.dev/v1alpha1',
            kind: 'Repository',
            metadata: { name: 'web', namespace: 'team-a' },
            spec: {
              registry: { name: 'main', namespace: 'berth-system' },
              visibility: 'Private',
              pull: { namespaces: ['team-b'] },
            },
          },
        ]
          .map((object) => stringify(object))
          .join('---\n'),
      });
      await kubectl(
        '-n',
        'berth-system',
        'wait',
        '--for=condition=Ready',
        'registry/main',
        '--timeout=240s',
      );
      const secret = await json<{ data: Record<string, string> }>(
        'get',
        'secret',
        'berth-main-admin',
        '-n',
        'berth-system',
      );
      const field = (key: string) => Buffer.from(secret.data[key] ?? '', 'base64').toString();
      const config = join(work, 'docker-admin');
      await mkdir(config, { recursive: true });
      const env = { ...process.env, DOCKER_CONFIG: config };
      await cluster.onNode(
        'crane',
        ['auth', 'login', 'localhost:5000', '-u', field('username'), '-p', field('password')],
        { env },
      );
      const layout = join(work, 'busybox-layout');
      await mkdir(layout, { recursive: true });
      await run('tar', [
        '-xf',
        join(cluster.root, 'images', 'berth-test-busybox-1.oci.tar'),
        '-C',
        layout,
      ]);
      await cluster.onNode('crane', ['--insecure', 'push', layout, image], { env });
      await waitFor(
        async () => (await grantsWritten()).entries === 2,
        30_000,
        'pull Secrets in team-a and team-b',
      );
    }, 1_200_000);

    afterEach(async () => {
      await stopLoop?.().catch(() => undefined);
      stopLoop = undefined;
    }, 120_000);

    afterAll(async () => {
      if (!cluster) return;
      await s3?.stop();
      cluster.abandon();
      await removeStaleClusters();
      expect(await leftovers(clusterLayout(cluster.network.name), cluster.network.name)).toEqual(
        [],
      );
    }, 180_000);

    it('migrates Secrets -> Both -> CredentialProvider under a pull loop: no pull fails, Berth’s Secrets and entries go', async () => {
      let phase: string = 'Secrets';
      const loop = pullLoop(() => phase);
      stopLoop = loop.stop;
      await waitFor(async () => loop.outcomes.length >= 2, 120_000, 'two pulls with Secrets');
      phase = 'Both';
      // The registry's new pods take tokens; the old ones stay until they are Ready.
      await switchMode('Both', true);
      const atBoth = loop.outcomes.length;
      await waitFor(async () => loop.outcomes.length >= atBoth + 2, 120_000, 'two pulls in Both');
      phase = 'CredentialProvider';
      await switchMode('CredentialProvider', false);
      await waitFor(
        async () => {
          const { secrets, entries } = await grantsWritten();
          return secrets + entries === 0;
        },
        30_000,
        'Berth’s Secrets and entries to go',
      );
      const atProvider = loop.outcomes.length;
      await waitFor(
        async () => loop.outcomes.length >= atProvider + 3,
        120_000,
        'three pulls with tokens only',
      );
      const outcomes = await loop.stop();
      const byPhase = (name: string) => outcomes.filter((o) => o.phase === name).length;
      process.stdout.write(
        `migration Secrets -> Both -> CredentialProvider: ${outcomes.length} pod starts ` +
          `(${byPhase('Secrets')} Secrets, ${byPhase('Both')} Both, ${byPhase('CredentialProvider')} CredentialProvider), ` +
          `${outcomes.filter((o) => o.outcome !== 'started').length} failed\n`,
      );
      expect(outcomes.filter((o) => o.outcome !== 'started')).toEqual([]);
      expect(await grantsWritten()).toEqual({ secrets: 0, entries: 0 });
    });

    it('CredentialProvider: an allowed namespace pulls with no Secret and no imagePullSecrets anywhere; a refused one gets the authorization error', async () => {
      const secrets = await json<{ items: { metadata: { namespace: string; name: string } }[] }>(
        'get',
        'secrets',
        '-A',
      );
      expect(
        secrets.items.filter(
          (item) =>
            tenants.includes(item.metadata.namespace) ||
            item.metadata.name.startsWith('berth-pull.'),
        ),
      ).toEqual([]);
      const since = Date.now();
      const allowed = await startPod('team-b', 'allowed');
      expect(allowed.outcome).toBe('started');
      expect(allowed.pod.spec.imagePullSecrets).toBeUndefined();
      for (const namespace of tenants) {
        const accounts = await json<{ items: { imagePullSecrets?: unknown[] }[] }>(
          'get',
          'sa',
          '-n',
          namespace,
        );
        expect(accounts.items.flatMap((account) => account.imagePullSecrets ?? [])).toEqual([]);
      }
      const refused = await startPod('team-c', 'refused');
      expect(refused.outcome).toBe('refused');
      expect(await pullFailures('team-c', 'refused')).toMatch(
        /insufficient_scope|denied|403|unauthorized/i,
      );
      const logins = (await registryLog(since)).filter((l) => l.msg === 'service account login');
      expect(logins.map((l) => l.namespace)).toEqual(expect.arrayContaining(['team-b', 'team-c']));
      await deletePod('team-b', 'allowed');
      await deletePod('team-c', 'refused');
    });

    it('removing a namespace’s right refuses its next new pod within a second; restoring it lets the next pod start', async () => {
      const token = (
        await kubectl('create', 'token', 'default', '-n', 'team-b', '--audience', audience)
      ).stdout.trim();
      expect((await craneWithToken(token, 'digest', image)).code).toBe(0);
      const patchStarted = Date.now();
      await setPullNamespaces([]);
      // The change is made once the API server has answered the patch.
      const changed = Date.now();
      // How long until the registry refuses team-b's token, polled with curl on the node (a few
      // ms a probe): the figure is the end of the first probe that got no access.
      let refusedAfter = -1;
      let probes = 0;
      const polling = (async () => {
        while (Date.now() - changed < 5_000) {
          probes++;
          if ((await tokenAccess(token)).length === 0) {
            refusedAfter = Date.now() - changed;
            return;
          }
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, changed + 1000 - Date.now())));
      const podCreatedAfter = Date.now() - changed;
      const revoked = await startPod('team-b', 'revoked');
      await polling;
      process.stdout.write(
        `right removed (kubectl patch ${changed - patchStarted} ms) -> registry refuses team-b's token ${refusedAfter} ms after the patch returned (${probes} probes); ` +
          `a pod created ${podCreatedAfter} ms after: ${revoked.outcome}\n`,
      );
      expect(revoked.outcome).toBe('refused');
      expect(await pullFailures('team-b', 'revoked')).toMatch(
        /insufficient_scope|denied|403|unauthorized/i,
      );
      expect(refusedAfter).toBeGreaterThanOrEqual(0);
      expect(refusedAfter).toBeLessThan(1000);
      await deletePod('team-b', 'revoked');

      await setPullNamespaces(['team-b']);
      await waitFor(
        async () => (await craneWithToken(token, 'digest', image)).code === 0,
        5_000,
        'the right to come back',
      );
      expect((await startPod('team-b', 'restored')).outcome).toBe('started');
      await deletePod('team-b', 'restored');
    });

    it('two namespaces pulling one image each log in with their own token; with AlwaysVerify a namespace without the right cannot start the image on the node', async () => {
      await setPullNamespaces(['team-b', 'team-c']);
      await waitFor(
        async () => {
          const token = (
            await kubectl('create', 'token', 'default', '-n', 'team-c', '--audience', audience)
          ).stdout.trim();
          return (await craneWithToken(token, 'digest', image)).code === 0;
        },
        5_000,
        'team-c to be allowed',
      );
      const since = Date.now();
      const [first, second] = await Promise.all([
        startPod('team-b', 'same-image'),
        startPod('team-c', 'same-image'),
      ]);
      expect([first.outcome, second.outcome]).toEqual(['started', 'started']);
      // Each pull asked the registry for a token with its own ServiceAccount's: the kubelet's
      // cache did not give team-c team-b's answer, nor the other way round.
      const logins = (await registryLog(since)).filter((l) => l.msg === 'service account login');
      process.stdout.write(
        `same image, two namespaces: registry logins ${JSON.stringify(logins.map((l) => `${l.namespace}/${l.serviceAccount}`))}\n`,
      );
      expect(new Set(logins.map((l) => l.namespace))).toEqual(new Set(['team-b', 'team-c']));
      await deletePod('team-b', 'same-image');
      await deletePod('team-c', 'same-image');

      // team-c loses its right; the image stays on the node.
      await setPullNamespaces(['team-b']);
      await cluster.restartKubelet({
        ...providerOptions,
        imagePullCredentialsVerificationPolicy: 'AlwaysVerify',
      });
      await nodeReady();
      // team-d never had the right; team-c had it and pulled the image, then lost it.
      const never = await startPod('team-d', 'cached', 'IfNotPresent');
      const revoked = await startPod('team-c', 'cached', 'IfNotPresent');
      const owner = await startPod('team-b', 'cached', 'IfNotPresent');
      process.stdout.write(
        `AlwaysVerify, image on the node, IfNotPresent: team-d (never allowed) ${never.outcome}, ` +
          `team-c (allowed when it pulled, revoked since) ${revoked.outcome}, team-b ${owner.outcome}\n`,
      );
      expect(never.outcome).toBe('refused');
      expect(await pullFailures('team-d', 'cached')).toMatch(
        /insufficient_scope|denied|403|unauthorized/i,
      );
      expect(owner.outcome).toBe('started');
      for (const namespace of ['team-b', 'team-c', 'team-d']) await deletePod(namespace, 'cached');
      // AlwaysVerify also holds back images loaded onto the node without a pull, Berth's own
      // among them: the registry pods the next test rolls could not start.
      await cluster.restartKubelet(providerOptions);
      await nodeReady();
    });

    it('migrates back CredentialProvider -> Both -> Secrets under a pull loop: no pull fails, Berth’s Secrets and entries come back', async () => {
      let phase: string = 'CredentialProvider';
      const loop = pullLoop(() => phase);
      stopLoop = loop.stop;
      await waitFor(async () => loop.outcomes.length >= 2, 120_000, 'two pulls with tokens');
      phase = 'Both';
      await switchMode('Both', false);
      await waitFor(
        async () => {
          const { secrets, entries } = await grantsWritten();
          return secrets === 2 && entries === 2;
        },
        30_000,
        'Berth’s Secrets and entries to come back',
      );
      const atBoth = loop.outcomes.length;
      await waitFor(async () => loop.outcomes.length >= atBoth + 2, 120_000, 'two pulls in Both');
      phase = 'Secrets';
      await switchMode('Secrets', true);
      const atSecrets = loop.outcomes.length;
      await waitFor(
        async () => loop.outcomes.length >= atSecrets + 3,
        120_000,
        'three pulls with Secrets only',
      );
      const outcomes = await loop.stop();
      const byPhase = (name: string) => outcomes.filter((o) => o.phase === name).length;
      process.stdout.write(
        `migration CredentialProvider -> Both -> Secrets: ${outcomes.length} pod starts ` +
          `(${byPhase('CredentialProvider')} CredentialProvider, ${byPhase('Both')} Both, ${byPhase('Secrets')} Secrets), ` +
          `${outcomes.filter((o) => o.outcome !== 'started').length} failed\n`,
      );
      expect(outcomes.filter((o) => o.outcome !== 'started')).toEqual([]);
      expect(await grantsWritten()).toEqual({ secrets: 2, entries: 2 });
      // The registry no longer takes ServiceAccount tokens.
      const token = (
        await kubectl('create', 'token', 'default', '-n', 'team-b', '--audience', audience)
      ).stdout.trim();
      let refused = '';
      await waitFor(
        async () => {
          refused = (await craneWithToken(token, 'digest', image)).stderr;
          return /UNAUTHORIZED|401/.test(refused);
        },
        30_000,
        'the registry to refuse ServiceAccount tokens',
      );
    });
  },
);
