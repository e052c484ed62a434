import { compilePolicy, type Identity } from './compile.ts';
import { repositoryDocumentSchema, type RepositoryDocument } from './schema.ts';

function repository(
  namespace: string,
  name: string,
  spec: Record<string, unknown> = {},
): RepositoryDocument {
  return repositoryDocumentSchema.parse({ metadata: { namespace, name }, spec });
}

const namespaces = new Map<string, Record<string, string>>([
  ['team-a', {}],
  ['team-b', { env: 'prod' }],
  ['team-c', { env: 'dev' }],
  ['team-d', {}],
]);
const ns = (namespace: string): Identity => ({ kind: 'namespace', namespace });
const actions = (set: ReadonlySet<string>) => [...set].sort();

describe('compilePolicy', () => {
  const policy = compilePolicy(
    {
      namespaces,
      repositories: [
        repository('team-a', 'web', {
          pull: { namespaces: ['team-d'], namespaceSelector: { matchLabels: { env: 'prod' } } },
          immutableTags: ['v*'],
        }),
        repository('team-a', 'everything', { path: 'team-a/*', push: { namespaces: ['team-c'] } }),
        repository('team-a', 'public', { path: 'team-a/public', visibility: 'Public' }),
        repository('team-b', 'steal', { path: 'team-a/secret' }),
      ],
    },
    { anonymousPull: true },
  );

  it('gives the owner everything and the named and selected namespaces pull', () => {
    expect(actions(policy.allowed(ns('team-a'), 'team-a/web'))).toEqual(['delete', 'pull', 'push']);
    expect(actions(policy.allowed(ns('team-b'), 'team-a/web'))).toEqual(['pull']);
    expect(actions(policy.allowed(ns('team-d'), 'team-a/web'))).toEqual(['pull']);
    expect(actions(policy.allowed(ns('team-c'), 'team-a/web'))).toEqual([]);
  });

  it('lets the exact path win over the subtree', () => {
    // team-c may push to the subtree, but team-a/web has its own rule.
    expect(actions(policy.allowed(ns('team-c'), 'team-a/tools/build'))).toEqual(['pull', 'push']);
    expect(actions(policy.allowed(ns('team-c'), 'team-a/web'))).toEqual([]);
  });

  it('refuses a claim outside the owning namespace, so a tenant cannot grant itself another tenant’s images', () => {
    expect(policy.rejected).toEqual([
      expect.objectContaining({ namespace: 'team-b', name: 'steal', reason: 'PathNotOwned' }),
    ]);
    expect(actions(policy.allowed(ns('team-b'), 'team-a/secret'))).toEqual([]);
  });

  it('gives nobody but the admin an undeclared path', () => {
    expect(actions(policy.allowed(ns('team-a'), 'elsewhere/app'))).toEqual([]);
    expect(actions(policy.allowed({ kind: 'admin' }, 'elsewhere/app'))).toEqual([
      'delete',
      'pull',
      'push',
    ]);
  });

  it('lets anyone pull a Public repository, anonymously only when allowed', () => {
    expect(actions(policy.allowed({ kind: 'anonymous' }, 'team-a/public'))).toEqual(['pull']);
    expect(actions(policy.allowed(ns('team-c'), 'team-a/public'))).toEqual(['pull']);
    expect(actions(policy.allowed({ kind: 'anonymous' }, 'team-a/web'))).toEqual([]);
    const closed = compilePolicy(
      { namespaces, repositories: [repository('team-a', 'public', { visibility: 'Public' })] },
      { anonymousPull: false },
    );
    expect(actions(closed.allowed({ kind: 'anonymous' }, 'team-a/public'))).toEqual([]);
  });

  it('gives a namespace that does not exist nothing, not even Public pulls', () => {
    expect(actions(policy.allowed(ns('gone'), 'team-a/public'))).toEqual([]);
    const withoutB = compilePolicy(
      {
        namespaces: new Map([['team-a', {}]]),
        repositories: [repository('team-a', 'web', { pull: { namespaces: ['team-b'] } })],
      },
      { anonymousPull: true },
    );
    expect(actions(withoutB.allowed(ns('team-b'), 'team-a/web'))).toEqual([]);
  });

  it('matches immutable tag globs', () => {
    expect(policy.isImmutableTag('team-a/web', 'v1.2')).toBe(true);
    expect(policy.isImmutableTag('team-a/web', 'latest')).toBe(false);
    expect(policy.isImmutableTag('team-a/other', 'v1')).toBe(false);
  });

  it('refuses a second claim of the same path', () => {
    const conflict = compilePolicy(
      {
        namespaces,
        repositories: [
          repository('team-a', 'one', { path: 'team-a/x' }),
          repository('team-a', 'two', { path: 'team-a/x' }),
        ],
      },
      { anonymousPull: false },
    );
    expect(conflict.rejected.map((r) => [r.name, r.reason])).toEqual([['two', 'PathConflict']]);
  });

  it('resolves set-based selectors', () => {
    const selected = compilePolicy(
      {
        namespaces,
        repositories: [
          repository('team-a', 'web', {
            pull: {
              namespaceSelector: {
                matchExpressions: [{ key: 'env', operator: 'In', values: ['dev', 'prod'] }],
              },
            },
          }),
        ],
      },
      { anonymousPull: false },
    );
    expect(
      ['team-b', 'team-c', 'team-d'].map((n) => selected.allowed(ns(n), 'team-a/web').has('pull')),
    ).toEqual([true, true, false]);
  });
});

describe('quotas and retention', () => {
  const policy = compilePolicy(
    {
      namespaces,
      repositories: [
        repository('team-a', 'web', {
          quota: { size: '1.5Gi' },
          retention: { keepLast: 3, keepTags: ['v*'], untaggedAfter: '72h' },
        }),
        repository('team-a', 'everything', { path: 'team-a/*', quota: { size: '10Gi' } }),
      ],
    },
    { anonymousPull: true },
  );

  it('gives each repository the quota of the Repository governing it, the most specific', () => {
    expect(policy.quotaFor('team-a/web')).toEqual({
      source: 'team-a/web',
      path: 'team-a/web',
      size: '1.5Gi',
      bytes: 1.5 * 1024 ** 3,
    });
    expect(policy.quotaFor('team-a/api')?.source).toBe('team-a/everything');
    expect(policy.governedBy('team-a/web/debug')).toBe('team-a/everything');
    expect(policy.quotaFor('team-b/api')).toBeUndefined();
  });

  it('compiles retention: globs, durations in milliseconds, orphan referrers kept by default', () => {
    const retention = policy.retentionFor('team-a/web');
    expect(retention?.keepLast).toBe(3);
    expect(retention?.keepTags.map((pattern) => pattern.test('v1.2'))).toEqual([true]);
    expect(retention?.untaggedAfter).toBe(72 * 3600 * 1000);
    expect(retention?.deleteOrphanReferrers).toBe(false);
    expect(policy.retentionFor('team-a/api')).toBeUndefined();
  });

  it('refuses a quota or duration it cannot read, saying what to write', () => {
    const parse = (spec: Record<string, unknown>) =>
      repositoryDocumentSchema.safeParse({ metadata: { namespace: 'a', name: 'b' }, spec });
    expect(parse({ quota: { size: '0' } }).error?.issues[0]?.message).toBe(
      'is not a size above zero; write e.g. 512Mi or 20Gi',
    );
    expect(parse({ retention: { untaggedAfter: 'soon' } }).error?.issues[0]?.message).toBe(
      'is not a duration; write e.g. 30s, 5m or 24h',
    );
    expect(parse({ retention: { keepLast: -1 } }).success).toBe(false);
  });
});

describe('mirrored paths', () => {
  const compile = (anonymousPull: boolean) =>
    compilePolicy(
      {
        namespaces,
        repositories: [repository('team-a', 'hub', { path: 'team-a/hub/*' })],
      },
      { anonymousPull, mirrorPrefixes: ['docker.io', 'team-a/hub'] },
    );
  const anonymous: Identity = { kind: 'anonymous' };

  it('lets anyone pull an undeclared path under a mirror prefix, and nothing more', () => {
    const policy = compile(true);
    expect(actions(policy.allowed(anonymous, 'docker.io/library/nginx'))).toEqual(['pull']);
    expect(actions(policy.allowed(ns('team-b'), 'docker.io/library/nginx'))).toEqual(['pull']);
    expect(actions(policy.allowed(ns('gone'), 'docker.io/library/nginx'))).toEqual([]);
    // The prefix itself is not under the prefix, nor is a sibling that shares its letters.
    expect(actions(policy.allowed(anonymous, 'docker.io'))).toEqual([]);
    expect(actions(policy.allowed(anonymous, 'docker.iox/library/nginx'))).toEqual([]);
  });

  it('asks for a credential when anonymous pulls are off', () => {
    const policy = compile(false);
    expect(actions(policy.allowed(anonymous, 'docker.io/library/nginx'))).toEqual([]);
    expect(actions(policy.allowed(ns('team-c'), 'docker.io/library/nginx'))).toEqual(['pull']);
  });

  it('leaves a mirrored path that a Repository declares to that Repository', () => {
    const policy = compile(true);
    expect(actions(policy.allowed(anonymous, 'team-a/hub/library/nginx'))).toEqual([]);
    expect(actions(policy.allowed(ns('team-b'), 'team-a/hub/library/nginx'))).toEqual([]);
    expect(actions(policy.allowed(ns('team-a'), 'team-a/hub/library/nginx'))).toEqual([
      'delete',
      'pull',
      'push',
    ]);
  });
});
