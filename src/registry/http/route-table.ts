import type { Requirement } from '../auth/access-control.ts';
import type { Action } from '../../policy/compile.ts';
import { assertRepositoryName } from '../reference.ts';
import {
  cancelUpload,
  completeUpload,
  deleteBlob,
  getBlob,
  getUploadStatus,
  patchUpload,
  startUpload,
} from './blob-handlers.ts';
import type { HandlerContext } from './context.ts';
import {
  deleteManifest,
  getCatalog,
  getManifest,
  getReferrers,
  getTags,
  putManifest,
} from './manifest-handlers.ts';
import { decodeSegment, type Route, type RouteKind, type RouteOf } from './routes.ts';

/**
 * What an endpoint requires of the caller, as in distribution: reads pull, writes pull and
 * push, deletes delete; `/v2/` only a known caller, and `_catalog` a token granting
 * `registry:catalog:*` (its listing is then filtered per caller).
 */
export type AccessNeed = 'authenticated' | 'catalog' | 'pull' | 'push' | 'delete';

/** Whether an endpoint changes a repository; a pull-through mirror refuses those. */
type Effect = 'reads' | 'writes';

interface Endpoint<R extends Route> {
  readonly handler: (ctx: HandlerContext, route: R) => Promise<void>;
  readonly access: AccessNeed;
  readonly effect: Effect;
}

const methods = ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE'] as const;
type Method = (typeof methods)[number];

const methodNames: ReadonlySet<string> = new Set(methods);

function isMethod(method: string): method is Method {
  return methodNames.has(method);
}

/** One row of the table: the path it matches, how the match becomes a route, what serves it. */
interface RouteEntry<K extends RouteKind> {
  readonly kind: K;
  readonly pattern: RegExp;
  readonly parse: (match: RegExpExecArray) => RouteOf<K>;
  readonly methods: Partial<Record<Method, Endpoint<RouteOf<K>>>>;
  /**
   * What any other method requires before it is answered 405, as distribution decides it: a
   * caller without rights to the endpoint learns nothing more about it.
   */
  readonly otherMethods: AccessNeed;
}

/** An endpoint bound to the route it was matched for, so dispatch needs no cast. */
export interface BoundEndpoint {
  readonly writes: boolean;
  serve(ctx: HandlerContext): Promise<void>;
}

/** A path matched to its entry: its route, and what serves each method on it. */
export interface MatchedRoute {
  readonly route: Route;
  /** What the caller must be allowed before the method is served (or refused as unsupported). */
  requirement(method: string): Requirement;
  /** Undefined for a method the route does not serve (405 UNSUPPORTED). */
  endpoint(method: string): BoundEndpoint | undefined;
}

const read = <R extends Route>(
  handler: Endpoint<R>['handler'],
  access: AccessNeed = 'pull',
): Endpoint<R> => ({ handler, access, effect: 'reads' });
const write = <R extends Route>(
  handler: Endpoint<R>['handler'],
  access: AccessNeed = 'push',
): Endpoint<R> => ({ handler, access, effect: 'writes' });

async function sendBase(ctx: HandlerContext, _route: RouteOf<'base'>): Promise<void> {
  ctx.res.status(200).json({});
}

/**
 * Every `/v2/` endpoint, tried in order. Repository names contain slashes, so the name is
 * everything before the last endpoint keyword.
 */
const routeTable: readonly RouteMatcher[] = [
  defineRoute({
    kind: 'base',
    pattern: /^\/v2\/?$/,
    parse: () => ({ kind: 'base' }),
    methods: { GET: read(sendBase, 'authenticated'), HEAD: read(sendBase, 'authenticated') },
    otherMethods: 'authenticated',
  }),
  defineRoute({
    kind: 'catalog',
    pattern: /^\/v2\/_catalog$/,
    parse: () => ({ kind: 'catalog' }),
    methods: { GET: read(getCatalog, 'catalog') },
    otherMethods: 'catalog',
  }),
  defineRoute({
    kind: 'tags',
    pattern: /^\/v2\/(.+)\/tags\/list$/,
    parse: (m) => ({ kind: 'tags', name: m[1] as string }),
    methods: { GET: read(getTags) },
    otherMethods: 'pull',
  }),
  defineRoute({
    kind: 'manifest',
    pattern: /^\/v2\/(.+)\/manifests\/([^/]+)$/,
    parse: (m) => ({
      kind: 'manifest',
      name: m[1] as string,
      reference: decodeSegment(m[2] as string),
    }),
    methods: {
      GET: read(getManifest),
      HEAD: read(getManifest),
      PUT: write(putManifest),
      DELETE: write(deleteManifest, 'delete'),
    },
    otherMethods: 'push',
  }),
  defineRoute({
    kind: 'uploads',
    pattern: /^\/v2\/(.+)\/blobs\/uploads\/?$/,
    parse: (m) => ({ kind: 'uploads', name: m[1] as string }),
    methods: { POST: write(startUpload) },
    otherMethods: 'push',
  }),
  defineRoute({
    kind: 'upload',
    pattern: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/,
    parse: (m) => ({ kind: 'upload', name: m[1] as string, id: decodeSegment(m[2] as string) }),
    methods: {
      GET: write(getUploadStatus),
      PATCH: write(patchUpload),
      PUT: write(completeUpload),
      DELETE: write(cancelUpload),
    },
    otherMethods: 'push',
  }),
  defineRoute({
    kind: 'blob',
    pattern: /^\/v2\/(.+)\/blobs\/([^/]+)$/,
    parse: (m) => ({ kind: 'blob', name: m[1] as string, digest: decodeSegment(m[2] as string) }),
    methods: { GET: read(getBlob), HEAD: read(getBlob), DELETE: write(deleteBlob, 'delete') },
    otherMethods: 'push',
  }),
  defineRoute({
    kind: 'referrers',
    pattern: /^\/v2\/(.+)\/referrers\/([^/]+)$/,
    parse: (m) => ({
      kind: 'referrers',
      name: m[1] as string,
      digest: decodeSegment(m[2] as string),
    }),
    methods: { GET: read(getReferrers) },
    otherMethods: 'pull',
  }),
];

/**
 * The route of a path, or undefined. `repositoryOf` maps the path's repository name to the one
 * served (a mirror's prefix for containerd's `?ns=`). The name is validated here, once, before
 * authorization: nothing else may reach a lookup or a cache keyed by names, and handlers take
 * the route's name as valid. Throws NAME_INVALID.
 */
export function matchRoute(
  path: string,
  repositoryOf: (name: string) => string = (name) => name,
): MatchedRoute | undefined {
  for (const match of routeTable) {
    const matched = match(path, repositoryOf);
    if (matched) return matched;
  }
  return undefined;
}

type RouteMatcher = (
  path: string,
  repositoryOf: (name: string) => string,
) => MatchedRoute | undefined;

/**
 * An entry as a matcher. The entry's kind ties its parser to its handlers, so each handler gets
 * its own route type; outside, every entry has the same shape.
 */
function defineRoute<K extends RouteKind>(entry: RouteEntry<K>): RouteMatcher {
  return (path, repositoryOf) => matchEntry(entry, path, repositoryOf);
}

function matchEntry<K extends RouteKind>(
  entry: RouteEntry<K>,
  path: string,
  repositoryOf: (name: string) => string,
): MatchedRoute | undefined {
  const match = entry.pattern.exec(path);
  if (!match) return undefined;
  let route = entry.parse(match);
  if ('name' in route) {
    const name = repositoryOf(assertRepositoryName(route.name));
    if (name !== route.name) route = { ...route, name: assertRepositoryName(name) };
  }
  const bound = route;
  return {
    route: bound,
    requirement(method) {
      const endpoint = isMethod(method) ? entry.methods[method] : undefined;
      return requirementOf(bound, endpoint?.access ?? entry.otherMethods);
    },
    endpoint(method) {
      const endpoint = isMethod(method) ? entry.methods[method] : undefined;
      if (!endpoint) return undefined;
      return {
        writes: endpoint.effect === 'writes',
        serve: (ctx) => endpoint.handler(ctx, bound),
      };
    },
  };
}

const actionsOf: Record<'pull' | 'push' | 'delete', readonly Action[]> = {
  pull: ['pull'],
  push: ['pull', 'push'],
  delete: ['delete'],
};

/** The plain requirement access control decides: no HTTP type crosses into auth. */
function requirementOf(route: Route, access: AccessNeed): Requirement {
  if (access === 'authenticated' || access === 'catalog') return { kind: access };
  if (!('name' in route)) throw new Error(`route ${route.kind} names no repository`);
  return { kind: 'repository', name: route.name, actions: actionsOf[access] };
}
