import { parseDuration } from '../config/units.ts';
import { KeyRing } from '../credentials/keys.ts';
import { InvalidTokenError, TokenService } from '../credentials/tokens.ts';
import type { CredentialVerdict } from './pull-secret-check.ts';
import { registryTokenIdentity } from './render/endpoints.ts';
import type { RegistryResource } from './api/registry-resource.ts';

export interface IssuedCredential {
  readonly credential: string;
  readonly keyId: string;
  readonly issuedAt: Date;
  readonly expiresAt: Date;
}

/** Thrown while a Registry's signing keys do not exist yet; the caller retries. */
export class SigningKeysMissingError extends Error {}

/**
 * Signs namespace credentials with a Registry's own signing keys (read from the keys Secret the
 * Registry controller generated), so the registry verifies them with no call back to the
 * operator. Key rings are kept per Registry and rebuilt only when the Secret's content changes.
 */
export class CredentialSigner {
  private readonly rings = new Map<string, { content: string; tokens: TokenService }>();

  /** `readKeys` returns the signing-keys.json content of a Registry, if it exists yet. */
  private readonly readKeys: (registry: RegistryResource) => string | undefined;

  constructor(readKeys: (registry: RegistryResource) => string | undefined) {
    this.readKeys = readKeys;
  }

  async issue(
    registry: RegistryResource,
    namespace: string,
    now = new Date(),
  ): Promise<IssuedCredential> {
    const lifetime = credentialLifetime(registry);
    const tokens = await this.tokensFor(registry, lifetime);
    const credential = await tokens.issueCredential(namespace, lifetime);
    // The token's own iat/exp are whole seconds from the same clock; these are for rotation only.
    return {
      credential,
      keyId: tokens.signingKeyId,
      issuedAt: now,
      expiresAt: new Date(now.getTime() + lifetime),
    };
  }

  /** The id of the key that signs for this Registry now; undefined while it has no keys. */
  async activeKeyId(registry: RegistryResource): Promise<string | undefined> {
    if (!this.readKeys(registry)) return undefined;
    return (await this.tokensFor(registry, credentialLifetime(registry))).signingKeyId;
  }

  /**
   * What the Registry's keys say of a credential read back from a pull Secret, as the registry
   * would judge it: its signature, audience and issuer. Throws only while the keys are missing.
   */
  async verify(registry: RegistryResource, credential: string): Promise<CredentialVerdict> {
    const tokens = await this.tokensFor(registry, credentialLifetime(registry));
    try {
      return { valid: true, ...(await tokens.inspectCredential(credential)) };
    } catch (error) {
      if (error instanceof InvalidTokenError) return { valid: false, reason: error.message };
      throw error;
    }
  }

  private async tokensFor(registry: RegistryResource, lifetime: number): Promise<TokenService> {
    const key = `${registry.metadata.namespace}/${registry.metadata.name}`;
    const content = this.readKeys(registry);
    if (!content)
      throw new SigningKeysMissingError(`the signing keys of Registry ${key} do not exist yet`);
    const cached = this.rings.get(key);
    if (cached?.content === content) return cached.tokens;
    const tokens = new TokenService(await KeyRing.fromContent(content), {
      ...registryTokenIdentity(registry),
      tokenTtlMillis: parseDuration(registry.spec.auth.tokenTTL) ?? 300_000,
      credentialLifetimeMillis: lifetime,
    });
    this.rings.set(key, { content, tokens });
    return tokens;
  }

  forget(registryKey: string): void {
    this.rings.delete(registryKey);
  }
}

export function credentialLifetime(registry: RegistryResource): number {
  const millis = parseDuration(registry.spec.auth.credentialLifetime);
  if (millis === undefined)
    throw new Error(
      `credentialLifetime ${registry.spec.auth.credentialLifetime} is not a duration`,
    );
  return millis;
}
