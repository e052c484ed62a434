import { assertRepositoryName } from '../reference.ts';

/**
 * Matches `/v2/...` paths. Repository names contain slashes, so the name is everything before
 * the last endpoint keyword. A route's name is always a valid repository name: nothing else
 * may reach a lookup or a cache keyed by names.
 */
export type Route =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'tags'; name: string }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'uploads'; name: string }
  | { kind: 'upload'; name: string; id: string }
  | { kind: 'referrers'; name: string; digest: string };

export type RouteKind = Route['kind'];

const patterns: [RegExp, (match: RegExpExecArray) => Route][] = [
  [/^\/v2\/?$/, () => ({ kind: 'base' })],
  [/^\/v2\/_catalog$/, () => ({ kind: 'catalog' })],
  [/^\/v2\/(.+)\/tags\/list$/, (m) => ({ kind: 'tags', name: m[1] as string })],
  [
    /^\/v2\/(.+)\/manifests\/([^/]+)$/,
    (m) => ({ kind: 'manifest', name: m[1] as string, reference: decode(m[2] as string) }),
  ],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: 'uploads', name: m[1] as string })],
  [
    /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/,
    (m) => ({ kind: 'upload', name: m[1] as string, id: decode(m[2] as string) }),
  ],
  [
    /^\/v2\/(.+)\/blobs\/([^/]+)$/,
    (m) => ({ kind: 'blob', name: m[1] as string, digest: decode(m[2] as string) }),
  ],
  [
    /^\/v2\/(.+)\/referrers\/([^/]+)$/,
    (m) => ({ kind: 'referrers', name: m[1] as string, digest: decode(m[2] as string) }),
  ],
];

/** The route of a path, or undefined; throws NAME_INVALID for a route with an invalid name. */
export function matchRoute(path: string): Route | undefined {
  for (const [pattern, build] of patterns) {
    const match = pattern.exec(path);
    if (!match) continue;
    const route = build(match);
    if ('name' in route) assertRepositoryName(route.name);
    return route;
  }
  return undefined;
}

/** Some clients percent-encode the `:` of a digest. A malformed escape is left as it is. */
function decode(segment: string): string {
  if (!segment.includes('%')) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
