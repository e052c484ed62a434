import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GenericContainer, Wait, type StartedTestContainer } from 'testcontainers';
import { parse, stringify } from 'yaml';
import { kubectlFor, type ControlPlane } from './control-plane.ts';
import { run, temporaryDirectory, waitFor } from './processes.ts';
import { findTool } from './tools.ts';

/** The K3s release matching the locally built control plane's minor version. */
const k3sImage = process.env.BERTH_K3S_IMAGE ?? 'rancher/k3s:v1.36.3-k3s1';

/** Whether a Docker engine answers here (a user's laptop; never the project's CI machines). */
export function dockerAvailable(): boolean {
  return existsSync('/var/run/docker.sock') || Boolean(process.env.DOCKER_HOST);
}

/**
 * The second ControlPlane provider: a K3s cluster in a privileged container through
 * testcontainers, for machines with a Docker engine. Selected with BERTH_CONTROL_PLANE=k3s.
 * kubectl is the one built by test/tools/build-control-plane.sh.
 */
export async function startK3sControlPlane(): Promise<ControlPlane> {
  const kubectl = findTool('kubectl');
  if (!kubectl) throw new Error('kubectl missing: run test/tools/build-control-plane.sh');
  const directory = await temporaryDirectory('k3s');
  const container: StartedTestContainer = await new GenericContainer(k3sImage)
    .withPrivilegedMode()
    .withCommand(['server', '--disable=traefik', '--disable=metrics-server', '--tls-san=127.0.0.1'])
    .withTmpFs({ '/run': 'rw', '/var/run': 'rw' })
    .withExposedPorts(6443)
    .withWaitStrategy(Wait.forLogMessage('Node controller sync successful'))
    .withStartupTimeout(120_000)
    .start();
  const kubeconfig = join(directory.path, 'kubeconfig');
  const server = `https://${container.getHost()}:${container.getMappedPort(6443)}`;
  const writeKubeconfig = async (): Promise<void> => {
    const { output } = await container.exec(['cat', '/etc/rancher/k3s/k3s.yaml']);
    const config = parse(output) as { clusters: { cluster: { server: string } }[] };
    for (const cluster of config.clusters) cluster.cluster.server = server;
    await writeFile(kubeconfig, stringify(config), { mode: 0o600 });
  };
  await writeKubeconfig();
  const ready = () =>
    waitFor(
      async () =>
        (
          await run(kubectl, ['--kubeconfig', kubeconfig, 'get', '--raw', '/readyz'], {
            allowFailure: true,
          })
        ).code === 0,
      120_000,
      'k3s',
    );
  await ready();
  let logs = '';
  (await container.logs()).on('data', (line: Buffer | string) => {
    logs = `${logs}${line.toString()}`.slice(-4000);
  });
  return {
    kubeconfig,
    server,
    kubectl: kubectlFor(kubectl, kubeconfig),
    controllerManagerOutput: () => logs,
    // K3s runs its API server in the same process as everything else: restarting it is the fault.
    stopApiServer: async () => {
      await container.restart();
    },
    startApiServer: async () => {
      await ready();
    },
    stop: async () => {
      await container.stop();
      await directory.remove();
    },
  };
}
