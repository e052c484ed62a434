import type { Request, Response } from 'express';
import type { Identity } from '../../policy/compile.ts';
import { parseBasic } from '../auth/authenticator.ts';
import type { RegistryAuth } from '../auth/auth.ts';
import type { AccessEntry } from '../../credentials/access-claim.ts';
import { expandActions, formatScope, parseScopes } from '../auth/scope.ts';
import { InvalidTokenError } from '../../credentials/tokens.ts';
import { OciError } from '../errors.ts';

/**
 * The Docker token endpoint, on the registry's own host and port. GET takes Basic auth and
 * repeated `scope`s (docker, containers/image, crane, oras); POST takes the OAuth2 password and
 * refresh_token grants (containerd, docker's identity tokens). The access granted is what was
 * asked for, cut down to what the policy allows: asking for too much yields less, not an error.
 */
export async function getToken(auth: RegistryAuth, req: Request, res: Response): Promise<void> {
  const scopes = parseScopes(listOf(req.query.scope));
  const credentials = parseBasic(req.headers.authorization);
  // Credentials that cannot be read are refused, never taken for none.
  if (credentials === 'malformed')
    throw new OciError('UNAUTHORIZED', 'Authorization must be Basic base64(username:password)');
  const login = credentials
    ? await logIn(auth, req, credentials.username, credentials.password)
    : { identity: anonymous };
  const offline =
    req.query.offline_token === 'true' &&
    login.identity.kind !== 'anonymous' &&
    login.refreshable !== false;
  await respond(auth, res, login, scopes, offline, false);
}

export async function postToken(auth: RegistryAuth, req: Request, res: Response): Promise<void> {
  const form = (req.body ?? {}) as Record<string, unknown>;
  const grant = stringOf(form.grant_type);
  const scopes = parseScopes(listOf(form.scope));
  let login: Login;
  if (grant === 'password') {
    login = await logIn(auth, req, stringOf(form.username) ?? '', stringOf(form.password) ?? '');
  } else if (grant === 'refresh_token') {
    login = await refreshedLogin(auth, stringOf(form.refresh_token) ?? '');
  } else {
    throw new OciError('REQUEST_UNSUPPORTED', 'grant_type must be password or refresh_token');
  }
  // A refresh token is issued on a password login only: renewing it on the refresh grant would
  // let one leaked token live forever.
  const offline =
    grant === 'password' && stringOf(form.access_type) === 'offline' && login.refreshable !== false;
  await respond(auth, res, login, scopes, offline, true);
}

/** Who logged in and, with a credential or refresh token, when that expires. */
interface Login {
  readonly identity: Identity;
  /** Epoch milliseconds; nothing issued for this login outlives it. */
  readonly expiresAt?: number | undefined;
  /** False when no refresh token may be issued for this login. */
  readonly refreshable?: boolean;
}

const anonymous: Identity = { kind: 'anonymous' };
/** Namespace names are at most 63 characters; anything far longer is not a user. */
const maxUsernameLength = 256;

/**
 * A password login. A valid namespace credential is accepted before the limiter is asked: it
 * is a signature nobody can guess, and the failures of others (from anywhere, or from behind
 * the same node proxy address) must never lock its owner out. Everything else, the admin
 * password included, is refused while its client, username or address is blocked, and counted
 * when it fails.
 */
async function logIn(
  auth: RegistryAuth,
  req: Request,
  username: string,
  password: string,
): Promise<Login> {
  if (username.length > maxUsernameLength)
    throw new OciError('UNAUTHORIZED', 'invalid username or password');
  const credential = await auth.authenticator.credential(username, password);
  if (credential) return credential;
  // Like a credential, a ServiceAccount token is a signature nobody can guess: taken before the
  // limiter. Any username goes with it; the token alone says who the caller is. No refresh
  // token is issued for it: one would outlive the deletion of its ServiceAccount or pod.
  const serviceAccount = await auth.serviceAccounts?.logIn(password);
  if (serviceAccount) return { ...serviceAccount, refreshable: false };
  const address = req.socket.remoteAddress ?? '';
  const retryAfter = auth.limiter.retryAfter(address, username);
  if (retryAfter !== undefined) {
    throw new OciError('TOOMANYREQUESTS', 'too many failed logins; try again later', {
      headers: { 'Retry-After': String(retryAfter) },
    });
  }
  if (!auth.authenticator.isAdmin(username, password)) {
    auth.limiter.fail(address, username);
    throw new OciError('UNAUTHORIZED', 'invalid username or password');
  }
  auth.limiter.succeed(address, username);
  return { identity: { kind: 'admin' } };
}

/** A refresh token that still stands (see Authenticator.acceptsRefresh). */
async function refreshedLogin(auth: RegistryAuth, token: string): Promise<Login> {
  try {
    const { identity, binding, expiresAt } = await auth.tokens.verifyRefreshToken(token);
    if (auth.authenticator.acceptsRefresh(identity, binding)) return { identity, expiresAt };
  } catch (error) {
    if (!(error instanceof InvalidTokenError)) throw error;
  }
  throw new OciError('UNAUTHORIZED', 'invalid refresh token');
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
  { identity, expiresAt }: Login,
  requested: AccessEntry[],
  offline: boolean,
  oauth: boolean,
): Promise<void> {
  const access = grant(auth, identity, requested);
  const { token, issuedAt, expiresIn } = await auth.tokens.issueAccessToken(identity, access, {
    notAfter: expiresAt,
  });
  const body: Record<string, unknown> = {
    token,
    access_token: token,
    expires_in: expiresIn,
    issued_at: issuedAt.toISOString(),
  };
  if (oauth) body.scope = access.map(formatScope).join(' ');
  if (offline) {
    body.refresh_token = await auth.tokens.issueRefreshToken(identity, {
      notAfter: expiresAt,
      binding: auth.authenticator.refreshBinding(identity),
    });
  }
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
