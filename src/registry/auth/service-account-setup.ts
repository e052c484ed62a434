import type { ServiceAccountTokensConfig } from '../../config/service-account-tokens.ts';
import { KubeClient } from '../../kube/client.ts';
import { connectionFromFile, defaultConnection } from '../../kube/config.ts';
import { clusterGet } from './cluster-get.ts';
import type { Logger } from '../../observability/logger.ts';
import { ServiceAccountIssuer } from './service-account-issuer.ts';
import { ServiceAccountAuthenticator } from './service-account-login.ts';
import { TokenReviewer } from './token-review.ts';

/**
 * ServiceAccount token logins for `auth.serviceAccountTokens`. Reads the issuer's discovery
 * and keys before the registry listens, so a registry that cannot check tokens does not start.
 */
export async function openServiceAccountLogins(
  settings: ServiceAccountTokensConfig,
  logger: Logger,
): Promise<ServiceAccountAuthenticator> {
  const connection = settings.kubeconfig
    ? connectionFromFile(settings.kubeconfig)
    : defaultConnection();
  const client = new KubeClient(connection);
  let issuer: ServiceAccountIssuer;
  try {
    issuer = await ServiceAccountIssuer.discover(clusterGet(connection), settings.audience);
  } catch (error) {
    throw new Error(
      `auth.serviceAccountTokens: cannot read the cluster's ServiceAccount issuer: ${(error as Error).message}`,
      { cause: error },
    );
  }
  logger.info(
    { issuer: issuer.issuer, audience: settings.audience },
    'service account token logins on',
  );
  return new ServiceAccountAuthenticator(
    issuer,
    new TokenReviewer(client, settings.audience),
    logger,
  );
}
