import {
  createLocalJWKSet,
  errors as joseErrors,
  jwtVerify,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWTHeaderParameters,
} from 'jose';
import { z } from 'zod';
import type { ClusterGet } from './cluster-get.ts';
import { InvalidTokenError } from '../../credentials/tokens.ts';

/** The part of `/.well-known/openid-configuration` Berth uses. */
const discoverySchema = z.object({ issuer: z.string().min(1) });

const jwksSchema = z.object({
  keys: z.array(z.object({ kty: z.string(), kid: z.string().optional() }).loose()),
});

/** The claims of a bound ServiceAccount token (TokenRequest API); legacy Secret tokens lack them. */
const serviceAccountClaimsSchema = z.object({
  sub: z.string(),
  exp: z.number(),
  'kubernetes.io': z.object({
    namespace: z.string().min(1),
    serviceaccount: z.object({ name: z.string().min(1), uid: z.string().min(1) }),
    pod: z.object({ name: z.string().min(1), uid: z.string().min(1) }).optional(),
  }),
});

export interface ServiceAccountClaims {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The username the API server gives this token: `system:serviceaccount:<ns>:<name>`. */
  readonly username: string;
  readonly expiresAt: number;
}

/** The API server signs with RSA or EC keys; no symmetric or `none` algorithm is ever taken. */
const algorithms = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256'];
/** An unknown `kid` refetches the keys at most this often, so forged tokens cannot drive load. */
const refetchCooldownMillis = 10_000;
/** Keys are refetched at least this often, so a key the cluster retired stops verifying. */
const maxKeyAgeMillis = 15 * 60_000;
const clockToleranceSeconds = 30;

/**
 * The cluster's ServiceAccount token issuer, from the API server's OIDC discovery
 * (`/.well-known/openid-configuration`, `/openid/v1/jwks`). Keys are held in memory and
 * refetched on a `kid` they do not have (rotation) or when older than `maxKeyAgeMillis`. The
 * keys are read from the API server itself, not from the `jwks_uri` the discovery names, which
 * may be an external URL the registry cannot reach.
 */
export class ServiceAccountIssuer {
  readonly issuer: string;
  private readonly get: ClusterGet;
  private readonly audience: string;
  private keys: ReturnType<typeof createLocalJWKSet>;
  private fetchedAt: number;
  private refetch: Promise<void> | undefined;

  private constructor(get: ClusterGet, audience: string, issuer: string, keys: JSONWebKeySet) {
    this.get = get;
    this.audience = audience;
    this.issuer = issuer;
    this.keys = createLocalJWKSet(keys);
    this.fetchedAt = Date.now();
  }

  /** Reads discovery and keys once; throws when the API server does not serve them. */
  static async discover(get: ClusterGet, audience: string): Promise<ServiceAccountIssuer> {
    const discovery = discoverySchema.parse(
      await get('/.well-known/openid-configuration', 'application/json'),
    );
    if (discovery.issuer === audience)
      throw new Error(
        "auth.serviceAccountTokens.audience is the API server's own audience (its issuer)",
      );
    const keys = await fetchKeys(get);
    return new ServiceAccountIssuer(get, audience, discovery.issuer, keys);
  }

  /**
   * The namespace and ServiceAccount of a token this issuer signed for our audience, unexpired.
   * Throws InvalidTokenError for anything else. A signature check only: whether the
   * ServiceAccount (and pod) it is bound to still exist is the TokenReview's to say.
   */
  async verify(token: string): Promise<ServiceAccountClaims> {
    if (Date.now() - this.fetchedAt > maxKeyAgeMillis) await this.refresh();
    let payload: unknown;
    try {
      ({ payload } = await jwtVerify(token, (header, jws) => this.keyFor(header, jws), {
        issuer: this.issuer,
        audience: this.audience,
        algorithms,
        clockTolerance: clockToleranceSeconds,
        requiredClaims: ['exp'],
      }));
    } catch (error) {
      if (error instanceof joseErrors.JOSEError) throw new InvalidTokenError(error.code);
      throw error;
    }
    const claims = serviceAccountClaimsSchema.safeParse(payload);
    if (!claims.success) throw new InvalidTokenError('not a bound ServiceAccount token');
    const bound = claims.data['kubernetes.io'];
    const username = `system:serviceaccount:${bound.namespace}:${bound.serviceaccount.name}`;
    if (claims.data.sub !== username) throw new InvalidTokenError('subject and claims disagree');
    return {
      namespace: bound.namespace,
      serviceAccount: bound.serviceaccount.name,
      username,
      expiresAt: claims.data.exp * 1000,
    };
  }

  private async keyFor(
    header: JWTHeaderParameters,
    jws: FlattenedJWSInput,
  ): ReturnType<typeof this.keys> {
    try {
      return await this.keys(header, jws);
    } catch (error) {
      if (!(error instanceof joseErrors.JWKSNoMatchingKey)) throw error;
      if (Date.now() - this.fetchedAt < refetchCooldownMillis) throw error;
      await this.refresh();
      return this.keys(header, jws);
    }
  }

  /** One refetch at a time; a failed one keeps the keys held. */
  private refresh(): Promise<void> {
    this.refetch ??= fetchKeys(this.get)
      .then((keys) => {
        this.keys = createLocalJWKSet(keys);
      })
      .finally(() => {
        // Also after a failure, so an unreachable API server is not asked on every request.
        this.fetchedAt = Date.now();
        this.refetch = undefined;
      });
    return this.refetch.catch(() => undefined);
  }
}

async function fetchKeys(get: ClusterGet): Promise<JSONWebKeySet> {
  return jwksSchema.parse(
    await get('/openid/v1/jwks', 'application/jwk-set+json'),
  ) as JSONWebKeySet;
}
