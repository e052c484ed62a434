import express, { type Express, type Request, type Response } from 'express';
import type { Logger } from '../../observability/logger.ts';
import { Counter, Histogram, type MetricsRegistry } from '../../observability/metrics.ts';
import { answerProbe } from '../../observability/probes.ts';
import { registerVolumeUsage } from '../../observability/volume-usage.ts';
import { enforce, RequestAccess, unauthorized, type Requirement } from '../auth/access-control.ts';
import { parseBearer } from '../auth/authenticator.ts';
import { tokenPath, type RegistryAuth } from '../auth/auth.ts';
import { InvalidTokenError } from '../../credentials/tokens.ts';
import { OciError, toOciError } from '../errors.ts';
import type { ReadinessState } from '../readiness.ts';
import type { RegistryServices } from '../services.ts';
import { StorageUnavailableError } from '../storage/driver.ts';
import { FilesystemDriver } from '../storage/filesystem/driver.ts';
import { apiVersionHeader } from './context.ts';
import { matchRoute, type MatchedRoute } from './route-table.ts';
import { getToken, postToken } from './token-handlers.ts';

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
      'Registry API request latency, by route, method and status, until the response ended or the client left.',
      ['route', 'method', 'status'],
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
  // An object store has no capacity to report; a directory's filesystem has.
  if (services.driver instanceof FilesystemDriver)
    registerVolumeUsage(metrics, services.driver.root);

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');

  const probes = { metrics, readiness: options.readiness };
  app.use((req, res, next) => {
    if (!answerProbe(req, res, probes)) next();
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
    let matched: MatchedRoute | undefined;
    res.on('close', () => {
      const route = matched?.route;
      const routeKind = route?.kind ?? 'none';
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const status = String(res.statusCode);
      requests.inc({ route: routeKind, method: req.method, status });
      durations.observe({ route: routeKind, method: req.method, status }, seconds);
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
      // containerd sends `?ns=<upstream host>` to a mirror: the repository becomes the one under
      // that mirror's prefix, before authorization, so the same policy applies to it.
      const ns = req.query.ns;
      matched = matchRoute(req.path, (name) => services.mirrors.withNamespace(name, ns));
      if (!matched)
        throw new OciError('NAME_UNKNOWN', 'no such endpoint', { detail: { path: req.path } });
      const endpoint = matched.endpoint(req.method);
      const access = auth ? await authorize(auth, req, matched.requirement(req.method)) : undefined;
      if (!endpoint) throw new OciError('UNSUPPORTED', `${req.method} is not supported here`);
      if (endpoint.writes && 'name' in matched.route)
        services.mirrors.refuseWrite(matched.route.name);
      await endpoint.serve({ req, res, services, traffic, access });
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
async function authorize(
  auth: RegistryAuth,
  req: Request,
  requirement: Requirement,
): Promise<RequestAccess> {
  // Built only for a refusal: reading req.protocol and Host costs on every request otherwise.
  const challenge = () => ({
    realm: auth.realm ?? realmFromHost(req),
    service: auth.tokens.service,
  });
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
