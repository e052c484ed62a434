import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const installer = fileURLToPath(new URL('./install-main.ts', import.meta.url));

function exec(
  command: string,
  args: string[],
  input = '',
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

const token = `eyJhbGciOiJSUzI1NiJ9.${Buffer.from(
  JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 600 }),
).toString('base64url')}.c2ln`;
const request = JSON.stringify({
  apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
  kind: 'CredentialProviderRequest',
  image: 'localhost:5000/team-a/web:1',
  serviceAccountToken: token,
});

describe('the credential provider installer', () => {
  let root: string;
  const args = () => [
    installer,
    `--bin-dir=${join(root, 'bin')}`,
    `--config-file=${join(root, 'etc', 'config.yaml')}`,
    '--host=localhost:5000',
    '--host=Berth-Main.berth-system.svc:5000',
    '--audience=berth.dev/berth-system/main',
  ];

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'berth-provider-install-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('installs a launcher that answers as the kubelet runs it, with its own loader and libraries', async () => {
    const installed = await exec(process.execPath, args());
    expect(installed.code).toBe(0);
    expect(installed.stdout).toMatch(/"msg":"credential provider installed"/);
    const launcher = join(root, 'bin', 'berth-credential-provider');
    const answered = await exec(launcher, ['--host', 'localhost:5000'], request, {
      PATH: '/usr/bin:/bin',
      // What the dynamic loader does, for the assertion below; the provider ignores it.
      LD_DEBUG: 'libs',
    });
    expect(answered.code).toBe(0);
    expect(JSON.parse(answered.stdout)).toMatchObject({
      kind: 'CredentialProviderResponse',
      auth: { 'localhost:5000': { username: 'serviceaccount', password: token } },
    });
    // Every library node initialises is the bundled copy, never the host's (the shell's own
    // come first: they are /bin/sh's).
    const initialised = [...answered.stderr.matchAll(/calling init: (\S+)/g)].map((m) => m[1]);
    const runtime = (await readdir(join(root, 'bin'))).find((name) =>
      name.startsWith('.berth-credential-provider-'),
    ) as string;
    const bundled = initialised.filter((path) => path?.includes(runtime));
    expect(bundled.map((path) => path?.split('/').pop())).toEqual(
      expect.arrayContaining(['libc.so.6', 'libstdc++.so.6']),
    );
    const afterLoader = initialised.slice(initialised.findIndex((p) => p?.includes(runtime)));
    expect(afterLoader.every((path) => path?.includes(runtime))).toBe(true);
  });

  it('fails closed through the launcher, the reason on stderr', async () => {
    const launcher = join(root, 'bin', 'berth-credential-provider');
    const refused = await exec(launcher, ['--host', 'localhost:5000'], '{"kind":"nope"}');
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toMatch(/invalid CredentialProviderRequest/);
  });

  it("writes the kubelet's CredentialProviderConfig for the hosts and audience", async () => {
    const config = parse(await readFile(join(root, 'etc', 'config.yaml'), 'utf8')) as unknown;
    expect(config).toEqual({
      apiVersion: 'kubelet.config.k8s.io/v1',
      kind: 'CredentialProviderConfig',
      providers: [
        {
          name: 'berth-credential-provider',
          matchImages: ['localhost:5000', 'berth-main.berth-system.svc:5000'],
          defaultCacheDuration: '0s',
          apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
          args: ['--host', 'localhost:5000', '--host', 'berth-main.berth-system.svc:5000'],
          tokenAttributes: {
            serviceAccountTokenAudience: 'berth.dev/berth-system/main',
            cacheType: 'Token',
            requireServiceAccount: true,
          },
        },
      ],
    });
  });

  it('installing again leaves one runtime, the one the launcher names', async () => {
    expect((await exec(process.execPath, args())).code).toBe(0);
    const entries = await readdir(join(root, 'bin'));
    expect(entries.filter((name) => name.startsWith('.'))).toHaveLength(1);
    const script = await readFile(join(root, 'bin', 'berth-credential-provider'), 'utf8');
    expect(script).toContain(entries.find((name) => name.startsWith('.')));
  });

  it('refuses bad arguments with what to fix', async () => {
    const noHost = await exec(process.execPath, [
      installer,
      `--bin-dir=${join(root, 'x')}`,
      `--config-file=${join(root, 'x.yaml')}`,
      '--audience=a',
    ]);
    expect(noHost.code).toBe(2);
    expect(noHost.stderr).toMatch(/hosts: at least one --host/);
    const badCache = await exec(process.execPath, [...args(), '--cache-type=Image']);
    expect(badCache.code).toBe(2);
    expect(badCache.stderr).toMatch(/cacheType/);
  });
});
