import { matchRoute } from './route-table.ts';

const digest = `sha256:${'0'.repeat(64)}`;

describe('matchRoute', () => {
  it.each([
    ['/v2/', { kind: 'base' }],
    ['/v2', { kind: 'base' }],
    ['/v2/_catalog', { kind: 'catalog' }],
    ['/v2/a/tags/list', { kind: 'tags', name: 'a' }],
    ['/v2/team/app/manifests/v1', { kind: 'manifest', name: 'team/app', reference: 'v1' }],
    [`/v2/a/b/c/manifests/${digest}`, { kind: 'manifest', name: 'a/b/c', reference: digest }],
    [
      `/v2/a/manifests/sha256%3A${'0'.repeat(64)}`,
      { kind: 'manifest', name: 'a', reference: digest },
    ],
    // A name may contain an endpoint keyword as a component; the last keyword wins.
    [
      '/v2/x/manifests/y/manifests/latest',
      { kind: 'manifest', name: 'x/manifests/y', reference: 'latest' },
    ],
    ['/v2/x/blobs/uploads/', { kind: 'uploads', name: 'x' }],
    ['/v2/x/blobs/uploads', { kind: 'uploads', name: 'x' }],
    ['/v2/x/y/blobs/uploads/abc', { kind: 'upload', name: 'x/y', id: 'abc' }],
    [`/v2/x/blobs/${digest}`, { kind: 'blob', name: 'x', digest }],
    [`/v2/x/referrers/${digest}`, { kind: 'referrers', name: 'x', digest }],
  ])('%s', (path, route) => {
    expect(matchRoute(path)?.route).toEqual(route);
  });

  it.each([
    ['an escaped ..', '/v2/%2e%2e/tags/list'],
    ['a 15 KB name', `/v2/${'a'.repeat(15_000)}/tags/list`],
    ['an upper-case name', '/v2/A/blobs/uploads/'],
  ])('refuses %s with NAME_INVALID', (_what, path) => {
    expect(() => matchRoute(path)).toThrow(expect.objectContaining({ code: 'NAME_INVALID' }));
  });

  it.each(['/v1/', '/v2/x', '/v2/x/manifests/', '/v2/x/tags', '/healthz'])(
    'does not match %s',
    (path) => {
      expect(matchRoute(path)).toBeUndefined();
    },
  );
});
