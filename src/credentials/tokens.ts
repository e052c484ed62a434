import { randomUUID } from 'node:crypto';
import {
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
  type JWTPayload,
} from 'jose';
import type { Identity } from '../policy/compile.ts';
import { ByteLru, stringBytes } from '../util/byte-lru.ts';
import { indexGrants, type AccessEntry, type TokenGrants } from './access-claim.ts';
import type { KeyRing } from './keys.ts';

/** What a JWT is for; a token of one use is refused where another is expected. */
type TokenUse = 'access' | 'refresh' | 'credential';

export interface TokenSettings {
  readonly issuer: string;
  /** The `service` of the challenge and the `aud` of access tokens. */
  readonly service: string;
  readonly tokenTtlMillis: number;
  readonly credentialLifetimeMillis: number;
}

export interface VerifiedAccess {
  readonly identity: Identity;
  readonly access: readonly AccessEntry[];
  /** `access` indexed by repository name, built once per token. */
  readonly grants: TokenGrants;
  readonly expiresAt: number;
}

export interface VerifiedRefresh {
  readonly identity: Identity;
  /** What the token was bound to when issued (see `issueRefreshToken`). */
  readonly binding: string | undefined;
  readonly expiresAt: number;
}

export class InvalidTokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidTokenError';
  }
}

/** JWT clocks may disagree by this much (distribution allows the same). */
const clockToleranceSeconds = 60;

/** Memory for verified access tokens; a token verified again costs one ES256 verification. */
const verifiedCacheBytes = 16 * 1024 * 1024;

/**
 * Signs and verifies every JWT the registry uses: access tokens (short-lived, ES256, `access`
 * claim), refresh tokens and namespace credentials (long-lived, carrying only an identity). Only
 * ES256 with a key of the ring is accepted, so `alg: none`, HS256 keyed with the public key and
 * foreign keys all fail. Verified access tokens are cached until they expire.
 */
export class TokenService {
  private readonly keys: KeyRing;
  private readonly settings: TokenSettings;
  private readonly verified = new ByteLru<VerifiedAccess>({
    maxBytes: verifiedCacheBytes,
    ttlMillis: 60 * 60_000,
  });

  constructor(keys: KeyRing, settings: TokenSettings) {
    this.keys = keys;
    this.settings = settings;
  }

  /** The `kid` of the key that signs now. */
  get signingKeyId(): string {
    return this.keys.active.kid;
  }

  get service(): string {
    return this.settings.service;
  }

  /** An access token; it never outlives `notAfter` (epoch milliseconds), when given. */
  async issueAccessToken(
    identity: Identity,
    access: readonly AccessEntry[],
    options: { notAfter?: number | undefined } = {},
  ): Promise<{ token: string; issuedAt: Date; expiresIn: number }> {
    const issuedAt = new Date();
    const lifetime = lifetimeUntil(this.settings.tokenTtlMillis, options.notAfter);
    const token = await this.sign('access', identity, this.settings.service, lifetime, {
      access,
    });
    return { token, issuedAt, expiresIn: secondsOf(lifetime) };
  }

  /**
   * A refresh token (the OAuth2 `refresh_token`, docker's identity token). It never outlives
   * `notAfter` (epoch milliseconds: the expiry of the credential it is issued for), and carries
   * `binding`, an opaque value the refresh grant compares with the current one.
   */
  issueRefreshToken(
    identity: Identity,
    options: { notAfter?: number | undefined; binding?: string | undefined } = {},
  ): Promise<string> {
    const lifetime = lifetimeUntil(this.settings.credentialLifetimeMillis, options.notAfter);
    return this.sign('refresh', identity, `${this.settings.service}/refresh`, lifetime, {
      ...(options.binding === undefined ? {} : { binding: options.binding }),
    });
  }

  /** A namespace credential: the password of a pull secret, verified without any lookup. */
  issueCredential(
    namespace: string,
    lifetimeMillis = this.settings.credentialLifetimeMillis,
  ): Promise<string> {
    return this.sign(
      'credential',
      { kind: 'namespace', namespace },
      `${this.settings.service}/credential`,
      lifetimeMillis,
      {},
    );
  }

  async verifyAccessToken(token: string): Promise<VerifiedAccess> {
    const cached = this.verified.get(token);
    if (cached && cached.expiresAt > Date.now()) return cached;
    const payload = await this.verify(token, 'access', this.settings.service);
    const access = Array.isArray(payload.access)
      ? (payload.access as AccessEntry[]).filter(isAccessEntry)
      : [];
    const result = {
      identity: identityOf(payload),
      access,
      grants: indexGrants(access),
      expiresAt: (payload.exp as number) * 1000,
    };
    this.verified.set(token, result, accessBytes(access));
    return result;
  }

  async verifyRefreshToken(token: string): Promise<VerifiedRefresh> {
    const payload = await this.verify(token, 'refresh', `${this.settings.service}/refresh`);
    return {
      identity: identityOf(payload),
      binding: typeof payload.binding === 'string' ? payload.binding : undefined,
      expiresAt: (payload.exp as number) * 1000,
    };
  }

  /** The namespace a credential names. */
  async verifyCredential(token: string): Promise<string> {
    return (await this.inspectCredential(token)).namespace;
  }

  /** The namespace a credential names and when it expires (epoch milliseconds). */
  async inspectCredential(token: string): Promise<{ namespace: string; expiresAt: number }> {
    const payload = await this.verify(token, 'credential', `${this.settings.service}/credential`);
    const identity = identityOf(payload);
    if (identity.kind !== 'namespace') throw new InvalidTokenError('credential names no namespace');
    return { namespace: identity.namespace, expiresAt: (payload.exp as number) * 1000 };
  }

  private async sign(
    use: TokenUse,
    identity: Identity,
    audience: string,
    lifetimeMillis: number,
    claims: Record<string, unknown>,
  ): Promise<string> {
    const key = this.keys.active;
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ ...claims, use })
      .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
      .setIssuer(this.settings.issuer)
      .setSubject(subjectOf(identity))
      .setAudience(audience)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + secondsOf(lifetimeMillis))
      .setJti(randomUUID())
      .sign(key.privateKey);
  }

  private async verify(token: string, use: TokenUse, audience: string): Promise<JWTPayload> {
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw new InvalidTokenError('malformed token');
    }
    const key = this.keys.verificationKey(kid);
    if (!key) throw new InvalidTokenError('token signed by an unknown key');
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ['ES256'],
        issuer: this.settings.issuer,
        audience,
        clockTolerance: clockToleranceSeconds,
        requiredClaims: ['exp', 'sub'],
      });
      if (payload.use !== use) throw new InvalidTokenError(`not an ${use} token`);
      return payload;
    } catch (error) {
      if (error instanceof InvalidTokenError) throw error;
      if (error instanceof joseErrors.JOSEError) throw new InvalidTokenError(error.code);
      throw error;
    }
  }
}

/** `lifetimeMillis` from now, cut short so that it ends by `notAfter` (epoch milliseconds). */
function lifetimeUntil(lifetimeMillis: number, notAfter: number | undefined): number {
  return notAfter === undefined ? lifetimeMillis : Math.min(lifetimeMillis, notAfter - Date.now());
}

/** Whole seconds of a lifetime, at least one; rounded down, so that it never ends later. */
function secondsOf(lifetimeMillis: number): number {
  return Math.max(1, Math.floor(lifetimeMillis / 1000));
}

export function subjectOf(identity: Identity): string {
  switch (identity.kind) {
    case 'admin':
      return 'admin';
    case 'anonymous':
      return 'anonymous';
    case 'namespace':
      return `namespace:${identity.namespace}`;
  }
}

function identityOf(payload: JWTPayload): Identity {
  const subject = payload.sub ?? '';
  if (subject === 'admin') return { kind: 'admin' };
  if (subject === 'anonymous') return { kind: 'anonymous' };
  if (subject.startsWith('namespace:') && subject.length > 'namespace:'.length) {
    return { kind: 'namespace', namespace: subject.slice('namespace:'.length) };
  }
  throw new InvalidTokenError('unknown subject');
}

/**
 * Heap bytes a verified token's `access` holds, twice over: the claim itself and its index by
 * repository name. The token string, the cache key, is charged by the cache.
 */
function accessBytes(access: readonly AccessEntry[]): number {
  let bytes = 256;
  for (const entry of access) {
    bytes += 2 * (96 + stringBytes(entry.type) + stringBytes(entry.name));
    for (const action of entry.actions) bytes += 2 * (32 + stringBytes(action));
  }
  return bytes;
}

function isAccessEntry(value: unknown): value is AccessEntry {
  const entry = value as AccessEntry;
  return (
    typeof entry === 'object' &&
    entry !== null &&
    typeof entry.type === 'string' &&
    typeof entry.name === 'string' &&
    Array.isArray(entry.actions) &&
    entry.actions.every((action) => typeof action === 'string')
  );
}
