import type { KubeObject } from '../kube/client.ts';
import { pullSecretProblem, readPullSecret, type CredentialVerdict } from './pull-secret-check.ts';
import { renderPullSecret } from './render/pull-secret.ts';

const now = new Date('2030-01-01T00:00:00Z');
const issuedAt = new Date('2030-01-01T00:00:00Z');
const expiresAt = new Date('2030-01-31T00:00:00Z');
const hosts = ['berth-main.berth-system.svc:5000', 'localhost:5000'];
/** A JWT-shaped credential whose header names key `k1` (the signature is the verdict's to judge). */
const credential = `${Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'k1' })).toString('base64url')}.e30.sig`;
const expected = {
  registry: { name: 'main', namespace: 'berth-system' },
  namespace: 'team-a',
  endpoints: hosts,
  activeKeyId: 'k1',
  now,
};
const valid: CredentialVerdict = {
  valid: true,
  namespace: 'team-a',
  expiresAt: Math.floor(expiresAt.getTime() / 1000) * 1000,
};

/** The Secret as the API server returns it: stringData turned into base64 data. */
function stored(password = credential, namespace = 'team-a'): KubeObject {
  const rendered = renderPullSecret({
    registry: expected.registry,
    namespace,
    endpoints: hosts,
    credential: password,
    issuedAt,
    expiresAt,
    keyId: 'k1',
  });
  const { stringData, ...rest } = rendered as KubeObject & { stringData: Record<string, string> };
  return {
    ...rest,
    data: {
      '.dockerconfigjson': Buffer.from(stringData['.dockerconfigjson'] ?? '').toString('base64'),
    },
  };
}

function problemOf(secret: KubeObject, verdict: CredentialVerdict = valid): string | undefined {
  return pullSecretProblem(secret, readPullSecret(secret, 'team-a'), verdict, expected);
}

describe('pullSecretProblem', () => {
  it('finds nothing wrong with the Secret Berth rendered', () => {
    expect(readPullSecret(stored(), 'team-a')).toEqual({ credential, keyId: 'k1' });
    expect(problemOf(stored())).toBeUndefined();
  });

  it('refuses a credential the keys do not verify, and says why', () => {
    expect(problemOf(stored('garbage'), { valid: false, reason: 'malformed token' })).toBe(
      'its credential does not verify: malformed token',
    );
  });

  it('refuses another namespace’s credential, an old key’s, an expired one', () => {
    expect(problemOf(stored(), { ...valid, namespace: 'team-b' })).toBe(
      'its credential names namespace team-b, not team-a',
    );
    expect(
      pullSecretProblem(stored(), readPullSecret(stored(), 'team-a'), valid, {
        ...expected,
        activeKeyId: 'k2',
      }),
    ).toBe('its credential is signed by key k1, not k2');
    expect(problemOf(stored(), { ...valid, expiresAt: now.getTime() - 1 })).toMatch(/expired/);
    // Valid now, but gone before the rotation its annotation schedules.
    expect(problemOf(stored(), { ...valid, expiresAt: now.getTime() + 60_000 })).toMatch(
      /before its annotation says/,
    );
  });

  it('refuses entries that disagree with each other or with the namespace', () => {
    const edited = (auths: Record<string, unknown>): KubeObject => ({
      ...stored(),
      data: {
        '.dockerconfigjson': Buffer.from(JSON.stringify({ auths })).toString('base64'),
      },
    });
    const entry = (username: string, password: string, auth?: string) => ({
      username,
      password,
      auth: auth ?? Buffer.from(`${username}:${password}`).toString('base64'),
    });
    expect(
      readPullSecret(
        edited({ a: entry('team-a', credential), b: entry('team-a', 'other') }),
        'team-a',
      ),
    ).toEqual({ problem: 'its entries carry different credentials' });
    expect(readPullSecret(edited({ a: entry('team-b', credential) }), 'team-a')).toEqual({
      problem: 'the entry for a does not name namespace team-a',
    });
    expect(readPullSecret(edited({ a: entry('team-a', credential, 'eA==') }), 'team-a')).toEqual({
      problem: 'the auth of a is not its username and password',
    });
    expect(readPullSecret(edited({}), 'team-a')).toEqual({ problem: 'it has no auths' });
    expect(
      readPullSecret({ ...stored(), data: { '.dockerconfigjson': 'bm90IGpzb24=' } }, 'team-a'),
    ).toEqual({ problem: 'its .dockerconfigjson is not JSON' });
  });

  it('refuses a rendered label or annotation edited by hand, and ignores others’ additions', () => {
    const secret = stored();
    const annotations = { ...secret.metadata.annotations, 'berth.dev/registry': 'somebody/else' };
    expect(problemOf({ ...secret, metadata: { ...secret.metadata, annotations } })).toBe(
      'its annotation berth.dev/registry is "somebody/else", not "berth-system/main"',
    );
    const added = { ...secret.metadata.annotations, 'example.com/note': 'mine' };
    expect(problemOf({ ...secret, metadata: { ...secret.metadata, annotations: added } })).toBe(
      undefined,
    );
  });
});
