import {
  dueForRotation,
  pullSecretName,
  renderPullSecret,
  rotationTime,
  servedServiceAccount,
  withPullSecrets,
} from './pull-secret.ts';

describe('pull secrets', () => {
  const issuedAt = new Date('2026-11-01T00:00:00Z');
  const expiresAt = new Date('2026-12-01T00:00:00Z');

  it('hold the credential for every endpoint, as the kubelet reads a dockerconfigjson', () => {
    const secret = renderPullSecret({
      registry: { name: 'main', namespace: 'berth-system' },
      namespace: 'team-b',
      endpoints: ['localhost:5000', 'berth-main.berth-system.svc:5000'],
      credential: 'jwt',
      keyId: 'kid-1',
      issuedAt,
      expiresAt,
    });
    expect(secret.type).toBe('kubernetes.io/dockerconfigjson');
    expect(secret.metadata.name).toBe('berth-pull.berth-system.main');
    const config = JSON.parse(
      (secret.stringData as Record<string, string>)['.dockerconfigjson'] as string,
    ) as {
      auths: Record<string, { username: string; password: string; auth: string }>;
    };
    expect(Object.keys(config.auths)).toEqual([
      'localhost:5000',
      'berth-main.berth-system.svc:5000',
    ]);
    for (const entry of Object.values(config.auths)) {
      expect(entry).toEqual({
        username: 'team-b',
        password: 'jwt',
        auth: Buffer.from('team-b:jwt').toString('base64'),
      });
    }
    expect(secret.metadata.annotations).toMatchObject({
      'argocd.argoproj.io/compare-options': 'IgnoreExtraneous',
    });
  });

  it('are named so that no two Registries share one', () => {
    expect(pullSecretName('a', 'b-c')).not.toBe(pullSecretName('a-b', 'c'));
    expect(pullSecretName('berth-system', 'main')).toBe('berth-pull.berth-system.main');
  });

  it('rotate at two thirds of the lifetime', () => {
    expect(dueForRotation(issuedAt, expiresAt, new Date('2026-11-20T00:00:00Z'))).toBe(false);
    expect(dueForRotation(issuedAt, expiresAt, new Date('2026-11-21T00:00:01Z'))).toBe(true);
  });

  it('never rotate sooner than 10 s after issue, whatever the lifetime, so no Secret is rewritten in a loop', () => {
    for (const lifetime of [0, 1, 6_000]) {
      const expires = new Date(issuedAt.getTime() + lifetime);
      expect(rotationTime(issuedAt, expires).getTime() - issuedAt.getTime()).toBe(10_000);
      expect(dueForRotation(issuedAt, expires, new Date(issuedAt.getTime() + 9_999))).toBe(false);
    }
  });

  it('add and remove only Berth’s ServiceAccount entries, keeping the rest in order', () => {
    const others = [{ name: 'user-secret' }, { name: 'other-tool' }];
    expect(withPullSecrets(others, ['berth-pull.x'])).toEqual([
      ...others,
      { name: 'berth-pull.x' },
    ]);
    expect(
      withPullSecrets([...others, { name: 'berth-pull.x' }], ['berth-pull.x']),
    ).toBeUndefined();
    expect(withPullSecrets([{ name: 'berth-pull.x' }, ...others], [])).toEqual(others);
    // A Registry that stopped granting loses its entry; the one still granting keeps its place.
    expect(
      withPullSecrets(
        [{ name: 'berth-pull.a' }, { name: 'user-secret' }, { name: 'berth-pull.b' }],
        ['berth-pull.b', 'berth-pull.c'],
      ),
    ).toEqual([{ name: 'user-secret' }, { name: 'berth-pull.b' }, { name: 'berth-pull.c' }]);
    expect(withPullSecrets(undefined, [])).toBeUndefined();
  });

  it('serve every ServiceAccount, only default, or none', () => {
    expect(servedServiceAccount('All', 'builder')).toBe(true);
    expect(servedServiceAccount('Default', 'default')).toBe(true);
    expect(servedServiceAccount('Default', 'builder')).toBe(false);
    expect(servedServiceAccount('None', 'default')).toBe(false);
  });
});
