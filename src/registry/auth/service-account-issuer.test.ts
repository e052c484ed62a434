import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { exportJWK, SignJWT, type JWK } from 'jose';
import { pino } from 'pino';
import { InvalidTokenError } from '../../credentials/tokens.ts';
import type { ClusterGet } from './cluster-get.ts';
import { ServiceAccountIssuer } from './service-account-issuer.ts';
import { ServiceAccountAuthenticator } from './service-account-login.ts';

const issuer = 'https://kubernetes.default.svc.cluster.local';
const audience = 'berth.dev/berth-system/main';

interface Key {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly jwk: JWK;
}

async function rsaKey(kid: string): Promise<Key> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    kid,
    privateKey,
    jwk: { ...(await exportJWK(publicKey)), kid, use: 'sig', alg: 'RS256' },
  };
}

/** The two documents of an API server's OIDC discovery, served from `keys`; counts key reads. */
function discovery(keys: () => Key[]): { get: ClusterGet; keyReads: () => number } {
  let reads = 0;
  return {
    get: (path) => {
      if (path === '/.well-known/openid-configuration')
        return Promise.resolve({ issuer, jwks_uri: `${issuer}/openid/v1/jwks` });
      if (path === '/openid/v1/jwks') {
        reads++;
        return Promise.resolve({ keys: keys().map((key) => key.jwk) });
      }
      return Promise.reject(new Error(`GET ${path}: HTTP 404`));
    },
    keyReads: () => reads,
  };
}

/** The claims the API server's TokenRequest puts in a pod's token, with `overrides`. */
function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: issuer,
    aud: [audience],
    sub: 'system:serviceaccount:team-b:default',
    'kubernetes.io': {
      namespace: 'team-b',
      serviceaccount: { name: 'default', uid: '5a1f0e7e-0000-4000-8000-000000000001' },
      pod: { name: 'web-1', uid: '5a1f0e7e-0000-4000-8000-000000000002' },
    },
    ...overrides,
  };
}

async function sign(
  key: Key,
  payload: Record<string, unknown>,
  { expiresIn = 600, alg = 'RS256' }: { expiresIn?: number; alg?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(payload)
    .setProtectedHeader({ alg, kid: key.kid })
    .setIssuedAt(now - 5)
    .setNotBefore(now - 5)
    .setExpirationTime(now + expiresIn)
    .sign(key.privateKey);
}

async function refusal(verifying: Promise<unknown>): Promise<string> {
  const error = await verifying.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  if (!(error instanceof InvalidTokenError)) throw new Error(`not refused: ${String(error)}`);
  return error.message;
}

describe('ServiceAccountIssuer', () => {
  let cluster: Key;
  let verifier: ServiceAccountIssuer;

  beforeAll(async () => {
    cluster = await rsaKey('cluster-1');
    verifier = await ServiceAccountIssuer.discover(discovery(() => [cluster]).get, audience);
  });

  it("gives a genuine pod token's namespace, ServiceAccount and expiry", async () => {
    const token = await sign(cluster, claims());
    await expect(verifier.verify(token)).resolves.toEqual({
      namespace: 'team-b',
      serviceAccount: 'default',
      username: 'system:serviceaccount:team-b:default',
      expiresAt: expect.any(Number) as unknown,
    });
  });

  it.each([
    [
      'forged: signed by another key under the cluster kid',
      'forged',
      /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/,
    ],
    ['expired an hour ago', 'expired', /ERR_JWT_EXPIRED/],
    ['for another audience', 'audience', /ERR_JWT_CLAIM_VALIDATION_FAILED/],
    ["for the API server's own audience", 'api-audience', /ERR_JWT_CLAIM_VALIDATION_FAILED/],
    ['from another issuer', 'issuer', /ERR_JWT_CLAIM_VALIDATION_FAILED/],
    [
      'a legacy Secret token, without the bound claims',
      'legacy',
      /not a bound ServiceAccount token/,
    ],
    [
      'whose subject names another account than its claims',
      'subject',
      /subject and claims disagree/,
    ],
    [
      'signed with HS256 and the public key as the secret',
      'hmac',
      /ERR_JOSE_ALG_NOT_ALLOWED|ERR_JWKS/,
    ],
  ])('refuses a token %s', async (_name, kind, reason) => {
    const stranger = await rsaKey('cluster-1');
    const tokens: Record<string, () => Promise<string>> = {
      forged: () => sign(stranger, claims()),
      expired: () => sign(cluster, claims(), { expiresIn: -3600 }),
      audience: () => sign(cluster, claims({ aud: ['someone-else'] })),
      'api-audience': () => sign(cluster, claims({ aud: [issuer] })),
      issuer: () => sign(cluster, claims({ iss: 'https://evil.example' })),
      legacy: () =>
        sign(cluster, {
          iss: issuer,
          aud: [audience],
          sub: 'system:serviceaccount:team-b:default',
          'kubernetes.io/serviceaccount/namespace': 'team-b',
        }),
      subject: () => sign(cluster, claims({ sub: 'system:serviceaccount:team-a:default' })),
      hmac: () => {
        const now = Math.floor(Date.now() / 1000);
        return new SignJWT(claims())
          .setProtectedHeader({ alg: 'HS256', kid: cluster.kid })
          .setExpirationTime(now + 600)
          .sign(new TextEncoder().encode(JSON.stringify(cluster.jwk)));
      },
    };
    const token = await (tokens[kind] as () => Promise<string>)();
    expect(await refusal(verifier.verify(token))).toMatch(reason);
  });

  it('refuses a kid it does not know without reading the keys again within the cooldown', async () => {
    const first = await rsaKey('old');
    let served = [first];
    const { get, keyReads } = discovery(() => served);
    const rotating = await ServiceAccountIssuer.discover(get, audience);
    expect(keyReads()).toBe(1);
    const next = await rsaKey('new');
    served = [first, next];
    // Within 10 s of the last read a kid it does not know is refused without a read: forged
    // tokens with made-up kids cannot make the registry hammer the API server.
    expect(await refusal(rotating.verify(await sign(next, claims())))).toMatch(
      /ERR_JWKS_NO_MATCHING_KEY/,
    );
    expect(keyReads()).toBe(1);
  });

  it('refuses to start when the audience is the issuer (every pod token would log in)', async () => {
    await expect(
      ServiceAccountIssuer.discover(discovery(() => [cluster]).get, issuer),
    ).rejects.toThrow(/the API server's own audience/);
  });
});

describe('ServiceAccountAuthenticator', () => {
  let cluster: Key;
  let verifier: ServiceAccountIssuer;
  const logger = pino({ level: 'silent' });

  beforeAll(async () => {
    cluster = await rsaKey('cluster-1');
    verifier = await ServiceAccountIssuer.discover(discovery(() => [cluster]).get, audience);
  });

  /** The TokenReview's answer: the username the API server still authenticates, or none. */
  const reviewing = (username: string | undefined) => {
    const reviewed: string[] = [];
    return {
      reviewed,
      reviewer: {
        username: (token: string) => {
          reviewed.push(token);
          return Promise.resolve(username);
        },
      },
    };
  };

  it('logs in a token the review confirms, as its namespace', async () => {
    const { reviewer } = reviewing('system:serviceaccount:team-b:default');
    const login = await new ServiceAccountAuthenticator(verifier, reviewer, logger).logIn(
      await sign(cluster, claims()),
    );
    expect(login).toMatchObject({
      identity: { kind: 'namespace', namespace: 'team-b' },
      serviceAccount: 'default',
    });
  });

  it('refuses a valid signature whose ServiceAccount or pod is deleted (the review says no)', async () => {
    const { reviewer, reviewed } = reviewing(undefined);
    const token = await sign(cluster, claims());
    await expect(
      new ServiceAccountAuthenticator(verifier, reviewer, logger).logIn(token),
    ).resolves.toBeUndefined();
    expect(reviewed).toEqual([token]);
  });

  it('refuses when the review names another account than the token', async () => {
    const { reviewer } = reviewing('system:serviceaccount:team-a:default');
    await expect(
      new ServiceAccountAuthenticator(verifier, reviewer, logger).logIn(
        await sign(cluster, claims()),
      ),
    ).resolves.toBeUndefined();
  });

  it('never sends a forged, expired or non-JWT password to the API server', async () => {
    const { reviewer, reviewed } = reviewing('system:serviceaccount:team-b:default');
    const authenticator = new ServiceAccountAuthenticator(verifier, reviewer, logger);
    const stranger = await rsaKey('cluster-1');
    for (const token of [
      await sign(stranger, claims()),
      await sign(cluster, claims(), { expiresIn: -3600 }),
      'a-namespace-credential',
    ])
      await expect(authenticator.logIn(token)).resolves.toBeUndefined();
    expect(reviewed).toEqual([]);
  });

  it('fails closed, as UNAVAILABLE, when the API server cannot review', async () => {
    const reviewer = { username: () => Promise.reject(new Error('connect ECONNREFUSED')) };
    await expect(
      new ServiceAccountAuthenticator(verifier, reviewer, logger).logIn(
        await sign(cluster, claims()),
      ),
    ).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
