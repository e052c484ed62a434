import { berthCli } from './cli.ts';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { run, temporaryDirectory } from './processes.ts';
import { startBerth, type RegistryProcess } from './registries.ts';

const cli = berthCli();

export const adminPassword = 'correct-horse-battery-staple';

export interface AuthRegistry {
  readonly registry: RegistryProcess;
  readonly storage: string;
  readonly policyFile: string;
  /** A namespace credential made by `berth credential`, as a pull secret would hold it. */
  credential(namespace: string, lifetime?: string): Promise<string>;
  writePolicy(policy: unknown): Promise<void>;
  /** The signing keys file, for tests that forge tokens. */
  readonly keyFile: string;
  stop(): Promise<void>;
}

/** Starts `berth registry` with token authentication, an admin password and a policy file. */
export async function startAuthRegistry(
  policy: unknown,
  extraArgs: string[] = [],
  options: { built?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<AuthRegistry> {
  const directory = await temporaryDirectory('auth');
  const storage = join(directory.path, 'data');
  const policyFile = join(directory.path, 'policy.yaml');
  const passwordFile = join(directory.path, 'admin-password');
  await writeFile(policyFile, stringify(policy));
  await writeFile(passwordFile, `${adminPassword}\n`, { mode: 0o600 });
  const registry = await startBerth(storage, {
    extraArgs: [
      '--log-level',
      'warn',
      '--policy',
      policyFile,
      '--admin-password-file',
      passwordFile,
      ...extraArgs,
    ],
    built: options.built ?? false,
    env: options.env,
  });
  return {
    registry,
    storage,
    policyFile,
    keyFile: join(storage, '_berth', 'signing-keys.json'),
    credential: (namespace, lifetime) => issueCredential(storage, namespace, lifetime),
    writePolicy: async (next) => writeFile(policyFile, stringify(next)),
    stop: async () => {
      await registry.stop();
      await directory.remove();
    },
  };
}

/** A namespace credential made by `berth credential` for the registry storing under `storage`. */
export async function issueCredential(
  storage: string,
  namespace: string,
  lifetime?: string,
): Promise<string> {
  const args = [
    cli,
    'credential',
    '--namespace',
    namespace,
    '--storage-dir',
    storage,
    ...(lifetime ? ['--lifetime', lifetime] : []),
  ];
  return (await run(process.execPath, args)).stdout.trim();
}

/** Asks the token endpoint (GET, Basic auth) for a token, as docker and crane do. */
export async function fetchToken(
  registry: RegistryProcess,
  credentials: { username: string; password: string } | undefined,
  scopes: string[],
): Promise<{ status: number; token?: string; body: Record<string, unknown> }> {
  const query = new URLSearchParams({ service: 'berth-registry' });
  for (const scope of scopes) query.append('scope', scope);
  const headers: Record<string, string> = {};
  if (credentials) {
    headers.Authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
  }
  const response = await fetch(`${registry.url}/token?${query}`, { headers });
  const body = (await response.json()) as Record<string, unknown>;
  return { status: response.status, token: body.token as string | undefined, body };
}

export async function readKeyFile(
  file: string,
): Promise<{ kid: string; privateJwk: Record<string, unknown> }[]> {
  return (
    JSON.parse(await readFile(file, 'utf8')) as {
      keys: { kid: string; privateJwk: Record<string, unknown> }[];
    }
  ).keys;
}
