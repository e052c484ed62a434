import { dueForRotation, renderPullSecret, withPullSecret } from './pull-secret.ts';

describe('pull secrets', () => {
  const issuedAt = new Date('2026-11-01T00:00:00Z');
  const expiresAt = new Date('2026-12-01T00:00:00Z');

  it('hold the credential for every endpoint, as the kubelet reads a dockerconfigjson', () => {
    const secret = renderPullSecret({
      registry: { name: 'main', namespace: 'berth-system' },
      namespace: 'team-b',
      endpoints: ['localhost:5000', 'berth-main.berth-system.svc:5000'],
      credential: 'jwt',
      issuedAt,
      expiresAt,
    });
    expect(secret.type).toBe('kubernetes.io/dockerconfigjson');
    expect(secret.metadata.name).toBe('berth-pull-berth-system-main');
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

  it('rotate at two thirds of the lifetime', () => {
    expect(dueForRotation(issuedAt, expiresAt, new Date('2026-11-20T00:00:00Z'))).toBe(false);
    expect(dueForRotation(issuedAt, expiresAt, new Date('2026-11-21T00:00:01Z'))).toBe(true);
  });

  it('add and remove only Berth’s ServiceAccount entry, keeping the rest in order', () => {
    const others = [{ name: 'user-secret' }, { name: 'other-tool' }];
    expect(withPullSecret(others, 'berth-pull-x', true)).toEqual([
      ...others,
      { name: 'berth-pull-x' },
    ]);
    expect(
      withPullSecret([...others, { name: 'berth-pull-x' }], 'berth-pull-x', true),
    ).toBeUndefined();
    expect(withPullSecret([{ name: 'berth-pull-x' }, ...others], 'berth-pull-x', false)).toEqual(
      others,
    );
    expect(withPullSecret(undefined, 'berth-pull-x', false)).toBeUndefined();
  });
});
