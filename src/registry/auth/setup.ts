import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RegistryConfig } from '../../config/registry.ts';
import type { Logger } from '../../observability/logger.ts';
import { compilePolicy } from '../../policy/compile.ts';
import { staticPolicySource, watchPolicyFile } from '../../policy/source.ts';
import { watchKubernetesPolicy } from '../../policy/kubernetes-source.ts';
import { KubeClient } from '../../kube/client.ts';
import type { RegistryAuth } from './auth.ts';
import { Authenticator } from './authenticator.ts';
import { KeyRing } from '../../credentials/keys.ts';
import { LoginLimiter } from './limiter.ts';
import { openServiceAccountLogins } from './service-account-setup.ts';
import { TokenService } from '../../credentials/tokens.ts';

type AuthConfig = NonNullable<RegistryConfig['auth']>;

export function signingKeyFile(config: RegistryConfig, auth: AuthConfig): string {
  // The schema requires signingKeyFile when storage is not a filesystem.
  return (
    auth.signingKeyFile ??
    join(config.storage.filesystem?.rootDirectory ?? '.', '_berth', 'signing-keys.json')
  );
}

/**
 * The key ring and token service. Only the server (`rotates`) rotates keys; `berth credential`
 * signs with the active key and leaves the file alone unless it has to create it.
 */
export async function openTokenService(
  config: RegistryConfig,
  auth: AuthConfig,
  rotates = true,
): Promise<{ keys: KeyRing; tokens: TokenService }> {
  const keys = await KeyRing.open(signingKeyFile(config, auth), {
    rotateAfterMillis: rotates ? auth.keyRotation : Number.POSITIVE_INFINITY,
    // A retired key verifies until the longest-lived thing it signed has expired.
    keepRetiredForMillis: rotates
      ? auth.credentialLifetime + auth.tokenTTL
      : Number.POSITIVE_INFINITY,
  });
  const tokens = new TokenService(keys, {
    issuer: auth.issuer,
    service: auth.service,
    tokenTtlMillis: auth.tokenTTL,
    credentialLifetimeMillis: auth.credentialLifetime,
  });
  return { keys, tokens };
}

/** Builds authentication from the configuration; undefined when the registry is open. */
export async function setUpAuth(
  config: RegistryConfig,
  logger: Logger,
): Promise<{ auth: RegistryAuth; close: () => void } | undefined> {
  const settings = config.auth;
  if (!settings) return undefined;
  // In Kubernetes mode the key file is a read-only Secret volume the operator owns.
  const rotates = !settings.kubernetes;
  const { keys, tokens } = await openTokenService(config, settings, rotates);
  const password = settings.adminPasswordFile
    ? (await readFile(settings.adminPasswordFile, 'utf8')).trim()
    : process.env.BERTH_ADMIN_PASSWORD;
  const options = {
    anonymousPull: settings.anonymousPull,
    mirrorPrefixes: (config.mirrors ?? []).map((mirror) => mirror.prefix),
  };
  const policy = settings.kubernetes
    ? await watchKubernetesPolicy(
        settings.kubernetes.kubeconfig
          ? KubeClient.fromFile(settings.kubernetes.kubeconfig)
          : KubeClient.fromDefault(),
        {
          ...options,
          registry: settings.kubernetes.registry,
          tenants: settings.kubernetes.tenants,
        },
        logger,
      )
    : settings.policyFile
      ? await watchPolicyFile(settings.policyFile, options, logger)
      : staticPolicySource(compilePolicy({ namespaces: new Map(), repositories: [] }, options));
  const serviceAccounts = settings.serviceAccountTokens
    ? await openServiceAccountLogins(settings.serviceAccountTokens, logger)
    : undefined;
  const rotation = setInterval(() => {
    if (!rotates) return;
    keys.rotateIfDue(new Date()).then(
      (rotated) => rotated && logger.info({ kid: keys.active.kid }, 'signing key rotated'),
      (error: unknown) => logger.error({ err: error }, 'signing key rotation failed'),
    );
  }, 3_600_000).unref();
  logger.info(
    { kids: keys.kids, policy: settings.policyFile ?? null, admin: password !== undefined },
    'authentication on',
  );
  return {
    auth: {
      tokens,
      authenticator: new Authenticator(tokens, {
        username: settings.adminUsername,
        password: password || undefined,
      }),
      policy,
      serviceAccounts,
      limiter: new LoginLimiter(),
      realm: settings.realm,
    },
    close: () => {
      clearInterval(rotation);
      policy.close();
    },
  };
}
