/**
 * The operator's cost and latency on a real API server (etcd, kube-apiserver and
 * kube-controller-manager built by test/tools/build-control-plane.sh):
 *   - apply to Ready for one Registry (the bench marks the Deployment ready as soon as it exists);
 *   - CPU and memory of the operator idle, and while reconciling 100 Registries at once.
 *
 *   npm run bench:operator
 */
import { stringify } from 'yaml';
import {
  resourceExists,
  startLocalControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { installBerth, startOperatorProcess } from '../support/operator.ts';
import { waitFor } from '../support/processes.ts';
import { processUsage as usage } from '../support/process-usage.ts';

const count = Number(process.env.BENCH_REGISTRIES ?? 100);

function registry(name: string, namespace: string): string {
  return stringify({
    apiVersion: 'berth.dev/v1alpha1',
    kind: 'Registry',
    metadata: { name, namespace },
    spec: { nodeAccess: { mode: 'None' } },
  });
}

async function readyCount(cluster: ControlPlane, namespace: string): Promise<number> {
  const list = JSON.parse(
    (await cluster.kubectl(['get', 'registries', '-n', namespace, '-o', 'json'])).stdout,
  ) as {
    items: { status?: { conditions?: { type: string; status: string }[] } }[];
  };
  return list.items.filter((item) =>
    item.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
  ).length;
}

async function main(): Promise<void> {
  const cluster = await startLocalControlPlane();
  try {
    await installBerth(cluster);
    await cluster.kubectl(['create', 'namespace', 'bench']);
    const operator = startOperatorProcess(cluster.kubeconfig, ['--no-leader-elect'], {
      built: true,
    });
    const pid = operator.child.pid as number;
    await new Promise((resolve) => setTimeout(resolve, 3000));

    // One Registry: apply to Ready.
    const applied = performance.now();
    await cluster.kubectl(['apply', '-f', '-'], { input: registry('single', 'bench') });
    await waitFor(
      async () => await resourceExists(cluster, 'deployment', 'berth-single', 'bench'),
      30_000,
      'the Deployment',
    );
    const rendered = performance.now() - applied;
    await markDeploymentReady(cluster, 'bench', 'berth-single', 1, 1);
    await waitFor(async () => (await readyCount(cluster, 'bench')) === 1, 30_000, 'Ready');
    const toReady = performance.now() - applied;

    // Idle: ten quiet seconds.
    const idleStart = await usage(pid);
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    const idleEnd = await usage(pid);

    // Reconciling many at once.
    await cluster.kubectl(['create', 'namespace', 'many']);
    const documents = Array.from({ length: count }, (_, index) =>
      registry(`r${index}`, 'many'),
    ).join('---\n');
    const busyStart = await usage(pid);
    const started = performance.now();
    await cluster.kubectl(['apply', '-f', '-'], { input: documents });
    await waitFor(
      async () => {
        const list = JSON.parse(
          (await cluster.kubectl(['get', 'deployments', '-n', 'many', '-o', 'json'])).stdout,
        ) as { items: unknown[] };
        return list.items.length === count;
      },
      300_000,
      `${count} Deployments`,
    );
    const allRendered = performance.now() - started;
    const busyEnd = await usage(pid);
    await operator.stop();

    process.stdout.write(
      [
        '',
        `| measure | value |`,
        `| --- | --- |`,
        `| one Registry: apply to owned objects rendered | ${rendered.toFixed(0)} ms |`,
        `| one Registry: apply to Ready (Deployment marked ready at once) | ${toReady.toFixed(0)} ms |`,
        `| idle: CPU over 10 s | ${((idleEnd.cpuSeconds - idleStart.cpuSeconds) * 10).toFixed(1)}% of a core |`,
        `| idle: RSS | ${idleEnd.rssMB.toFixed(0)} MB |`,
        `| ${count} Registries applied at once: all rendered | ${(allRendered / 1000).toFixed(1)} s |`,
        `| ${count} Registries: operator CPU used | ${(busyEnd.cpuSeconds - busyStart.cpuSeconds).toFixed(1)} s |`,
        `| ${count} Registries: peak RSS | ${busyEnd.peakMB.toFixed(0)} MB |`,
        '',
      ].join('\n'),
    );
  } finally {
    await cluster.stop();
  }
}

await main();

/**
 * Reports a Deployment rolled out and ready, as the deployment controller would after its pods
 * passed their probes: no kubelet runs in this benchmark, which measures the operator alone.
 */
async function markDeploymentReady(
  cluster: ControlPlane,
  namespace: string,
  name: string,
  generation: number,
  replicas: number,
): Promise<void> {
  const status = {
    observedGeneration: generation,
    replicas,
    readyReplicas: replicas,
    updatedReplicas: replicas,
    availableReplicas: replicas,
  };
  await cluster.kubectl([
    'patch',
    'deployment',
    name,
    '-n',
    namespace,
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status }),
  ]);
}
