import { generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeJwt, decodeProtectedHeader, importPKCS8, SignJWT } from 'jose';
import { stringify } from 'yaml';
import {
  adminPassword,
  fetchToken,
  startAuthRegistry,
  type AuthRegistry,
} from '../support/auth.ts';
import { berthCli, repositoryRoot } from '../support/cli.ts';
import {
  controlPlaneToolNames,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const audience = 'berth.test/registry';
const pullScope = 'repository:team-a/app:pull';
/** team-b may pull team-a/app; team-c exists but is granted nothing. */
const policy = {
  namespaces: { 'team-a': {}, 'team-b': {}, 'team-c': {} },
  repositories: [
    { metadata: { name: 'app', namespace: 'team-a' }, spec: { pull: { namespaces: ['team-b'] } } },
  ],
};
const provider = join(repositoryRoot, 'src', 'credential-provider', 'main.ts');

/**
 * ServiceAccount tokens as logins, against a real kube-apiserver: tokens minted by its
 * TokenRequest API, keys from its OIDC discovery, deletion seen through TokenReview, and the
 * credential provider's answer used by crane as the kubelet would hand it to the runtime.
 */
describeWithTools([...controlPlaneToolNames, 'crane'], 'ServiceAccount token logins', (tools) => {
  let cluster: ControlPlane;
  let auth: AuthRegistry;
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let host: string;
  let digest: string;

  const mint = async (namespace: string, name: string, tokenAudience = audience) =>
    (
      await cluster.kubectl(['create', 'token', name, '-n', namespace, '--audience', tokenAudience])
    ).stdout.trim();

  /** A docker config.json holding one login for the registry, as the runtime gets it. */
  async function dockerConfig(name: string, username: string, password: string): Promise<string> {
    const directory = join(work.path, name);
    await mkdir(directory, { recursive: true });
    const login = Buffer.from(`${username}:${password}`).toString('base64');
    await writeFile(
      join(directory, 'config.json'),
      JSON.stringify({ auths: { [host]: { auth: login } } }),
    );
    return directory;
  }

  const crane = (config: string, ...args: string[]) =>
    run(tools.crane as string, [...args, '--insecure'], {
      env: { ...process.env, DOCKER_CONFIG: config },
      allowFailure: true,
    });

  /** What the registry answers a Basic login with this token as the password. */
  const logIn = async (token: string, username = 'serviceaccount') => {
    const answer = await fetchToken(auth.registry, { username, password: token }, [pullScope]);
    return {
      status: answer.status,
      access: answer.token ? decodeJwt(answer.token).access : undefined,
    };
  };

  beforeAll(async () => {
    cluster = await startControlPlane();
    for (const namespace of ['team-a', 'team-b', 'team-c']) {
      await cluster.kubectl(['create', 'namespace', namespace]);
      await cluster.kubectl(['create', 'serviceaccount', 'puller', '-n', namespace]);
    }
    work = await temporaryDirectory('sa-tokens');
    const config = join(work.path, 'registry.yaml');
    await writeFile(
      config,
      stringify({ auth: { serviceAccountTokens: { audience, kubeconfig: cluster.kubeconfig } } }),
    );
    auth = await startAuthRegistry(policy, ['--config', config]);
    host = auth.registry.host;
    const layer = await randomLayerTar(work.path, 'layer', 256 * 1024);
    const admin = await dockerConfig('admin', 'admin', adminPassword);
    expect((await crane(admin, 'append', '-f', layer, '-t', `${host}/team-a/app:v1`)).code).toBe(0);
    digest = (await crane(admin, 'digest', `${host}/team-a/app:v1`)).stdout.trim();
  });

  afterAll(async () => {
    await auth?.stop();
    await cluster?.stop();
    await work?.remove();
  });

  it("pulls with the credential provider's answer for a minted token of an allowed namespace", async () => {
    const token = await mint('team-b', 'puller');
    const request = JSON.stringify({
      apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
      kind: 'CredentialProviderRequest',
      image: `${host}/team-a/app:v1`,
      serviceAccountToken: token,
    });
    const answered = await run(process.execPath, [provider, '--host', host], { input: request });
    const { auth: logins } = JSON.parse(answered.stdout) as {
      auth: Record<string, { username: string; password: string }>;
    };
    const login = logins[host];
    if (!login) throw new Error(`no login for ${host} in ${answered.stdout}`);
    const config = await dockerConfig('team-b', login.username, login.password);
    const pulled = await crane(config, 'pull', `${host}/team-a/app:v1`, join(work.path, 'b.tar'));
    expect(pulled.stderr).toBe('');
    expect(pulled.code).toBe(0);
    expect((await crane(config, 'digest', `${host}/team-a/app:v1`)).stdout.trim()).toBe(digest);
    // The owner's ServiceAccount may pull too; any username goes with a token.
    expect(await logIn(await mint('team-a', 'puller'), 'anything')).toEqual({
      status: 200,
      access: [{ type: 'repository', name: 'team-a/app', actions: ['pull'] }],
    });
  });

  it('gives a namespace the policy does not allow nothing, and crane a 403', async () => {
    const token = await mint('team-c', 'puller');
    expect(await logIn(token)).toEqual({ status: 200, access: [] });
    const config = await dockerConfig('team-c', 'serviceaccount', token);
    const pulled = await crane(config, 'digest', `${host}/team-a/app:v1`);
    expect(pulled.code).not.toBe(0);
    expect(pulled.stderr).toMatch(/DENIED|403/);
  });

  it('refuses tokens of another audience, of the API server, forged or expired', async () => {
    const genuine = await mint('team-b', 'puller');
    const other = await mint('team-b', 'puller', 'someone-else');
    const apiServers = (
      await cluster.kubectl(['create', 'token', 'puller', '-n', 'team-b'])
    ).stdout.trim();
    const claims = decodeJwt(genuine);
    const header = decodeProtectedHeader(genuine);
    const now = Math.floor(Date.now() / 1000);
    const sign = (key: Parameters<SignJWT['sign']>[0], payload: object) =>
      new SignJWT({ ...claims, ...payload })
        .setProtectedHeader({ alg: 'RS256', kid: header.kid as string })
        .sign(key);
    const clusterKey = await importPKCS8(
      await readFile(cluster.serviceAccountSigningKeyFile as string, 'utf8'),
      'RS256',
    );
    const expired = await sign(clusterKey, { iat: now - 7200, nbf: now - 7200, exp: now - 3600 });
    const { privateKey: strangerKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forged = await sign(strangerKey, {});
    // The cluster's key signing fresh claims is accepted: the refusals below are for their reason.
    expect((await logIn(await sign(clusterKey, {}), 'control')).status).toBe(200);
    for (const [name, token] of Object.entries({ other, apiServers, expired, forged })) {
      expect({ name, ...(await logIn(token, name)) }).toEqual({
        name,
        status: 401,
        access: undefined,
      });
    }
    const config = await dockerConfig('forged', 'serviceaccount', forged);
    expect((await crane(config, 'digest', `${host}/team-a/app:v1`)).stderr).toMatch(
      /UNAUTHORIZED|401/,
    );
  });

  it('refuses a deleted ServiceAccount, and applies a policy revocation to the next login', async () => {
    await cluster.kubectl(['create', 'serviceaccount', 'leaving', '-n', 'team-b']);
    const leaving = await mint('team-b', 'leaving');
    expect((await logIn(leaving)).status).toBe(200);
    await cluster.kubectl(['delete', 'serviceaccount', 'leaving', '-n', 'team-b']);
    const deletedAt = Date.now();
    let attempt = 0;
    await waitFor(
      async () => (await logIn(leaving, `deleted-${attempt++}`)).status === 401,
      20_000,
      'refusal of a deleted ServiceAccount',
    );
    // The API server trusts a token it authenticated for 10 s (its token success cache), and
    // the registry remembers the TokenReview's answer for 5 s more: refused within 15 s.
    expect(Date.now() - deletedAt).toBeLessThan(16_000);
    // Never used before its deletion: refused at once.
    await cluster.kubectl(['create', 'serviceaccount', 'brief', '-n', 'team-b']);
    const brief = await mint('team-b', 'brief');
    await cluster.kubectl(['delete', 'serviceaccount', 'brief', '-n', 'team-b']);
    expect((await logIn(brief, 'brief')).status).toBe(401);

    const token = await mint('team-b', 'puller');
    const config = await dockerConfig('revoked', 'serviceaccount', token);
    expect((await crane(config, 'digest', `${host}/team-a/app:v1`)).code).toBe(0);
    await auth.writePolicy({
      ...policy,
      repositories: [{ metadata: { name: 'app', namespace: 'team-a' }, spec: {} }],
    });
    await waitFor(
      async () => (await logIn(token)).access?.toString() === '',
      5_000,
      'policy reload',
    );
    const pulled = await crane(config, 'digest', `${host}/team-a/app:v1`);
    expect(pulled.code).not.toBe(0);
    expect(pulled.stderr).toMatch(/DENIED|403/);
    await auth.writePolicy(policy);
  });

  it('refuses a token bound to a pod once the pod is deleted, its ServiceAccount still there', async () => {
    await cluster.kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'bound', namespace: 'team-b' },
        // Never scheduled (this control plane has no node): the pod exists, which is all a
        // bound token needs.
        spec: { serviceAccountName: 'puller', containers: [{ name: 'c', image: 'none' }] },
      }),
    });
    const uid = (
      await cluster.kubectl([
        'get',
        'pod',
        'bound',
        '-n',
        'team-b',
        '-o',
        'jsonpath={.metadata.uid}',
      ])
    ).stdout.trim();
    const bound = (
      await cluster.kubectl([
        'create',
        'token',
        'puller',
        '-n',
        'team-b',
        '--audience',
        audience,
        '--bound-object-kind',
        'Pod',
        '--bound-object-name',
        'bound',
        '--bound-object-uid',
        uid,
      ])
    ).stdout.trim();
    expect(decodeJwt(bound)['kubernetes.io']).toMatchObject({ pod: { name: 'bound', uid } });
    expect((await logIn(bound, 'pod-alive')).status).toBe(200);
    await cluster.kubectl([
      'delete',
      'pod',
      'bound',
      '-n',
      'team-b',
      '--grace-period=0',
      '--force',
    ]);
    const deletedAt = Date.now();
    let attempt = 0;
    await waitFor(
      async () => (await logIn(bound, `pod-deleted-${attempt++}`)).status === 401,
      20_000,
      'refusal of a token whose pod is deleted',
    );
    // As for a deleted ServiceAccount: the API server's 10 s and the registry's 5 s caches.
    expect(Date.now() - deletedAt).toBeLessThan(16_000);
    // The ServiceAccount itself still logs in with a token of its own.
    expect((await logIn(await mint('team-b', 'puller'), 'account-alive')).status).toBe(200);
  });

  it('does not start when the API server has no issuer for it to read', async () => {
    const config = join(work.path, 'unreachable.yaml');
    const kubeconfig = join(work.path, 'nowhere.kubeconfig');
    await writeFile(
      kubeconfig,
      (await readFile(cluster.kubeconfig, 'utf8')).replace(
        /server: .*/,
        'server: https://127.0.0.1:1',
      ),
    );
    await writeFile(
      config,
      stringify({ auth: { serviceAccountTokens: { audience, kubeconfig } } }),
    );
    const started = await run(
      process.execPath,
      [
        berthCli(),
        'registry',
        '--config',
        config,
        '--storage-dir',
        join(work.path, 'x'),
        '--listen',
        '127.0.0.1:0',
      ],
      { allowFailure: true, timeoutMs: 20_000 },
    );
    expect(started.code).not.toBe(0);
    expect(started.stderr + started.stdout).toMatch(
      /auth\.serviceAccountTokens: cannot read the cluster's ServiceAccount issuer/,
    );
  });
});
