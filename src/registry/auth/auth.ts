import type { PolicySource } from '../../policy/source.ts';
import type { Authenticator } from './authenticator.ts';
import type { LoginLimiter } from './limiter.ts';
import type { ServiceAccountAuthenticator } from './service-account-login.ts';
import type { TokenService } from '../../credentials/tokens.ts';

/** Everything authentication needs, built once per process; absent when auth is off. */
export interface RegistryAuth {
  readonly tokens: TokenService;
  readonly authenticator: Authenticator;
  readonly policy: PolicySource;
  /** Kubernetes ServiceAccount token logins; absent unless `auth.serviceAccountTokens` is set. */
  readonly serviceAccounts?: ServiceAccountAuthenticator | undefined;
  /** Failed logins per client address and user, per user and per address. */
  readonly limiter: LoginLimiter;
  /** Token endpoint URL; when undefined it is derived from each request's Host, so it is always the registry's own host:port. */
  readonly realm: string | undefined;
}

export const tokenPath = '/token';
