import express, { type Express, type Request, type Response } from 'express';
import type { Logger } from '../../observability/logger.ts';
import { Counter, Histogram, type MetricsRegistry } from '../../observability/metrics.ts';
import { enforce, requirementOf, RequestAccess, unauthorized } from '../auth/access-control.ts';
import { parseBearer } from '../auth/authenticator.ts';
import { tokenPath, type RegistryAuth } from '../auth/auth.ts';
import { InvalidTokenError } from '../../credentials/tokens.ts';
import { OciError, toOciError } from '../errors.ts';
import type { ReadinessState } from '../readiness.ts';
import type { RegistryServices } from '../services.ts';
import { StorageUnavailableError } from '../storage/driver.ts';
import {
  cancelUpload,
  completeUpload,
  deleteBlob,
  getBlob,
  getUploadStatus,
  patchUpload,
  startUpload,
} from './blob-handlers.ts';
import { apiVersionHeader, type HandlerContext } from './context.ts';
import {
  deleteManifest,
  getCatalog,
  getManifest,
  getReferrers,
  getTags,
  putManifest,
} from './manifest-handlers.ts';
import { matchRoute, type Route, type RouteKind } from './routes.ts';
import { getToken, postToken } from './token-handlers.ts';

type Handler = (ctx: HandlerContext, route: never) => Promise<void>;

/** Which handler serves each route and method; anything else is 405 UNSUPPORTED. */
const handlers: Record<RouteKind, Partial<Record<string, Handler>>> = {
  base: { GET: sendBase, HEAD: sendBase },
  catalog: { GET: getCatalog },
  tags: { GET: getTags },
  manifest: { GET: getManifest, HEAD: getManifest, PUT: putManifest, DELETE: deleteManifest },
  blob: { GET: getBlob, HEAD: getBlob, DELETE: deleteBlob },
  uploads: { POST: startUpload },
  upload: { GET: getUploadStatus, PATCH: patchUpload, PUT: completeUpload, DELETE: cancelUpload },
  referrers: { GET: getReferrers },
};

async function sendBase(ctx: HandlerContext): Promise<void> {
  ctx.res.status(200).json({});
}

export interface RegistryAppOptions {
  readonly services: RegistryServices;
  readonly logger: Logger;
  readonly metrics: MetricsRegistry;
  readonly logRequests: boolean;
  /** Whether to take traffic, and why not (shutting down, storage failing its probe). */
  readonly readiness: () => ReadinessState;
  /** Token service and policy; without it the registry is open (loopback standalone use). */
  readonly auth?: RegistryAuth | undefined;
}

export function createRegistryApp(options: RegistryAppOptions): Express {
  const { services, logger, metrics } = options;
  const requests = metrics.register(
    new Counter(
      'berth_registry_http_requests_total',
      'Registry API requests by route, method and status.',
      ['route', 'method', 'status'],
    ),
  );
  const durations = metrics.register(
    new Histogram(
      'berth_registry_http_request_duration_seconds',
      'Registry API request latency.',
      ['route', 'method'],
      [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    ),
  );
  const bytesIn = metrics.register(
    new Counter('berth_registry_received_bytes_total', 'Blob and manifest bytes received.'),
  );
  const bytesOut = metrics.register(
    new Counter('berth_registry_sent_bytes_total', 'Blob and manifest bytes sent, by route.', [
      'route',
    ]),
  );
  const storageErrors = metrics.register(
    new Counter(
      'berth_registry_storage_errors_total',
      'Requests refused because storage refused a write, by reason (StorageFull, StorageNotWritable).',
      ['reason'],
    ),
  );

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');

  app.get('/healthz', (_req, res) => {
    res.status(200).type('text/plain').send('ok\n');
  });
  app.get('/readyz', (_req, res) => {
    const state = options.readiness();
    res.status(state.ready ? 200 : 503).json(state);
  });
  app.get('/metrics', (_req, res) => {
    res.status(200).type('text/plain; version=0.0.4').send(metrics.render());
  });

  const auth = options.auth;
  if (auth) {
    const tokenRoute = (handler: typeof getToken) => async (req: Request, res: Response) => {
      res.set(apiVersionHeader);
      try {
        await handler(auth, req, res);
      } catch (error) {
        sendError(req, res, error, logger);
      }
    };
    app.get(tokenPath, tokenRoute(getToken));
    app.post(
      tokenPath,
      express.urlencoded({ extended: false, limit: '64kb' }),
      tokenRoute(postToken),
    );
  }

  app.use(async (req: Request, res: Response) => {
    const started = process.hrtime.bigint();
    res.set(apiVersionHeader);
    const traffic = { received: 0, sent: 0 };
    // Set once the path matched a route with a valid name; the log names nothing else.
    let route: Route | undefined;
    res.on('close', () => {
      const routeKind = route?.kind ?? 'none';
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      requests.inc({ route: routeKind, method: req.method, status: String(res.statusCode) });
      durations.observe({ route: routeKind, method: req.method }, seconds);
      if (traffic.received) bytesIn.inc({}, traffic.received);
      if (traffic.sent) bytesOut.inc({ route: routeKind }, traffic.sent);
      if (options.logRequests) {
        logger.info(
          {
            method: req.method,
            route: routeKind,
            repository: route && 'name' in route ? route.name : undefined,
            status: res.statusCode,
            received: traffic.received,
            sent: traffic.sent,
            durationMs: Math.round(seconds * 1000 * 10) / 10,
            completed: res.writableFinished,
          },
          'request',
        );
      }
    });
    try {
      route = withMirrorNamespace(services, matchRoute(req.path), req.query.ns);
      const access = auth && route ? await authorize(auth, req, route) : undefined;
      await dispatch({ req, res, services, traffic, access }, route, req.method);
    } catch (error) {
      if (error instanceof StorageUnavailableError) storageErrors.inc({ reason: error.reason });
      sendError(req, res, error, logger);
    }
  });
  return app;
}

/**
 * The token endpoint on the host and port the client used, so that it matches the registry's
 * own (crane refuses a loopback realm on another port). A Host that is not a plain host[:port]
 * is not echoed into the challenge. Behind a TLS proxy, set `auth.realm` instead.
 */
function realmFromHost(req: Request): string {
  const host = req.headers.host ?? '';
  return `${req.protocol}://${/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host) ? host : 'localhost'}${tokenPath}`;
}

/** Who the caller is (from its Bearer token) and whether the live policy lets it do this. */
async function authorize(auth: RegistryAuth, req: Request, route: Route): Promise<RequestAccess> {
  // Built only for a refusal: reading req.protocol and Host costs on every request otherwise.
  const challenge = () => ({
    realm: auth.realm ?? realmFromHost(req),
    service: auth.tokens.service,
  });
  const requirement = requirementOf(route, req.method);
  const bearer = parseBearer(req.headers.authorization);
  let access: RequestAccess;
  if (bearer) {
    try {
      const verified = await auth.tokens.verifyAccessToken(bearer);
      access = new RequestAccess(verified.identity, auth.policy.current(), verified.grants);
    } catch (error) {
      if (!(error instanceof InvalidTokenError)) throw error;
      const scope =
        requirement.kind === 'repository'
          ? `repository:${requirement.name}:${requirement.actions.join(',')}`
          : undefined;
      throw unauthorized(challenge(), scope, 'invalid_token');
    }
  } else {
    access = new RequestAccess({ kind: 'anonymous' }, auth.policy.current(), undefined);
  }
  enforce(access, requirement, challenge);
  return access;
}

async function dispatch(
  ctx: HandlerContext,
  route: Route | undefined,
  method: string,
): Promise<void> {
  if (!route)
    throw new OciError('NAME_UNKNOWN', 'no such endpoint', { detail: { path: ctx.req.path } });
  const handler = handlers[route.kind][method];
  if (!handler) throw new OciError('UNSUPPORTED', `${method} is not supported here`);
  if ('name' in route && writes(route.kind, method)) ctx.services.mirrors.refuseWrite(route.name);
  await handler(ctx, route as never);
}

/** Whether a request changes a repository (a push or a delete). */
function writes(kind: RouteKind, method: string): boolean {
  return kind === 'uploads' || kind === 'upload' || method === 'PUT' || method === 'DELETE';
}

/**
 * containerd sends `?ns=<upstream host>` to a mirror: the route's repository becomes the one
 * under that mirror's prefix, before authorization, so the same policy applies to it.
 */
function withMirrorNamespace(
  services: RegistryServices,
  route: Route | undefined,
  ns: unknown,
): Route | undefined {
  if (!route || !('name' in route) || ns === undefined) return route;
  return { ...route, name: services.mirrors.withNamespace(route.name, ns) };
}

/** The one place where errors become responses. Unexpected ones are logged here, once. */
function sendError(req: Request, res: Response, thrown: unknown, logger: Logger): void {
  const { error, unexpected } = toOciError(thrown);
  const clientGone = req.socket.destroyed || res.destroyed;
  if (clientGone) logger.debug({ method: req.method, path: req.path }, 'client went away');
  else if (unexpected)
    logger.error({ err: thrown, method: req.method, path: req.path }, 'request failed');
  if (res.headersSent) {
    // Part of a body is out; the only honest signal left is to cut the connection.
    res.destroy();
    return;
  }
  if (req.readableAborted || req.socket.destroyed) return;
  res.status(error.status).set(error.headers).json(error.toBody());
}
