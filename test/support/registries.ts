import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { berthCli, imageNodeFlags } from './cli.ts';
import { Daemon, ExitedError, freePort, waitFor } from './processes.ts';
import { findTool } from './tools.ts';

export interface RegistryProcess {
  readonly host: string;
  readonly url: string;
  readonly daemon: Daemon;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `berth registry` as its own process, as a user would, and waits until it is ready, or
 * with `ready: false` only until it serves (`/healthz`), for a registry expected not to be ready.
 * `user` runs it as that uid and gid. Without `storageDir`, storage comes from a `--config` file in
 * `extraArgs` (S3: test/support/s3.ts).
 */
export async function startBerth(
  storageDir: string | undefined,
  options: {
    port?: number;
    extraArgs?: string[];
    env?: NodeJS.ProcessEnv;
    built?: boolean;
    user?: { uid: number; gid: number };
    ready?: boolean;
  } = {},
): Promise<RegistryProcess> {
  const port = options.port ?? (await freePort());
  const host = `127.0.0.1:${port}`;
  const daemon = new Daemon(
    process.execPath,
    [
      // Built, it runs as the image runs it.
      ...(options.built ? imageNodeFlags : []),
      berthCli(options.built),
      'registry',
      '--listen',
      host,
      ...(storageDir === undefined ? [] : ['--storage-dir', storageDir]),
      ...(options.extraArgs ?? []),
    ],
    { ...process.env, ...options.env },
    options.user,
  );
  const probe = options.ready === false ? 'healthz' : 'readyz';
  await waitUntilServing(daemon, `http://${host}/${probe}`, 'berth registry');
  return { host, url: `http://${host}`, daemon, stop: (signal) => daemon.stop(signal) };
}

/**
 * Starts CNCF distribution (Debian's docker-registry) on filesystem storage, or on the storage
 * that `storage.yaml` (lines under `storage:`) configures, with `storage.env` for its process.
 */
export async function startDistribution(
  storageDir: string | undefined,
  configDir: string,
  storage: { yaml?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<RegistryProcess> {
  const binary = findTool('docker-registry');
  if (!binary) throw new Error('docker-registry is not installed; run test/tools/install.sh');
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const config = join(configDir, 'distribution.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log: {level: warn, accesslog: {disabled: true}}',
      'storage:',
      ...(storage.yaml ?? [`  filesystem: {rootdirectory: ${storageDir}}`]),
      '  delete: {enabled: true}',
      `http: {addr: "${host}"}`,
      '',
    ].join('\n'),
  );
  const daemon = new Daemon(binary, ['serve', config], storage.env);
  await waitUntilServing(daemon, `http://${host}/v2/`, 'docker-registry');
  return { host, url: `http://${host}`, daemon, stop: (signal) => daemon.stop(signal) };
}

async function waitUntilServing(daemon: Daemon, url: string, what: string): Promise<void> {
  try {
    await waitFor(
      async () => {
        if (!daemon.running) throw new ExitedError(`${what} exited: ${daemon.output}`);
        const response = await fetch(url);
        return response.ok;
      },
      30_000,
      what,
    );
  } catch (error) {
    await daemon.stop('SIGKILL');
    throw error;
  }
}
