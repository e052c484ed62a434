import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import type { ControlPlane } from './control-plane.ts';
import { Daemon } from './processes.ts';

export const repositoryRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const cli = join(repositoryRoot, 'src', 'cli.ts');

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
export async function operatorKubeconfig(
  cluster: ControlPlane,
  directory: string,
): Promise<string> {
  const token = (
    await cluster.kubectl([
      'create',
      'token',
      'berth-operator',
      '-n',
      'berth-system',
      '--duration=2h',
    ])
  ).stdout.trim();
  const admin = parse(await readFile(cluster.kubeconfig, 'utf8')) as {
    clusters: { name: string }[];
  };
  const file = join(directory, 'operator.kubeconfig');
  await writeFile(
    file,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: admin.clusters,
      users: [{ name: 'berth-operator', user: { token } }],
      contexts: [
        {
          name: 'operator',
          context: { cluster: admin.clusters[0]?.name, user: 'berth-operator' },
        },
      ],
      'current-context': 'operator',
    }),
    { mode: 0o600 },
  );
  return file;
}

/** `berth operator` as a process of its own. */
export function startOperatorProcess(kubeconfig: string, args: readonly string[] = []): Daemon {
  return new Daemon(process.execPath, [
    cli,
    'operator',
    '--kubeconfig',
    kubeconfig,
    '--image',
    'berth:test',
    '--metrics-listen',
    '127.0.0.1:0',
    '--log-level',
    'warn',
    ...args,
  ]);
}
