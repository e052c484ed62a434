import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  adminPassword,
  fetchToken,
  startAuthRegistry,
  type AuthRegistry,
} from '../support/auth.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { configOnlyManifest } from '../support/manifests.ts';

/**
 * Concurrent writes to one tag against real `berth registry` processes: an immutable tag is set
 * once however many pushes race for it, also when two processes share the storage (as replicas
 * on one bucket will), and a moved tag reads back as storage holds it.
 */
const ociManifest = 'application/vnd.oci.image.manifest.v1+json';
const repository = 'team-a/web';
const policy = {
  namespaces: { 'team-a': {} },
  repositories: [
    { metadata: { name: 'web', namespace: 'team-a' }, spec: { immutableTags: ['v*'] } },
  ],
};
const racers = 8;

const sha256 = (data: Buffer | string) =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('tag races', () => {
  let auth: AuthRegistry;
  let second: RegistryProcess;
  let token: string;
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
  let nonce = 0;

  const headers = () => ({ Authorization: `Bearer ${token}` });

  /** A manifest no other call returns: its annotation differs. */
  function freshManifest(): Buffer {
    nonce += 1;
    return configOnlyManifest(config, { nonce: String(nonce) });
  }

  async function putManifest(
    base: string,
    tag: string,
    manifest: Buffer,
  ): Promise<{ status: number; code?: string; digest: string }> {
    const response = await fetch(`${base}/v2/${repository}/manifests/${tag}`, {
      method: 'PUT',
      body: manifest,
      headers: { ...headers(), 'Content-Type': ociManifest },
    });
    const text = await response.text();
    const code =
      response.status === 201
        ? undefined
        : (JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code;
    return { status: response.status, ...(code ? { code } : {}), digest: sha256(manifest) };
  }

  async function tagDigest(base: string, tag: string): Promise<string | null> {
    const response = await fetch(`${base}/v2/${repository}/manifests/${tag}`, {
      headers: { ...headers(), Accept: ociManifest },
    });
    await response.arrayBuffer();
    return response.headers.get('docker-content-digest');
  }

  /** Eight different manifests pushed at once to `tag`, spread over `bases` in turn. */
  async function race(bases: string[], tag: string) {
    const manifests = Array.from({ length: racers }, () => freshManifest());
    return Promise.all(
      manifests.map((manifest, index) =>
        putManifest(bases[index % bases.length] as string, tag, manifest),
      ),
    );
  }

  function expectOneWinner(results: Awaited<ReturnType<typeof race>>): string {
    const winners = results.filter((result) => result.status === 201);
    const losers = results.filter((result) => result.status !== 201);
    expect({
      winners: winners.length,
      losers: losers.map(({ status, code }) => ({ status, code })),
    }).toEqual({
      winners: 1,
      losers: Array.from({ length: racers - 1 }, () => ({ status: 403, code: 'DENIED' })),
    });
    return (winners[0] as { digest: string }).digest;
  }

  beforeAll(async () => {
    auth = await startAuthRegistry(policy);
    // A second process on the same storage and policy: what a second replica on one bucket is.
    second = await startBerth(auth.storage, {
      extraArgs: [
        '--log-level',
        'warn',
        '--policy',
        auth.policyFile,
        '--admin-password-file',
        join(dirname(auth.policyFile), 'admin-password'),
      ],
    });
    const answer = await fetchToken(auth.registry, { username: 'admin', password: adminPassword }, [
      `repository:${repository}:pull,push,delete`,
    ]);
    token = answer.token as string;
    const pushed = await fetch(
      `${auth.registry.url}/v2/${repository}/blobs/uploads/?digest=${sha256(config)}`,
      { method: 'POST', body: config, headers: headers() },
    );
    expect(pushed.status).toBe(201);
  });

  afterAll(async () => {
    await second?.stop();
    await auth?.stop();
  });

  it('sets an immutable tag exactly once when eight pushes race for it', async () => {
    for (let round = 1; round <= 5; round += 1) {
      const tag = `v${round}.0`;
      const winner = expectOneWinner(await race([auth.registry.url], tag));
      expect(await tagDigest(auth.registry.url, tag)).toBe(winner);
      // Pushing the winner again is not a move.
      const again = await fetch(`${auth.registry.url}/v2/${repository}/manifests/${tag}`, {
        headers: { ...headers(), Accept: ociManifest },
      });
      const bytes = Buffer.from(await again.arrayBuffer());
      expect((await putManifest(auth.registry.url, tag, bytes)).status).toBe(201);
    }
  });

  it('sets it exactly once when the pushes go to two processes on one storage', async () => {
    for (let round = 1; round <= 5; round += 1) {
      const tag = `v${round}.1`;
      const winner = expectOneWinner(await race([auth.registry.url, second.url], tag));
      expect(await tagDigest(auth.registry.url, tag)).toBe(winner);
      expect(await tagDigest(second.url, tag)).toBe(winner);
    }
  });

  it('reads a tag moved by racing pushes back as storage holds it', async () => {
    const link = join(
      auth.storage,
      'docker/registry/v2/repositories',
      repository,
      '_manifests/tags/latest/current/link',
    );
    for (let round = 1; round <= 10; round += 1) {
      const results = await race([auth.registry.url], 'latest');
      expect(results.map((result) => result.status)).toEqual(Array(racers).fill(201));
      const stored = await readFile(link, 'utf8');
      expect(results.map((result) => result.digest)).toContain(stored);
      expect({ round, served: await tagDigest(auth.registry.url, 'latest') }).toEqual({
        round,
        served: stored,
      });
    }
  });
});
