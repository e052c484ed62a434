import { maxScopesPerRequest, parseScopes } from './scope.ts';

describe('parseScopes', () => {
  it('merges repeated scopes of one repository into one entry', () => {
    const repeated = Array.from({ length: maxScopesPerRequest }, (_, index) =>
      index % 2 ? 'repository:team-a/web:pull' : 'repository:team-a/web:push,pull',
    );
    expect(parseScopes(repeated)).toEqual([
      { type: 'repository', name: 'team-a/web', actions: ['push', 'pull'] },
    ]);
    expect(parseScopes(['repository:a:pull repository:b:pull', 'repository:a:delete'])).toEqual([
      { type: 'repository', name: 'a', actions: ['pull', 'delete'] },
      { type: 'repository', name: 'b', actions: ['pull'] },
    ]);
  });

  it('drops scopes that name no valid repository', () => {
    expect(
      parseScopes([`repository:${'a'.repeat(201)}:pull`, 'repository:Team/Web:pull', 'nonsense']),
    ).toEqual([]);
    expect(parseScopes(['repository:localhost:5000/a:pull'])).toEqual([]);
  });

  it('refuses too many scopes, or one too long, with a 400', () => {
    const many = Array.from(
      { length: maxScopesPerRequest + 1 },
      (_, index) => `repository:r${index}:pull`,
    );
    expect(() => parseScopes(many)).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED', status: 400 }),
    );
    expect(() => parseScopes([`repository:a:${'pull,'.repeat(200)}`])).toThrow(
      expect.objectContaining({ status: 400 }),
    );
  });
});
