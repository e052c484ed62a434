import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { KubeClient } from '../../kube/client.ts';
import { ByteLru, stringBytes } from '../../util/byte-lru.ts';

const tokenReviewSchema = z.object({
  status: z.object({
    authenticated: z.boolean().optional(),
    user: z.object({ username: z.string().optional() }).optional(),
    audiences: z.array(z.string()).optional(),
  }),
});

/**
 * How long an answer stands, so a token presented again costs no API request. A ServiceAccount
 * or pod deleted now stops logging in after at most this long plus the API server's own cache of
 * tokens it authenticated (kube-apiserver keeps successes for 10 s).
 */
const answerTtlMillis = 5_000;
const answerCacheBytes = 4 * 1024 * 1024;

/**
 * Asks the API server (TokenReview) whether a token still authenticates for `audience`: the
 * signature alone cannot tell that the ServiceAccount or pod it is bound to was deleted. Answers
 * are remembered for `answerTtlMillis` under the token's SHA-256, never the token itself.
 */
export class TokenReviewer {
  private readonly client: KubeClient;
  private readonly audience: string;
  private readonly answers = new ByteLru<string | null>({
    maxBytes: answerCacheBytes,
    ttlMillis: answerTtlMillis,
  });

  constructor(client: KubeClient, audience: string) {
    this.client = client;
    this.audience = audience;
  }

  /** The username the token authenticates as for our audience, or undefined when it does not. */
  async username(token: string): Promise<string | undefined> {
    const key = createHash('sha256').update(token).digest('base64url');
    const known = this.answers.get(key);
    if (known !== undefined) return known ?? undefined;
    const review = tokenReviewSchema.parse(
      await this.client.request('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
        body: {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenReview',
          spec: { token, audiences: [this.audience] },
        },
        timeoutMs: 5_000,
      }),
    );
    const { authenticated, user, audiences } = review.status;
    const username =
      authenticated === true && audiences?.includes(this.audience) ? user?.username : undefined;
    this.answers.set(key, username ?? null, stringBytes(username ?? ''));
    return username;
  }
}
