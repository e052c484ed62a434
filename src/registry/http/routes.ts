/**
 * The endpoints under `/v2/`, each with the parameters of its path. A route's name is always a
 * valid repository name (`matchRoute` in route-table.ts validates it before anything else runs).
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

/** The route of one kind, as its handler receives it. */
export type RouteOf<K extends RouteKind> = Extract<Route, { kind: K }>;

/** Some clients percent-encode the `:` of a digest. A malformed escape is left as it is. */
export function decodeSegment(segment: string): string {
  if (!segment.includes('%')) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
