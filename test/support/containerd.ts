import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Daemon, run, waitFor, type RunResult } from './processes.ts';

export interface Containerd {
  readonly socket: string;
  ctr(...args: string[]): Promise<RunResult>;
  stop(): Promise<void>;
}

/**
 * Starts a private containerd (root, state and socket under `directory`) with the native
 * snapshotter, which needs no kernel overlay support.
 */
export async function startContainerd(
  binaries: { containerd: string; ctr: string },
  directory: string,
): Promise<Containerd> {
  await mkdir(directory, { recursive: true });
  const socket = join(directory, 'containerd.sock');
  const config = join(directory, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${directory}/root"`,
      `state = "${directory}/state"`,
      '[grpc]',
      `  address = "${socket}"`,
      '[plugins."io.containerd.grpc.v1.cri".containerd]',
      '  snapshotter = "native"',
      '[plugins."io.containerd.grpc.v1.cri".registry]',
      `  config_path = "${directory}/certs.d"`,
      '',
    ].join('\n'),
  );
  const daemon = new Daemon(binaries.containerd, ['--config', config]);
  const ctr = (...args: string[]) => run(binaries.ctr, ['-a', socket, ...args]);
  try {
    await waitFor(async () => (await ctr('version'), true), 20_000, 'containerd');
  } catch (error) {
    await daemon.stop('SIGKILL');
    throw new Error(`containerd did not start: ${String(error)}\n${daemon.output}`);
  }
  return {
    socket,
    ctr,
    stop: async () => {
      await daemon.stop();
    },
  };
}

/** crictl's flags to talk to the containerd listening on `socket`, for images and runtime. */
export function criEndpoints(socket: string): string[] {
  return ['--runtime-endpoint', `unix://${socket}`, '--image-endpoint', `unix://${socket}`];
}

/**
 * Makes `registryName` (e.g. docker.io) pull through the plain-HTTP mirror at `mirrorUrl` for the
 * CRI plugin of the containerd under `directory`: what a node's
 * /etc/containerd/certs.d/<name>/hosts.toml holds. containerd then asks the mirror for
 * `/v2/<repository>/...?ns=<registryName>` and falls back to the registry itself on failure.
 */
export async function mirrorRegistry(
  directory: string,
  registryName: string,
  mirrorUrl: string,
): Promise<string> {
  const hosts = join(directory, 'certs.d', registryName);
  await mkdir(hosts, { recursive: true });
  const file = join(hosts, 'hosts.toml');
  await writeFile(
    file,
    [
      `server = "https://${registryName}"`,
      '',
      `[host."${mirrorUrl}"]`,
      '  capabilities = ["pull", "resolve"]',
      '',
    ].join('\n'),
  );
  return file;
}
