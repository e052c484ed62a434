import { createHash } from 'node:crypto';
import type { Request, Response } from 'express';
import type { Identity } from '../../policy/compile.ts';
import { parseBasic } from '../auth/authenticator.ts';
import type { RegistryAuth } from '../auth/auth.ts';
import { expandActions, formatScope, parseScopes, type AccessEntry } from '../auth/scope.ts';
import { InvalidTokenError } from '../auth/tokens.ts';
import { OciError } from '../errors.ts';

/**
 * The Docker token endpoint, on the registry's own host and port. GET takes Basic auth and
 * repeated `scope`s (docker, containers/image, crane, oras); POST takes the OAuth2 password and
 * refresh_token grants (containerd, docker's identity tokens). The access granted is what was
 * asked for, cut down to what the policy allows: asking for too much yields less, not an error.
 */
export async function getToken(auth: RegistryAuth, req: Request, res: Response): Promise<void> {
  const credentials = parseBasic(req.headers.authorization);
  const identity = credentials
    ? await login(auth, req, credentials.username, credentials.password)
    : anonymous;
  const scopes = parseScopes(listOf(req.query.scope));
  const offline = req.query.offline_token === 'true' && identity.kind !== 'anonymous';
  await respond(auth, res, identity, scopes, offline, false);
}

export async function postToken(auth: RegistryAuth, req: Request, res: Response): Promise<void> {
  const form = (req.body ?? {}) as Record<string, unknown>;
  const grant = stringOf(form.grant_type);
  let identity: Identity;
  if (grant === 'password') {
    identity = await login(auth, req, stringOf(form.username) ?? '', stringOf(form.password) ?? '');
  } else if (grant === 'refresh_token') {
    try {
      identity = await auth.tokens.verifyRefreshToken(stringOf(form.refresh_token) ?? '');
    } catch (error) {
      if (error instanceof InvalidTokenError)
        throw new OciError('UNAUTHORIZED', 'invalid refresh token');
      throw error;
    }
  } else {
    throw new OciError('UNSUPPORTED', 'grant_type must be password or refresh_token', {
      status: 400,
    });
  }
  const scopes = parseScopes(listOf(form.scope));
  // A refresh token is issued on a password login only: renewing it on the refresh grant would
  // let one leaked token live forever.
  const offline = grant === 'password' && stringOf(form.access_type) === 'offline';
  await respond(auth, res, identity, scopes, offline, true);
}

const anonymous: Identity = { kind: 'anonymous' };
/** Namespace names are at most 63 characters; anything far longer is not a user. */
const maxUsernameLength = 256;

async function login(
  auth: RegistryAuth,
  req: Request,
  username: string,
  password: string,
): Promise<Identity> {
  if (username.length > maxUsernameLength)
    throw new OciError('UNAUTHORIZED', 'invalid username or password');
  // Counted per client and user, and per user across all clients at a higher threshold, so
  // that many addresses cannot guess one password without limit.
  const user = createHash('sha256').update(username).digest('base64url').slice(0, 22);
  const clientKey = `${req.socket.remoteAddress ?? ''} ${user}`;
  const retryAfter =
    auth.limiter.client.retryAfter(clientKey) ?? auth.limiter.user.retryAfter(user);
  if (retryAfter !== undefined) {
    throw new OciError('TOOMANYREQUESTS', 'too many failed logins; try again later', {
      headers: { 'Retry-After': String(retryAfter) },
    });
  }
  const identity = await auth.authenticator.authenticate(username, password);
  if (!identity) {
    auth.limiter.client.fail(clientKey);
    auth.limiter.user.fail(user);
    throw new OciError('UNAUTHORIZED', 'invalid username or password');
  }
  auth.limiter.client.succeed(clientKey);
  return identity;
}

/** The requested access, cut down to what the live policy allows this identity. */
function grant(auth: RegistryAuth, identity: Identity, requested: AccessEntry[]): AccessEntry[] {
  const policy = auth.policy.current();
  const granted: AccessEntry[] = [];
  for (const entry of requested) {
    if (entry.type === 'repository') {
      const allowed = policy.allowed(identity, entry.name);
      const actions = expandActions(entry.actions).filter((action) => allowed.has(action));
      if (actions.length > 0) granted.push({ type: 'repository', name: entry.name, actions });
    } else if (
      entry.type === 'registry' &&
      entry.name === 'catalog' &&
      identity.kind !== 'anonymous'
    ) {
      granted.push({ type: 'registry', name: 'catalog', actions: ['*'] });
    }
  }
  return granted;
}

async function respond(
  auth: RegistryAuth,
  res: Response,
  identity: Identity,
  requested: AccessEntry[],
  offline: boolean,
  oauth: boolean,
): Promise<void> {
  const access = grant(auth, identity, requested);
  const { token, issuedAt } = await auth.tokens.issueAccessToken(identity, access);
  const body: Record<string, unknown> = {
    token,
    access_token: token,
    expires_in: auth.tokens.tokenTtlSeconds,
    issued_at: issuedAt.toISOString(),
  };
  if (oauth) body.scope = access.map(formatScope).join(' ');
  if (offline) body.refresh_token = await auth.tokens.issueRefreshToken(identity);
  res.status(200).setHeader('Cache-Control', 'no-store').json(body);
}

function listOf(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((item): item is string => typeof item === 'string');
  return [];
}

function stringOf(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}
