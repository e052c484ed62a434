import { z } from 'zod';

/**
 * `auth.serviceAccountTokens`: Kubernetes ServiceAccount tokens of `audience` are accepted as a
 * login. Keys come from the API server's OIDC discovery, and every token is also put to a
 * TokenReview, so the API server needs to be reachable: through `kubeconfig`, else $KUBECONFIG,
 * ~/.kube/config or the pod's own ServiceAccount.
 */
export const serviceAccountTokensSchema = z
  .object({
    audience: z
      .string()
      .min(1, 'audience is required: the audience the tokens are requested for')
      // A token of the API server's own audience is every pod's default token: a registry that
      // took it would also be handed a credential good for the whole API.
      .refine(
        (audience) => !/^https:\/\/kubernetes\.default\.svc(\.|$|\/|:)/.test(audience),
        "must not be the API server's own audience",
      )
      .describe(
        'The audience the kubelet requests tokens for (CredentialProviderConfig tokenAttributes.serviceAccountTokenAudience).',
      ),
    kubeconfig: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Kubeconfig of the cluster whose tokens are accepted; by default $KUBECONFIG, ~/.kube/config or the in-cluster ServiceAccount.',
      ),
  })
  .strict();

export type ServiceAccountTokensConfig = z.infer<typeof serviceAccountTokensSchema>;
