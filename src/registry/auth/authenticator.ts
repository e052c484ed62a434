import { createHash, scryptSync, timingSafeEqual } from 'node:crypto';
import type { Identity } from '../../policy/compile.ts';
import { InvalidTokenError, type TokenService } from '../../credentials/tokens.ts';

/** A namespace proven by the credential Berth signed for it. */
export interface CredentialLogin {
  readonly identity: Identity & { readonly kind: 'namespace' };
  /** When the credential expires (epoch milliseconds); nothing issued for it may outlive this. */
  readonly expiresAt: number;
}

/**
 * Checks Basic credentials: a namespace name with the credential Berth issued for it as the
 * password, or the admin's username and password. Secrets are compared as SHA-256 digests with
 * timingSafeEqual, so neither their length nor their content leaks through timing.
 */
export class Authenticator {
  private readonly tokens: TokenService;
  private readonly adminUsername: string;
  private readonly adminPasswordDigest: Buffer | undefined;
  /**
   * Names the admin password in the admin's refresh tokens, so that changing the password
   * revokes them. A slow hash (scrypt): a refresh token must not make the password cheap to
   * guess offline.
   */
  private readonly adminPasswordVersion: string | undefined;

  constructor(tokens: TokenService, admin: { username: string; password: string | undefined }) {
    this.tokens = tokens;
    this.adminUsername = admin.username;
    this.adminPasswordDigest = admin.password ? digest(admin.password) : undefined;
    this.adminPasswordVersion = admin.password
      ? scryptSync(admin.password, 'berth admin refresh token', 16).toString('base64url')
      : undefined;
  }

  /**
   * The namespace `password` is a valid credential of, when `username` names it. A signature
   * check, no lookup: an attacker cannot guess one, so callers may accept it before any limit on
   * failed logins applies.
   */
  async credential(username: string, password: string): Promise<CredentialLogin | undefined> {
    try {
      const { namespace, expiresAt } = await this.tokens.inspectCredential(password);
      return namespace === username
        ? { identity: { kind: 'namespace', namespace }, expiresAt }
        : undefined;
    } catch (error) {
      if (error instanceof InvalidTokenError) return undefined;
      throw error;
    }
  }

  /** Whether these are the admin's username and password; both are compared every time. */
  isAdmin(username: string, password: string): boolean {
    const isAdminName = sameSecret(username, this.adminUsername);
    const passwordMatches =
      this.adminPasswordDigest !== undefined &&
      timingSafeEqual(digest(password), this.adminPasswordDigest);
    return isAdminName && passwordMatches;
  }

  /** What a refresh token issued now for `identity` is bound to. */
  refreshBinding(identity: Identity): string | undefined {
    return identity.kind === 'admin' ? this.adminPasswordVersion : undefined;
  }

  /**
   * Whether a refresh token bound to `binding` still stands: an admin's only while the admin
   * password it was issued under is the current one. A namespace's ends with its credential.
   */
  acceptsRefresh(identity: Identity, binding: string | undefined): boolean {
    switch (identity.kind) {
      case 'admin':
        return this.adminPasswordVersion !== undefined && binding === this.adminPasswordVersion;
      case 'namespace':
        return true;
      case 'anonymous':
        return false;
    }
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * The credentials of an `Authorization: Basic` header: undefined when there is no header, and
 * `malformed` when there is one that is not Basic with base64 of `username:password`.
 */
export function parseBasic(
  header: string | undefined,
): { username: string; password: string } | 'malformed' | undefined {
  if (header === undefined) return undefined;
  const match = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header);
  const encoded = match?.[1];
  if (!encoded || encoded.length % 4 !== 0) return 'malformed';
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const separator = decoded.indexOf(':');
  if (separator < 0) return 'malformed';
  return { username: decoded.slice(0, separator), password: decoded.slice(separator + 1) };
}

/** The token of an `Authorization: Bearer` header. */
export function parseBearer(header: string | undefined): string | undefined {
  if (!header || !/^bearer /i.test(header)) return undefined;
  const token = header.slice(7).trim();
  return token || undefined;
}
