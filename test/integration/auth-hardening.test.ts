import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  adminPassword,
  fetchToken,
  startAuthRegistry,
  type AuthRegistry,
} from '../support/auth.ts';
import { rawRequest } from '../support/http.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';

/**
 * What issue 11's attack found in token mode, against a real `berth registry`: names and scopes
 * that could grow its memory, a login limiter that locked out the wrong clients and forgot
 * blocks, and token-endpoint answers that were more generous than the credentials behind them.
 */
const policy = {
  namespaces: { 'team-a': {}, 'team-b': {} },
  repositories: [
    { metadata: { name: 'public', namespace: 'team-a' }, spec: { visibility: 'Public' } },
    { metadata: { name: 'web', namespace: 'team-a' }, spec: { pull: { namespaces: ['team-b'] } } },
  ],
};

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

/** GET /token from a chosen loopback address, with Basic credentials or a raw header. */
async function tokenFrom(
  host: string,
  localAddress: string,
  authorization: string | undefined,
  query = 'service=berth-registry',
): Promise<Answer> {
  const headers: Record<string, string> = authorization ? { Authorization: authorization } : {};
  const answer = await rawRequest(host, 'GET', `/token?${query}`, { headers, localAddress });
  return {
    ...answer,
    body: JSON.parse(answer.body.toString() || '{}') as Record<string, unknown>,
  };
}

const basic = (username: string, password: string) =>
  `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;

const claims = (token: string) =>
  JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()) as {
    exp: number;
    access: unknown[];
  };

const errorCode = (answer: { body: Record<string, unknown> }) =>
  (answer.body.errors as { code: string }[] | undefined)?.[0]?.code;

describe('authentication hardening', () => {
  let auth: AuthRegistry;
  let host: string;
  let teamB: string;

  beforeAll(async () => {
    auth = await startAuthRegistry(policy);
    host = auth.registry.host;
    teamB = await auth.credential('team-b');
  });

  afterAll(async () => {
    await auth?.stop();
  });

  it('answers a repository name that is not one with NAME_INVALID, before asking the policy', async () => {
    for (const name of ['a'.repeat(15_000), 'team-a/Public', `team-a/${'x'.repeat(200)}`]) {
      const response = await fetch(`${auth.registry.url}/v2/${name}/tags/list`);
      expect(response.status).toBe(400);
      expect(((await response.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe(
        'NAME_INVALID',
      );
    }
  });

  it('merges repeated scopes into one grant, and refuses too many scopes with a 400', async () => {
    const repeated = await fetchToken(
      auth.registry,
      undefined,
      Array.from({ length: 64 }, () => 'repository:team-a/public:pull'),
    );
    expect(claims(repeated.token as string).access).toEqual([
      { type: 'repository', name: 'team-a/public', actions: ['pull'] },
    ]);
    const tooMany = await fetchToken(
      auth.registry,
      undefined,
      Array.from({ length: 65 }, (_, index) => `repository:team-a/public${index}:pull`),
    );
    expect(tooMany.status).toBe(400);
    expect(errorCode(tooMany)).toBe('UNSUPPORTED');
  });

  it("never locks a namespace's valid credential out for the failures of others", async () => {
    // 100 wrong passwords for team-b, each from another address: the username is blocked...
    for (let address = 2; address < 102; address += 1) {
      const answer = await tokenFrom(
        host,
        `127.0.2.${address}`,
        basic('team-b', `guess-${address}`),
      );
      expect(answer.status).toBe(401);
    }
    const guess = await tokenFrom(host, '127.0.2.200', basic('team-b', 'one-more-guess'));
    expect(guess.status).toBe(429);
    expect(Number(guess.headers['retry-after'])).toBeGreaterThan(0);
    // ...but its signed credential still logs in, from those addresses and from anywhere.
    for (const address of ['127.0.2.2', '127.0.2.200', '127.0.0.1']) {
      expect((await tokenFrom(host, address, basic('team-b', teamB))).status).toBe(200);
    }
  });

  it('keeps a block through a flood of junk usernames, which is itself cut short', async () => {
    const attacker = '127.0.3.1';
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 10; attempt += 1) {
      statuses.push((await tokenFrom(host, attacker, basic('admin', `guess-${attempt}`))).status);
    }
    expect(statuses).toEqual(Array.from({ length: 10 }, () => 401));
    const junk = new Map<number, number>();
    for (let user = 0; user < 300; user += 1) {
      const status = (await tokenFrom(host, attacker, basic(`junk-${user}`, 'x'))).status;
      junk.set(status, (junk.get(status) ?? 0) + 1);
    }
    // 100 failures from one address in a minute, whatever the usernames, block the address.
    expect(junk.get(401)).toBe(90);
    expect(junk.get(429)).toBe(210);
    // Blocked, even with the right password: a block that answered right guesses would be an oracle.
    expect((await tokenFrom(host, attacker, basic('admin', adminPassword))).status).toBe(429);
    expect((await tokenFrom(host, '127.0.3.2', basic('admin', adminPassword))).status).toBe(200);
  });

  it('answers malformed Basic credentials with 401, not an anonymous token', async () => {
    for (const header of [
      `Basic ${Buffer.from('team-b').toString('base64')}`,
      'Basic !!!not-base64!!!',
      'Basic',
      'Digest username="team-b"',
    ]) {
      const answer = await tokenFrom(host, '127.0.0.1', header);
      expect(answer.status).toBe(401);
      expect(errorCode(answer)).toBe('UNAUTHORIZED');
    }
  });

  it("issues nothing for a namespace credential that outlives the credential's own expiry", async () => {
    const shortLived = await auth.credential('team-b', '2m');
    const expiresAt = claims(shortLived).exp;
    const answer = await tokenFrom(
      host,
      '127.0.0.1',
      basic('team-b', shortLived),
      'service=berth-registry&offline_token=true&scope=repository:team-a/web:pull',
    );
    expect(answer.status).toBe(200);
    expect(claims(answer.body.token as string).exp).toBeLessThanOrEqual(expiresAt);
    expect(claims(answer.body.refresh_token as string).exp).toBeLessThanOrEqual(expiresAt);
    expect(answer.body.expires_in).toBeLessThanOrEqual(120);
  });

  it('challenges an anonymous _catalog request for the catalog scope, with or without a token', async () => {
    const bare = await fetch(`${auth.registry.url}/v2/_catalog`);
    expect(bare.status).toBe(401);
    expect(bare.headers.get('www-authenticate')).toContain('scope="registry:catalog:*"');
    const anonymous = await fetchToken(auth.registry, undefined, ['registry:catalog:*']);
    const withToken = await fetch(`${auth.registry.url}/v2/_catalog`, {
      headers: { Authorization: `Bearer ${anonymous.token}` },
    });
    expect(withToken.status).toBe(401);
    expect(withToken.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    const namespace = await fetchToken(auth.registry, { username: 'team-b', password: teamB }, [
      'registry:catalog:*',
    ]);
    const listed = await fetch(`${auth.registry.url}/v2/_catalog`, {
      headers: { Authorization: `Bearer ${namespace.token}` },
    });
    expect(listed.status).toBe(200);
  });
});

describe('admin refresh tokens', () => {
  it('stop working when the admin password changes, and only then', async () => {
    const auth = await startAuthRegistry(policy);
    let registry: RegistryProcess = auth.registry;
    const restartWith = async (password: string): Promise<void> => {
      await registry.stop();
      const file = join(auth.storage, '..', 'admin-password');
      await writeFile(file, `${password}\n`, { mode: 0o600 });
      registry = await startBerth(auth.storage, {
        extraArgs: [
          '--log-level',
          'warn',
          '--policy',
          auth.policyFile,
          '--admin-password-file',
          file,
        ],
      });
    };
    const post = (form: Record<string, string>) =>
      fetch(`${registry.url}/token`, { method: 'POST', body: new URLSearchParams(form) });
    try {
      const login = await post({
        grant_type: 'password',
        username: 'admin',
        password: adminPassword,
        access_type: 'offline',
        client_id: 'test',
      });
      const { refresh_token: refreshToken } = (await login.json()) as { refresh_token: string };
      const refresh = () =>
        post({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'test' });
      expect((await refresh()).status).toBe(200);
      await restartWith(adminPassword);
      expect((await refresh()).status).toBe(200);
      await restartWith('a new admin password');
      expect((await refresh()).status).toBe(401);
    } finally {
      await registry.stop();
      await auth.stop();
    }
  });
});
