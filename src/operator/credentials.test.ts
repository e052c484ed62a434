import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { parseRegistryConfig } from '../config/registry.ts';
import { generateKeyFile } from '../credentials/keys.ts';
import { openTokenService } from '../registry/auth/setup.ts';
import { registrySpecSchema } from './api/registry.ts';
import { CredentialSigner, SigningKeysMissingError } from './credentials.ts';
import type { RegistryResource } from './api/registry-resource.ts';
import { renderRegistryConfig } from './render/registry.ts';

function registry(name: string): RegistryResource {
  return {
    metadata: { name, namespace: 'berth-system', uid: `uid-${name}` },
    spec: registrySpecSchema.parse({ auth: { credentialLifetime: '1h' } }),
  };
}

describe('credentials the operator signs', () => {
  let directory: string;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), 'berth-credentials-'));
  });
  afterAll(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  /** The registry's token service, as `berth registry` builds it from the rendered config. */
  async function registryTokens(resource: RegistryResource, keys: string) {
    const keyFile = join(directory, `${resource.metadata.name}-keys.json`);
    await writeFile(keyFile, keys);
    const config = parseRegistryConfig(parse(renderRegistryConfig(resource)), 'rendered');
    const auth = { ...(config.auth as NonNullable<typeof config.auth>), signingKeyFile: keyFile };
    return (await openTokenService(config, auth, false)).tokens;
  }

  it('are accepted by the registry they were signed for, and by no other', async () => {
    const main = registry('main');
    const other = registry('other');
    const keys = { main: await generateKeyFile(), other: await generateKeyFile() };
    const signer = new CredentialSigner(
      (resource) => keys[resource.metadata.name as 'main' | 'other'],
    );
    const issued = await signer.issue(main, 'team-b', new Date('2026-11-27T00:00:00Z'));
    expect(issued.expiresAt.getTime() - issued.issuedAt.getTime()).toBe(3_600_000);

    expect(await (await registryTokens(main, keys.main)).verifyCredential(issued.credential)).toBe(
      'team-b',
    );
    await expect(
      (await registryTokens(other, keys.other)).verifyCredential(issued.credential),
    ).rejects.toThrow();
    // Same keys but another Registry's audience: still refused.
    await expect(
      (await registryTokens(other, keys.main)).verifyCredential(issued.credential),
    ).rejects.toThrow();
  });

  it('wait for the signing keys to exist', async () => {
    const signer = new CredentialSigner(() => undefined);
    await expect(signer.issue(registry('main'), 'team-b')).rejects.toBeInstanceOf(
      SigningKeysMissingError,
    );
  });
});
