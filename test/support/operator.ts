import { berthCli, repositoryRoot } from './cli.ts';
import { join } from 'node:path';
import { serviceAccountKubeconfig, type ControlPlane } from './control-plane.ts';
import { Daemon } from './processes.ts';

/** Installs Berth as users do: `kubectl apply -k deploy/`, then waits for the CRDs. */
export async function installBerth(cluster: ControlPlane): Promise<void> {
  await cluster.kubectl(['apply', '-k', join(repositoryRoot, 'deploy')]);
  for (const crd of ['registries.berth.dev', 'repositories.berth.dev'])
    await cluster.kubectl(['wait', '--for=condition=Established', `crd/${crd}`, '--timeout=60s']);
}

/**
 * A kubeconfig holding a token of the operator's ServiceAccount, so the operator runs with
 * exactly deploy/'s RBAC, not as cluster admin.
 */
export function operatorKubeconfig(cluster: ControlPlane, directory: string): Promise<string> {
  return serviceAccountKubeconfig(
    cluster,
    'berth-system',
    'berth-operator',
    join(directory, 'operator.kubeconfig'),
  );
}

/**
 * `berth operator` as a process of its own; `built` runs dist/ (benchmarks) instead of src/.
 * With `ownPod` it runs as in its Deployment: no `--image`, but POD_NAMESPACE and POD_NAME, as
 * the downward API sets them, so it reads its image from that Pod.
 */
export function startOperatorProcess(
  kubeconfig: string,
  args: readonly string[] = [],
  options: { built?: boolean; ownPod?: { namespace: string; name: string } } = {},
): Daemon {
  const { ownPod } = options;
  return new Daemon(
    process.execPath,
    [
      berthCli(options.built),
      'operator',
      '--kubeconfig',
      kubeconfig,
      ...(ownPod ? [] : ['--image', 'berth:test']),
      '--metrics-listen',
      '127.0.0.1:0',
      '--log-level',
      'warn',
      ...args,
    ],
    ownPod
      ? { ...process.env, POD_NAMESPACE: ownPod.namespace, POD_NAME: ownPod.name }
      : process.env,
  );
}
