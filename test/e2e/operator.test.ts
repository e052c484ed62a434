import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  controlPlaneToolNames,
  resourceExists,
  serviceAccountCan,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { installBerth, operatorKubeconfig, startOperatorProcess } from '../support/operator.ts';
import { repositoryRoot as root } from '../support/cli.ts';
import { Daemon, freePort, run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

/**
 * The operator as users install it (`kubectl apply -k deploy/`), running with its own
 * ServiceAccount's token and RBAC, against a real API server. The harness plays the kubelet.
 */
describeWithTools(controlPlaneToolNames, 'the operator on a real API server', () => {
  let cluster: ControlPlane;
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let kubeconfig: string;
  const operators: Daemon[] = [];

  const getJson = async <T>(args: string[]): Promise<T> =>
    JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
  const exists = (kind: string, name: string, namespace = 'berth-system'): Promise<boolean> =>
    resourceExists(cluster, kind, name, namespace);
  const ready = async (): Promise<Condition | undefined> =>
    (
      await getJson<{ status?: { conditions?: Condition[] } }>([
        'get',
        'registry',
        'main',
        '-n',
        'berth-system',
      ])
    ).status?.conditions?.find((condition) => condition.type === 'Ready');

  function startOperator(ownPod?: { namespace: string; name: string }): Daemon {
    const daemon = startOperatorProcess(
      kubeconfig,
      ['--lease-duration', '3s'],
      ownPod ? { ownPod } : {},
    );
    operators.push(daemon);
    return daemon;
  }
  interface DaemonSet {
    metadata: { generation: number };
    spec: {
      template: {
        spec: { dnsPolicy: string; containers: { image: string; args: string[] }[] };
      };
    };
    status: { observedGeneration?: number; desiredNumberScheduled: number; numberReady: number };
  }
  const nodeProxyArgs = async (name = 'berth-main-node-proxy') => {
    const daemonSet = await getJson<DaemonSet>(['get', 'daemonset', name, '-n', 'berth-system']);
    const args = daemonSet.spec.template.spec.containers[0]?.args ?? [];
    return {
      upstream: args[args.indexOf('--upstream') + 1],
      tlsServerName: args[args.indexOf('--tls-server-name') + 1],
      dnsPolicy: daemonSet.spec.template.spec.dnsPolicy,
    };
  };
  const clusterIP = async (name = 'berth-main') =>
    (await getJson<{ spec: { clusterIP: string } }>(['get', 'service', name, '-n', 'berth-system']))
      .spec.clusterIP;

  beforeAll(async () => {
    cluster = await startControlPlane();
    work = await temporaryDirectory('operator');
    await installBerth(cluster);
    kubeconfig = await operatorKubeconfig(cluster, work.path);
  });

  afterAll(async () => {
    for (const daemon of operators) await daemon.stop();
    await cluster?.stop();
    await work?.remove();
  });

  it('runs with deploy/ RBAC, not as cluster admin', async () => {
    const can = (verb: string, resource: string) =>
      serviceAccountCan(
        cluster,
        { namespace: 'berth-system', name: 'berth-operator' },
        verb,
        resource,
      );
    expect(await can('watch', 'registries.berth.dev')).toBe('yes');
    expect(await can('patch', 'deployments.apps')).toBe('yes');
    expect(await can('delete', 'nodes')).toBe('no');
    expect(await can('create', 'clusterrolebindings.rbac.authorization.k8s.io')).toBe('no');
    expect(await can('update', 'registries.berth.dev')).toBe('no');
    // Its own Pod, for its image: get in its namespace, nothing more.
    const canInNamespace = async (verb: string, resource: string, namespace: string) =>
      (
        await cluster.kubectl(
          [
            'auth',
            'can-i',
            verb,
            resource,
            '-n',
            namespace,
            '--as',
            'system:serviceaccount:berth-system:berth-operator',
          ],
          { allowFailure: true },
        )
      ).stdout.trim();
    expect(await canInNamespace('get', 'pods', 'berth-system')).toBe('yes');
    expect(await canInNamespace('list', 'pods', 'berth-system')).toBe('no');
    expect(await canInNamespace('get', 'pods', 'default')).toBe('no');
  });

  it('renders every owned object for a Registry, which stays unready while no registry pod is', async () => {
    const operator = startOperator();
    await cluster.kubectl(['apply', '-f', join(root, 'examples', 'registry.yaml')]);
    await waitFor(
      async () => await exists('deployment', 'berth-main'),
      30_000,
      `the Deployment (operator output: ${operator.output})`,
    );
    for (const [kind, name] of [
      ['service', 'berth-main'],
      ['configmap', 'berth-main-config'],
      ['secret', 'berth-main-keys'],
      ['secret', 'berth-main-admin'],
      ['serviceaccount', 'berth-main'],
      ['persistentvolumeclaim', 'berth-main-data'],
      ['daemonset', 'berth-main-node-proxy'],
    ] as const) {
      expect({ kind, exists: await exists(kind, name) }).toEqual({ kind, exists: true });
    }
    // No kubelet runs here: readiness, pulls and pushes are shown on the real cluster (test/cluster).
    expect((await ready())?.status).toBe('False');
    // The node proxy needs no cluster DNS: the Service's address, and the name TLS verifies.
    await waitFor(
      async () => await exists('daemonset', 'berth-main-node-proxy'),
      30_000,
      'the DaemonSet',
    );
    expect(await nodeProxyArgs()).toEqual({
      upstream: `https://${await clusterIP()}:5000`,
      tlsServerName: 'berth-main.berth-system.svc',
      dnsPolicy: 'Default',
    });
  });

  it('repairs drift: a deleted Service and a hand-edited Deployment are restored', async () => {
    await cluster.kubectl(['delete', 'service', 'berth-main', '-n', 'berth-system']);
    await cluster.kubectl([
      'patch',
      'deployment',
      'berth-main',
      '-n',
      'berth-system',
      '--type=merge',
      '-p',
      '{"spec":{"replicas":5}}',
    ]);
    await waitFor(
      async () => await exists('service', 'berth-main'),
      15_000,
      'the Service to come back',
    );
    // A new Service has a new ClusterIP; the node proxy follows it.
    await waitFor(
      async () => (await nodeProxyArgs()).upstream === `https://${await clusterIP()}:5000`,
      15_000,
      'the node proxy to follow the new ClusterIP',
    );
    await waitFor(
      async () =>
        (
          await getJson<{ spec: { replicas: number } }>([
            'get',
            'deployment',
            'berth-main',
            '-n',
            'berth-system',
          ])
        ).spec.replicas === 1,
      15_000,
      'the Deployment to be restored',
    );
  });

  it('refuses a second node proxy on a port another Registry holds, until the port changes', async () => {
    await cluster.kubectl(['create', 'namespace', 'second'], { allowFailure: true });
    const second = (port: number) =>
      stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: 'second', namespace: 'second' },
        spec: { nodeAccess: { mode: 'NodeProxy', port } },
      });
    const status = () =>
      getJson<{
        status?: {
          conditions?: { type: string; status: string; reason: string }[];
          endpoints?: Record<string, string>;
        };
      }>(['get', 'registry', 'second', '-n', 'second']);
    await cluster.kubectl(['apply', '-f', '-'], { input: second(5000) });
    await waitFor(
      async () =>
        (await status()).status?.conditions?.some(
          (c) => c.type === 'Degraded' && c.status === 'True' && c.reason === 'NodePortConflict',
        ) ?? false,
      15_000,
      'the NodePortConflict condition',
    );
    expect((await status()).status?.endpoints?.node).toBeUndefined();
    expect(await exists('deployment', 'berth-second', 'second')).toBe(true);
    expect(await exists('daemonset', 'berth-second-node-proxy', 'second')).toBe(false);

    await cluster.kubectl(['apply', '-f', '-'], { input: second(5001) });
    await waitFor(
      async () => await exists('daemonset', 'berth-second-node-proxy', 'second'),
      15_000,
      'the node proxy on its own port',
    );
    await waitFor(
      async () =>
        (await status()).status?.conditions?.some(
          (c) => c.type === 'Degraded' && c.status === 'False',
        ) ?? false,
      15_000,
      'Degraded to clear',
    );
    expect((await status()).status?.endpoints?.node).toBe('localhost:5001');
    await cluster.kubectl(['delete', 'registry', 'second', '-n', 'second', '--wait=false']);
  });

  it('retries a failing reconcile with backoff until the API accepts it again', async () => {
    // Take the operator's rights away, so that every write of a new Registry fails (403), then
    // give them back: the same key must be retried until it converges, with no restart.
    const binding = (
      await cluster.kubectl(['get', 'clusterrolebinding', 'berth-operator', '-o', 'yaml'])
    ).stdout;
    await cluster.kubectl(['delete', 'clusterrolebinding', 'berth-operator']);
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: 'retried', namespace: 'berth-system' },
        spec: { nodeAccess: { mode: 'None' } },
      }),
    });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(await exists('deployment', 'berth-retried')).toBe(false);
    await cluster.kubectl(['apply', '-f', '-'], { input: binding });
    await waitFor(
      async () => await exists('deployment', 'berth-retried'),
      60_000,
      'the retried reconcile',
    );
  });

  it('rides out an API server restart without restarting, unready while the API is gone, and converges afterwards', async () => {
    const operator = operators[0] as Daemon;
    // A standby replica with a known metrics port: readiness is caches synced and API reachable.
    const port = await freePort();
    const standby = startOperatorProcess(kubeconfig, ['--metrics-listen', `127.0.0.1:${port}`]);
    const readyz = async () => {
      const response = await fetch(`http://127.0.0.1:${port}/readyz`);
      return { status: response.status, body: (await response.json()) as { reason?: string } };
    };
    await waitFor(async () => (await readyz()).status === 200, 30_000, 'the standby to be ready');
    await cluster.stopApiServer();
    await waitFor(async () => (await readyz()).status === 503, 15_000, 'unready without the API');
    expect((await readyz()).body.reason).toBe('ApiUnreachable');
    await cluster.startApiServer();
    await waitFor(
      async () => (await readyz()).status === 200,
      30_000,
      'ready once the API is back',
    );
    await standby.stop();
    expect(operator.running).toBe(true);
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: 'after-restart', namespace: 'berth-system' },
        spec: { nodeAccess: { mode: 'None' } },
      }),
    });
    await waitFor(
      async () => await exists('deployment', 'berth-after-restart'),
      60_000,
      'reconciling after the restart',
    );
    expect(await exists('daemonset', 'berth-after-restart-node-proxy')).toBe(false);
  });

  it('runs two replicas of which one leads; killing the leader hands over within the lease duration', async () => {
    const lease = async () =>
      (
        await getJson<{ spec: { holderIdentity: string } }>([
          'get',
          'lease',
          'berth-operator',
          '-n',
          'berth-system',
        ])
      ).spec.holderIdentity;
    const second = startOperator();
    const leader = await lease();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(await lease()).toBe(leader);
    const first = operators[0] as Daemon;
    const killed = Date.now();
    await first.stop('SIGKILL');
    await waitFor(async () => (await lease()) !== leader, 15_000, 'a new leader');
    const handover = Date.now() - killed;
    // A lease of 3 s, retries every 600 ms: the survivor takes over once the lease has run out,
    // counted from when it last saw the leader renew.
    expect(handover).toBeLessThan(3_000 + 600 + 1_000);
    process.stdout.write(
      `operator e2e: leader handover after kill -9 in ${handover} ms (lease 3 s)\n`,
    );
    await cluster.kubectl(['delete', 'service', 'berth-after-restart', '-n', 'berth-system']);
    await waitFor(
      async () => await exists('service', 'berth-after-restart'),
      15_000,
      'the new leader to repair drift',
    );
    expect(second.running).toBe(true);
    // A graceful stop exits cleanly and releases the Lease for the next replica.
    expect(await second.stop('SIGTERM')).toBe(0);
    expect(await lease()).toBe('');
  });

  it('deletes what the Registry owned and keeps the retained volume and signing keys', async () => {
    await cluster.kubectl(['delete', 'registry', 'main', '-n', 'berth-system']);
    try {
      // The garbage collector learns of a CRD at its next discovery sync (every 30 s), and
      // retries owners it did not know with backoff: allow it a while.
      await waitFor(
        async () => !(await exists('deployment', 'berth-main')),
        120_000,
        'the garbage collector',
      );
    } catch (error) {
      throw new Error(
        `${String(error)}\nkube-controller-manager: ${cluster.controllerManagerOutput()}`,
      );
    }
    for (const [kind, name] of [
      ['service', 'berth-main'],
      ['configmap', 'berth-main-config'],
      ['secret', 'berth-main-admin'],
      ['daemonset', 'berth-main-node-proxy'],
    ] as const) {
      await waitFor(async () => !(await exists(kind, name)), 30_000, `${kind} ${name} to go`);
    }
    expect(await exists('persistentvolumeclaim', 'berth-main-data')).toBe(true);
    // reclaimPolicy Retain: a Registry made again under this name signs with the same keys.
    expect(await exists('secret', 'berth-main-keys')).toBe(true);
  });

  it('runs registry and node-proxy pods on the image of its own Pod when given no --image', async () => {
    // The operator's Pod as its Deployment makes it (no kubelet runs here: it stays Pending),
    // on an image a kustomize images: override could have set.
    const image = 'registry.example/platform/berth:from-pod';
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'berth-operator-self', namespace: 'berth-system' },
        spec: {
          containers: [
            { name: 'sidecar', image: 'registry.example/sidecar:1' },
            { name: 'operator', image },
          ],
        },
      }),
    });
    const operator = startOperator({ namespace: 'berth-system', name: 'berth-operator-self' });
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: 'own-image', namespace: 'berth-system' },
        spec: { nodeAccess: { mode: 'NodeProxy', port: 5003 } },
      }),
    });
    await waitFor(
      async () =>
        (await exists('deployment', 'berth-own-image')) &&
        (await exists('daemonset', 'berth-own-image-node-proxy')),
      30_000,
      `the Deployment and DaemonSet (operator output: ${operator.output})`,
    );
    const images = async (kind: string, name: string) =>
      (
        await getJson<{ spec: { template: { spec: { containers: { image: string }[] } } } }>([
          'get',
          kind,
          name,
          '-n',
          'berth-system',
        ])
      ).spec.template.spec.containers.map((container) => container.image);
    expect(await images('deployment', 'berth-own-image')).toEqual([image]);
    expect(await images('daemonset', 'berth-own-image-node-proxy')).toEqual([image]);
  });

  it('says what it needs when it cannot learn the image', async () => {
    const cli = join(root, 'src', 'cli.ts');
    const operator = (env: NodeJS.ProcessEnv) =>
      run(
        process.execPath,
        [cli, 'operator', '--kubeconfig', kubeconfig, '--metrics-listen', '127.0.0.1:0'],
        { env, allowFailure: true },
      );
    const { BERTH_IMAGE: _image, POD_NAME: _name, POD_NAMESPACE: _namespace, ...env } = process.env;
    const nothing = await operator(env);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain(
      'operator needs the image registry pods run: --image, $BERTH_IMAGE, or $POD_NAME and $POD_NAMESPACE',
    );
    const missing = await operator({ ...env, POD_NAMESPACE: 'berth-system', POD_NAME: 'gone' });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(
      /cannot read this operator's Pod berth-system\/gone to learn its image \(.*not found.*\); grant get on pods in berth-system/,
    );
  });
});
