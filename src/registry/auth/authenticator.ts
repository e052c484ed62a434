import { createHash, timingSafeEqual } from 'node:crypto';
import type { Identity } from '../../policy/compile.ts';
import { InvalidTokenError, type TokenService } from './tokens.ts';

/**
 * Checks Basic credentials: the admin's username and password, or a namespace name with the
 * credential Berth issued for it as the password. Secrets are compared as SHA-256 digests with
 * timingSafeEqual, so neither their length nor their content leaks through timing.
 */
export class Authenticator {
  private readonly tokens: TokenService;
  private readonly adminUsername: string;
  private readonly adminPasswordDigest: Buffer | undefined;

  constructor(tokens: TokenService, admin: { username: string; password: string | undefined }) {
    this.tokens = tokens;
    this.adminUsername = admin.username;
    this.adminPasswordDigest = admin.password ? digest(admin.password) : undefined;
  }

  async authenticate(username: string, password: string): Promise<Identity | undefined> {
    // Both checks run on every login, so response time does not tell the admin's name apart.
    const isAdminName = sameSecret(username, this.adminUsername);
    const adminPasswordMatches =
      this.adminPasswordDigest !== undefined &&
      timingSafeEqual(digest(password), this.adminPasswordDigest);
    let namespace: string | undefined;
    try {
      namespace = await this.tokens.verifyCredential(password);
    } catch (error) {
      if (!(error instanceof InvalidTokenError)) throw error;
    }
    if (isAdminName && this.adminPasswordDigest)
      return adminPasswordMatches ? { kind: 'admin' } : undefined;
    return namespace !== undefined && namespace === username
      ? { kind: 'namespace', namespace }
      : undefined;
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/** Splits an `Authorization: Basic` header; undefined when it is absent or malformed. */
export function parseBasic(
  header: string | undefined,
): { username: string; password: string } | undefined {
  if (!header || !/^basic /i.test(header)) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const separator = decoded.indexOf(':');
  if (separator < 0) return undefined;
  return { username: decoded.slice(0, separator), password: decoded.slice(separator + 1) };
}

/** The token of an `Authorization: Bearer` header. */
export function parseBearer(header: string | undefined): string | undefined {
  if (!header || !/^bearer /i.test(header)) return undefined;
  const token = header.slice(7).trim();
  return token || undefined;
}
