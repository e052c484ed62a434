/**
 * Pull secrets at scale on a real API server (etcd, kube-apiserver and kube-controller-manager
 * built by test/tools/build-control-plane.sh): one Repository whose selector matches N
 * namespaces (500 by default). Measures the time from applying the Repository until every
 * namespace holds the pull Secret and its default ServiceAccount names it, and the operator's
 * memory meanwhile; then the same for revocation (the Repository deleted).
 *
 *   npm run bench:pull-secrets        (BENCH_NAMESPACES=500)
 */
import { stringify } from 'yaml';
import { KubeClient, type KubeObject } from '../../src/kube/client.ts';
import { resourceExists, startLocalControlPlane } from '../support/control-plane.ts';
import { installBerth, startOperatorProcess } from '../support/operator.ts';
import { processUsage } from '../support/process-usage.ts';
import { waitFor } from '../support/processes.ts';

const count = Number(process.env.BENCH_NAMESPACES ?? 500);
const secretName = 'berth-pull.berth-system.main';

interface ServiceAccount extends KubeObject {
  imagePullSecrets?: { name: string }[];
}

async function main(): Promise<void> {
  const cluster = await startLocalControlPlane();
  const client = KubeClient.fromFile(cluster.kubeconfig);
  try {
    await installBerth(cluster);
    await cluster.kubectl(['apply', '-f', '-'], {
      input: Array.from({ length: count }, (_, index) =>
        stringify({
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: { name: `tenant-${index}`, labels: { 'pulls-web': 'web' } },
        }),
      ).join('---\n'),
    });
    await cluster.kubectl(['create', 'namespace', 'team-a']);
    // The controller manager gives every namespace its default ServiceAccount.
    await waitFor(
      async () => (await defaultAccounts(client)).length >= count + 1,
      120_000,
      'default ServiceAccounts',
    );

    const operator = startOperatorProcess(cluster.kubeconfig, ['--no-leader-elect'], {
      built: true,
    });
    const pid = operator.child.pid as number;
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Registry',
        metadata: { name: 'main', namespace: 'berth-system' },
        spec: {},
      }),
    });
    await waitFor(
      async () => await resourceExists(cluster, 'secret', 'berth-main-keys', 'berth-system'),
      30_000,
      `the Registry's keys (operator: ${operator.output})`,
    );
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const before = await processUsage(pid);

    const repository = stringify({
      apiVersion: 'berth.dev/v1alpha1',
      kind: 'Repository',
      metadata: { name: 'web', namespace: 'team-a' },
      spec: {
        registry: { name: 'main', namespace: 'berth-system' },
        pull: { namespaceSelector: { matchLabels: { 'pulls-web': 'web' } } },
      },
    });
    const started = performance.now();
    await cluster.kubectl(['apply', '-f', '-'], { input: repository });
    // Every tenant plus team-a, the owner.
    await waitFor(
      async () =>
        (await pullSecrets(client)) === count + 1 &&
        (await defaultAccounts(client)).filter((account) =>
          account.imagePullSecrets?.some((entry) => entry.name === secretName),
        ).length ===
          count + 1,
      120_000,
      'every namespace to get its Secret and ServiceAccount entry',
    );
    const converged = performance.now() - started;
    const during = await processUsage(pid);

    const revokeStarted = performance.now();
    await cluster.kubectl(['delete', 'repository', 'web', '-n', 'team-a']);
    await waitFor(
      async () =>
        (await pullSecrets(client)) === 0 &&
        (await defaultAccounts(client)).every(
          (account) => !account.imagePullSecrets?.some((entry) => entry.name === secretName),
        ),
      120_000,
      'every Secret and entry to go',
    );
    const revoked = performance.now() - revokeStarted;
    const after = await processUsage(pid);
    await operator.stop();

    process.stdout.write(
      [
        '',
        `| measure (${count} namespaces + the owner) | value |`,
        `| --- | --- |`,
        `| Repository applied → every Secret and ServiceAccount entry present | ${(converged / 1000).toFixed(2)} s |`,
        `| Repository deleted → every Secret and entry gone | ${(revoked / 1000).toFixed(2)} s |`,
        `| operator CPU used while granting | ${(during.cpuSeconds - before.cpuSeconds).toFixed(1)} s |`,
        `| operator RSS before / after granting | ${before.rssMB.toFixed(0)} / ${during.rssMB.toFixed(0)} MB |`,
        `| operator peak RSS over the whole run | ${after.peakMB.toFixed(0)} MB |`,
        '',
      ].join('\n'),
    );
  } finally {
    await cluster.stop();
  }
}

async function defaultAccounts(client: KubeClient): Promise<ServiceAccount[]> {
  const list = await client.list<ServiceAccount>('/api/v1/serviceaccounts', {
    fieldSelector: 'metadata.name=default',
  });
  return list.items.filter(
    (account) =>
      account.metadata.namespace?.startsWith('tenant-') || account.metadata.namespace === 'team-a',
  );
}

async function pullSecrets(client: KubeClient): Promise<number> {
  const list = await client.list('/api/v1/secrets', {
    labelSelector: 'app.kubernetes.io/component=pull-secret',
  });
  return list.items.length;
}

await main();
