import { randomUUID } from 'node:crypto';
import {
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
  type JWTPayload,
} from 'jose';
import type { Identity } from '../../policy/compile.ts';
import { LruCache } from '../service/cache.ts';
import type { KeyRing } from './keys.ts';
import { indexGrants, type TokenGrants } from './access-control.ts';
import type { AccessEntry } from './scope.ts';

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

export class InvalidTokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidTokenError';
  }
}

/** JWT clocks may disagree by this much (distribution allows the same). */
const clockToleranceSeconds = 60;

/**
 * Signs and verifies every JWT the registry uses: access tokens (short-lived, ES256, `access`
 * claim), refresh tokens and namespace credentials (long-lived, carrying only an identity). Only
 * ES256 with a key of the ring is accepted, so `alg: none`, HS256 keyed with the public key and
 * foreign keys all fail. Verified access tokens are cached until they expire.
 */
export class TokenService {
  private readonly keys: KeyRing;
  private readonly settings: TokenSettings;
  private readonly verified = new LruCache<string, VerifiedAccess>({
    maxWeight: 20_000,
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

  get tokenTtlSeconds(): number {
    return Math.round(this.settings.tokenTtlMillis / 1000);
  }

  async issueAccessToken(
    identity: Identity,
    access: readonly AccessEntry[],
  ): Promise<{ token: string; issuedAt: Date }> {
    const issuedAt = new Date();
    const token = await this.sign(
      'access',
      identity,
      this.settings.service,
      this.settings.tokenTtlMillis,
      { access },
    );
    return { token, issuedAt };
  }

  /** A refresh token (the OAuth2 `refresh_token`, docker's identity token). */
  issueRefreshToken(identity: Identity): Promise<string> {
    return this.sign(
      'refresh',
      identity,
      `${this.settings.service}/refresh`,
      this.settings.credentialLifetimeMillis,
      {},
    );
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
    this.verified.set(token, result);
    return result;
  }

  async verifyRefreshToken(token: string): Promise<Identity> {
    return identityOf(await this.verify(token, 'refresh', `${this.settings.service}/refresh`));
  }

  /** The namespace a credential names. */
  async verifyCredential(token: string): Promise<string> {
    const identity = identityOf(
      await this.verify(token, 'credential', `${this.settings.service}/credential`),
    );
    if (identity.kind !== 'namespace') throw new InvalidTokenError('credential names no namespace');
    return identity.namespace;
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
      .setExpirationTime(now + Math.max(1, Math.round(lifetimeMillis / 1000)))
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
