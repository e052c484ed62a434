import type { Logger } from '../../observability/logger.ts';
import type { Identity } from '../../policy/compile.ts';
import { OciError } from '../errors.ts';
import type { ServiceAccountIssuer } from './service-account-issuer.ts';
import { InvalidTokenError } from '../../credentials/tokens.ts';
import type { TokenReviewer } from './token-review.ts';

/** A namespace proven by one of its ServiceAccounts' tokens. */
export interface ServiceAccountLogin {
  readonly identity: Identity & { readonly kind: 'namespace' };
  readonly serviceAccount: string;
  /** When the ServiceAccount token expires (epoch milliseconds); nothing issued may outlive it. */
  readonly expiresAt: number;
}

/** Whether a password is shaped as a JWS at all; anything else is not worth a verification. */
const compactJws = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/**
 * Logs in with a Kubernetes ServiceAccount token: first the signature, audience and expiry
 * against the cluster's issuer keys (local, so forged or foreign tokens never reach the API
 * server), then a TokenReview, which refuses a token whose ServiceAccount or pod is gone. The
 * identity is the token's namespace; what it may do is the policy's to say, as for any login.
 */
export class ServiceAccountAuthenticator {
  private readonly issuer: ServiceAccountIssuer;
  private readonly reviewer: Pick<TokenReviewer, 'username'>;
  private readonly logger: Logger;

  constructor(
    issuer: ServiceAccountIssuer,
    reviewer: Pick<TokenReviewer, 'username'>,
    logger: Logger,
  ) {
    this.issuer = issuer;
    this.reviewer = reviewer;
    this.logger = logger;
  }

  /** The login `token` proves, or undefined when it proves none. */
  async logIn(token: string): Promise<ServiceAccountLogin | undefined> {
    if (!compactJws.test(token)) return undefined;
    let claims;
    try {
      claims = await this.issuer.verify(token);
    } catch (error) {
      if (!(error instanceof InvalidTokenError)) throw error;
      // The reason is jose's code or the claim at fault, never a part of the token.
      this.logger.info({ reason: error.message }, 'service account token refused');
      return undefined;
    }
    let username: string | undefined;
    try {
      username = await this.reviewer.username(token);
    } catch (error) {
      this.logger.error({ err: error }, 'token review failed');
      // Fail closed, in the protocol's form: the client may retry, nothing is let through.
      throw new OciError(
        'UNAVAILABLE',
        'cannot check the ServiceAccount token with the API server',
        {
          cause: error,
        },
      );
    }
    if (username !== claims.username) {
      this.logger.info(
        { namespace: claims.namespace, serviceAccount: claims.serviceAccount, reason: 'review' },
        'service account token refused',
      );
      return undefined;
    }
    // One line per login: which namespace's pod pulled, for audits and the cache checks.
    this.logger.info(
      { namespace: claims.namespace, serviceAccount: claims.serviceAccount },
      'service account login',
    );
    return {
      identity: { kind: 'namespace', namespace: claims.namespace },
      serviceAccount: claims.serviceAccount,
      expiresAt: claims.expiresAt,
    };
  }
}
