import { createHash, randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import {
  adminPassword,
  fetchToken,
  readKeyFile,
  startAuthRegistry,
  type AuthRegistry,
} from '../support/auth.ts';
import { waitFor } from '../support/processes.ts';

/**
 * Token authentication against a real `berth registry` process: what each identity may do, and
 * the attacks a token service must refuse.
 */
const policy = {
  namespaces: { 'team-a': {}, 'team-b': { env: 'prod' }, 'team-c': {}, 'team-d': {} },
  repositories: [
    {
      metadata: { name: 'web', namespace: 'team-a' },
      spec: {
        pull: { namespaceSelector: { matchLabels: { env: 'prod' } } },
        push: { namespaces: ['team-c'] },
        immutableTags: ['v*'],
      },
    },
    { metadata: { name: 'public', namespace: 'team-a' }, spec: { visibility: 'Public' } },
    {
      metadata: { name: 'other', namespace: 'team-a' },
      spec: { pull: { namespaces: ['team-b'] } },
    },
  ],
};

const ociManifest = 'application/vnd.oci.image.manifest.v1+json';
const sha256 = (data: Buffer | string) =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('authentication and authorization', () => {
  let auth: AuthRegistry;
  let url: string;
  const credentials: Record<string, string> = {};

  async function tokenFor(username: string, scopes: string[]): Promise<string> {
    const password = username === 'admin' ? adminPassword : (credentials[username] as string);
    const answer = await fetchToken(auth.registry, { username, password }, scopes);
    expect(answer.status).toBe(200);
    return answer.token as string;
  }

  const get = (path: string, token?: string) =>
    fetch(`${url}${path}`, { headers: token ? { Authorization: `Bearer ${token}` } : {} });

  /** Pushes a one-layer image with a fresh config, so each call makes a new digest. */
  async function pushImage(repository: string, tag: string, token: string): Promise<Response> {
    const headers = { Authorization: `Bearer ${token}` };
    const blobs = [
      randomBytes(64),
      Buffer.from(
        JSON.stringify({
          created: new Date().toISOString(),
          nonce: randomBytes(8).toString('hex'),
        }),
      ),
    ];
    for (const blob of blobs) {
      const response = await fetch(
        `${url}/v2/${repository}/blobs/uploads/?digest=${sha256(blob)}`,
        { method: 'POST', body: blob, headers },
      );
      if (response.status !== 201) return response;
    }
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: ociManifest,
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256(blobs[1] as Buffer),
        size: (blobs[1] as Buffer).length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: sha256(blobs[0] as Buffer),
          size: 64,
        },
      ],
    });
    return fetch(`${url}/v2/${repository}/manifests/${tag}`, {
      method: 'PUT',
      body: manifest,
      headers: { ...headers, 'Content-Type': ociManifest },
    });
  }

  beforeAll(async () => {
    auth = await startAuthRegistry(policy);
    url = auth.registry.url;
    for (const namespace of ['team-a', 'team-b', 'team-c', 'team-d'])
      credentials[namespace] = await auth.credential(namespace);
    const token = await tokenFor('team-a', [
      'repository:team-a/web:pull,push',
      'repository:team-a/public:pull,push',
      'repository:team-a/other:pull,push',
    ]);
    for (const repository of ['team-a/web', 'team-a/public', 'team-a/other']) {
      expect((await pushImage(repository, 'latest', token)).status).toBe(201);
    }
  });

  afterAll(async () => {
    await auth?.stop();
  });

  it('challenges a request without credentials with a Bearer realm on its own host', async () => {
    const response = await get('/v2/');
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe(
      `Bearer realm="${url}/token",service="berth-registry"`,
    );
    const repository = await get('/v2/team-a/web/manifests/latest');
    expect(repository.status).toBe(401);
    expect(repository.headers.get('www-authenticate')).toContain(
      'scope="repository:team-a/web:pull"',
    );
    expect(((await repository.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe(
      'UNAUTHORIZED',
    );
  });

  it('issues tokens whose access is cut down to the policy', async () => {
    const answer = await fetchToken(
      auth.registry,
      { username: 'team-b', password: credentials['team-b'] as string },
      ['repository:team-a/web:pull,push,delete', 'repository:team-a/secret:pull'],
    );
    expect(answer.status).toBe(200);
    const claims = JSON.parse(
      Buffer.from((answer.token as string).split('.')[1] as string, 'base64url').toString(),
    ) as { access: unknown };
    expect(claims.access).toEqual([{ type: 'repository', name: 'team-a/web', actions: ['pull'] }]);
    expect(answer.body).toMatchObject({ expires_in: 300, access_token: answer.token });
    expect(typeof answer.body.issued_at).toBe('string');
  });

  it('lets each namespace do what the policy says and refuses the rest with 403 DENIED', async () => {
    const teamB = await tokenFor('team-b', ['repository:team-a/web:pull,push']);
    expect((await get('/v2/team-a/web/manifests/latest', teamB)).status).toBe(200);
    const denied = await pushImage('team-a/web', 'from-b', teamB);
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe(
      'DENIED',
    );

    const teamC = await tokenFor('team-c', ['repository:team-a/web:pull,push']);
    expect((await pushImage('team-a/web', 'from-c', teamC)).status).toBe(201);

    const teamD = await tokenFor('team-d', ['repository:team-a/web:pull']);
    const refused = await get('/v2/team-a/web/manifests/latest', teamD);
    expect(refused.status).toBe(403);
  });

  it('lets anyone pull a Public repository anonymously but not push to it', async () => {
    expect((await get('/v2/team-a/public/manifests/latest')).status).toBe(200);
    const anonymous = await fetchToken(auth.registry, undefined, [
      'repository:team-a/public:pull,push',
    ]);
    const claims = JSON.parse(
      Buffer.from((anonymous.token as string).split('.')[1] as string, 'base64url').toString(),
    ) as { access: unknown };
    expect(claims.access).toEqual([
      { type: 'repository', name: 'team-a/public', actions: ['pull'] },
    ]);
    expect((await pushImage('team-a/public', 'anon', anonymous.token as string)).status).toBe(401);
  });

  it('serves the OAuth2 POST flow: password grant with a refresh token, then the refresh grant', async () => {
    const post = (form: Record<string, string>) =>
      fetch(`${url}/token`, {
        method: 'POST',
        body: new URLSearchParams(form),
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      });
    const first = await post({
      grant_type: 'password',
      username: 'team-b',
      password: credentials['team-b'] as string,
      service: 'berth-registry',
      client_id: 'containerd-client',
      access_type: 'offline',
      scope: 'repository:team-a/web:pull repository:team-a/web:push',
    });
    expect(first.status).toBe(200);
    const body = (await first.json()) as {
      access_token: string;
      refresh_token: string;
      scope: string;
    };
    expect(body.scope).toBe('repository:team-a/web:pull');
    expect((await get('/v2/team-a/web/manifests/latest', body.access_token)).status).toBe(200);
    const refreshed = await post({
      grant_type: 'refresh_token',
      refresh_token: body.refresh_token,
      service: 'berth-registry',
      client_id: 'docker',
      scope: 'repository:team-a/web:pull',
    });
    expect(refreshed.status).toBe(200);
    const renewed = (await refreshed.json()) as { access_token: string; refresh_token?: string };
    // The refresh grant never extends itself: one leaked refresh token cannot live forever.
    expect(renewed.refresh_token).toBeUndefined();
    const token = renewed.access_token;
    expect((await get('/v2/team-a/web/manifests/latest', token)).status).toBe(200);
    expect(
      (await post({ grant_type: 'refresh_token', refresh_token: 'forged', client_id: 'x' })).status,
    ).toBe(401);
    expect((await post({ grant_type: 'client_credentials', client_id: 'x' })).status).toBe(400);
  });

  it('refuses a wrong password and a credential for another namespace', async () => {
    expect(
      (await fetchToken(auth.registry, { username: 'admin', password: 'wrong' }, [])).status,
    ).toBe(401);
    expect(
      (
        await fetchToken(
          auth.registry,
          { username: 'team-d', password: credentials['team-a'] as string },
          [],
        )
      ).status,
    ).toBe(401);
  });

  describe('attacks', () => {
    async function forged(options: {
      key?: CryptoKey | Uint8Array;
      alg?: string;
      kid?: string;
      claims?: Record<string, unknown>;
      exp?: number;
    }): Promise<string> {
      const [stored] = await readKeyFile(auth.keyFile);
      const key =
        options.key ?? ((await importJWK(stored?.privateJwk as JWK, 'ES256')) as CryptoKey);
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({
        use: 'access',
        access: [{ type: 'repository', name: 'team-a/web', actions: ['pull', 'push'] }],
        ...options.claims,
      })
        .setProtectedHeader({ alg: options.alg ?? 'ES256', kid: options.kid ?? stored?.kid })
        .setIssuer((options.claims?.iss as string) ?? 'berth')
        .setAudience((options.claims?.aud as string) ?? 'berth-registry')
        .setSubject('namespace:team-a')
        .setIssuedAt(now - 10)
        .setExpirationTime(options.exp ?? now + 300)
        .sign(key);
    }

    async function expectInvalid(token: string): Promise<void> {
      const response = await get('/v2/team-a/web/manifests/latest', token);
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toContain('error="invalid_token"');
    }

    it('accepts the control: a well-formed token signed by the registry key', async () => {
      expect((await get('/v2/team-a/web/manifests/latest', await forged({}))).status).toBe(200);
    });

    it('refuses an expired token', async () => {
      await expectInvalid(await forged({ exp: Math.floor(Date.now() / 1000) - 120 }));
    });

    it('refuses a token signed by another key, even one claiming the right kid', async () => {
      const { privateKey } = await generateKeyPair('ES256');
      await expectInvalid(await forged({ key: privateKey }));
    });

    it('refuses alg none', async () => {
      const [stored] = await readKeyFile(auth.keyFile);
      const header = Buffer.from(JSON.stringify({ alg: 'none', kid: stored?.kid })).toString(
        'base64url',
      );
      const now = Math.floor(Date.now() / 1000);
      const payload = Buffer.from(
        JSON.stringify({
          use: 'access',
          iss: 'berth',
          aud: 'berth-registry',
          sub: 'namespace:team-a',
          exp: now + 300,
          access: [{ type: 'repository', name: 'team-a/web', actions: ['pull'] }],
        }),
      ).toString('base64url');
      await expectInvalid(`${header}.${payload}.`);
    });

    it('refuses HS256 keyed with the public key', async () => {
      const [stored] = await readKeyFile(auth.keyFile);
      const { d: _private, ...publicJwk } = stored?.privateJwk as JWK & { d: string };
      const secret = new TextEncoder().encode(JSON.stringify(publicJwk));
      await expectInvalid(await forged({ key: secret, alg: 'HS256' }));
      const exported = await exportJWK(await importJWK(publicJwk as JWK, 'ES256'));
      await expectInvalid(
        await forged({ key: new TextEncoder().encode(exported.x ?? ''), alg: 'HS256' }),
      );
    });

    it('refuses a wrong audience or issuer', async () => {
      await expectInvalid(await forged({ claims: { aud: 'another-registry' } }));
      await expectInvalid(await forged({ claims: { iss: 'someone-else' } }));
    });

    it('refuses a refresh token or a credential used as an access token', async () => {
      await expectInvalid(credentials['team-a'] as string);
      await expectInvalid(await forged({ claims: { use: 'refresh' } }));
    });

    it('refuses a token for repository A on repository B', async () => {
      const forWeb = await tokenFor('team-b', ['repository:team-a/web:pull']);
      const response = await get('/v2/team-a/other/manifests/latest', forWeb);
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
      // With a token for B, the same namespace may read B (the policy allows it).
      expect(
        (
          await get(
            '/v2/team-a/other/manifests/latest',
            await tokenFor('team-b', ['repository:team-a/other:pull']),
          )
        ).status,
      ).toBe(200);
    });

    it('refuses to move an immutable tag, but allows pushing it again unchanged', async () => {
      const token = await tokenFor('team-a', ['repository:team-a/web:pull,push']);
      expect((await pushImage('team-a/web', 'v1.0', token)).status).toBe(201);
      const moved = await pushImage('team-a/web', 'v1.0', token);
      expect(moved.status).toBe(403);
      expect(((await moved.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe(
        'DENIED',
      );
      const manifest = await get('/v2/team-a/web/manifests/v1.0', token);
      const same = await fetch(`${url}/v2/team-a/web/manifests/v1.0`, {
        method: 'PUT',
        body: Buffer.from(await manifest.arrayBuffer()),
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': ociManifest },
      });
      expect(same.status).toBe(201);
    });

    it('refuses deleting an immutable tag, or the manifest it points at', async () => {
      const token = await tokenFor('team-a', ['repository:team-a/web:pull,push,delete']);
      expect((await pushImage('team-a/web', 'v2.0', token)).status).toBe(201);
      const head = await fetch(`${url}/v2/team-a/web/manifests/v2.0`, {
        method: 'HEAD',
        headers: { Authorization: `Bearer ${token}` },
      });
      const digest = head.headers.get('docker-content-digest') as string;
      for (const reference of ['v2.0', digest]) {
        const response = await fetch(`${url}/v2/team-a/web/manifests/${reference}`, {
          method: 'DELETE',
          headers: { Authorization: `Bearer ${token}` },
        });
        expect(response.status).toBe(403);
      }
      expect((await get('/v2/team-a/web/manifests/v2.0', token)).status).toBe(200);
    });

    it('lists in the catalog only what the caller may pull, and only with a catalog token', async () => {
      const forRepository = await tokenFor('team-b', ['repository:team-a/web:pull']);
      const refused = await get('/v2/_catalog', forRepository);
      expect(refused.status).toBe(401);
      expect(refused.headers.get('www-authenticate')).toContain('scope="registry:catalog:*"');
      const listing = await get('/v2/_catalog', await tokenFor('team-b', ['registry:catalog:*']));
      expect(((await listing.json()) as { repositories: string[] }).repositories).toEqual([
        'team-a/other',
        'team-a/public',
        'team-a/web',
      ]);
      const stranger = await get('/v2/_catalog', await tokenFor('team-d', ['registry:catalog:*']));
      expect(((await stranger.json()) as { repositories: string[] }).repositories).toEqual([
        'team-a/public',
      ]);
    });

    it('refuses an oversized username without keeping it', async () => {
      const answer = await fetchToken(
        auth.registry,
        { username: 'x'.repeat(10_000), password: 'p' },
        [],
      );
      expect(answer.status).toBe(401);
    });

    it('revokes a namespace removed from the policy on its next request, though its token is unexpired', async () => {
      const token = await tokenFor('team-b', ['repository:team-a/web:pull']);
      expect((await get('/v2/team-a/web/manifests/latest', token)).status).toBe(200);
      await auth.writePolicy({ ...policy, namespaces: { ...policy.namespaces, 'team-b': {} } });
      const changed = Date.now();
      await waitFor(
        async () => (await get('/v2/team-a/web/manifests/latest', token)).status === 403,
        1000,
        'revocation',
      );
      expect(Date.now() - changed).toBeLessThan(1000);
      await auth.writePolicy(policy);
      await waitFor(
        async () => (await get('/v2/team-a/web/manifests/latest', token)).status === 200,
        1000,
        'the grant to return',
      );
    });

    it('answers 1,000 wrong passwords with 429 while a valid client keeps pulling', async () => {
      const pulling = await tokenFor('team-b', ['repository:team-a/web:pull']);
      const statuses = new Map<number, number>();
      let pulls = 0;
      for (let attempt = 0; attempt < 1000; attempt += 1) {
        const answer = await fetchToken(
          auth.registry,
          { username: 'team-d', password: `guess-${attempt}` },
          ['repository:team-a/web:pull'],
        );
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        if (attempt % 50 === 0) {
          expect((await get('/v2/team-a/web/manifests/latest', pulling)).status).toBe(200);
          // A valid login of another user is not slowed down either.
          expect(
            (
              await fetchToken(
                auth.registry,
                { username: 'team-b', password: credentials['team-b'] as string },
                [],
              )
            ).status,
          ).toBe(200);
          pulls += 1;
        }
      }
      expect(statuses.get(429)).toBeGreaterThanOrEqual(990);
      expect(pulls).toBe(20);
      const blocked = await fetch(`${url}/token?service=berth-registry`, {
        headers: { Authorization: `Basic ${Buffer.from('team-d:again').toString('base64')}` },
      });
      expect(blocked.status).toBe(429);
      expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
    });
  });
});
