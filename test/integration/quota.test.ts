import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { adminPassword, startAuthRegistry, type AuthRegistry } from '../support/auth.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth } from '../support/registries.ts';
import { describeWithTools } from '../support/tools.ts';

const policy = {
  namespaces: { 'team-a': {}, 'team-b': {} },
  repositories: [
    { metadata: { namespace: 'team-a', name: 'app' }, spec: { quota: { size: '1Mi' } } },
    // One quota shared by every repository under team-b/.
    {
      metadata: { namespace: 'team-b', name: 'all' },
      spec: { path: 'team-b/*', quota: { size: '700Ki' } },
    },
  ],
};

/**
 * Bytes of unique content linked in the repositories under `root` that `include` accepts, read
 * from the filesystem past the registry: what a quota counts.
 */
async function usage(storage: string, repositories: string[]): Promise<number> {
  const base = join(storage, 'docker/registry/v2');
  const digests = new Set<string>();
  for (const repository of repositories) {
    for (const root of ['_layers', '_manifests/revisions']) {
      const directory = join(base, 'repositories', repository, root, 'sha256');
      const entries = await readdir(directory).catch(() => [] as string[]);
      for (const hex of entries) digests.add(hex);
    }
  }
  let bytes = 0;
  for (const hex of digests) {
    const data = await stat(join(base, 'blobs/sha256', hex.slice(0, 2), hex, 'data')).catch(
      () => undefined,
    );
    bytes += data?.size ?? 0;
  }
  return bytes;
}

async function uploadsLeft(storage: string, repository: string): Promise<string[]> {
  const directory = join(storage, 'docker/registry/v2/repositories', repository, '_uploads');
  return readdir(directory).catch(() => []);
}

/** Quotas per Repository and the registry-wide limits, with oras and crane against real processes. */
describeWithTools(['crane', 'oras'], 'storage quotas', (tools) => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  beforeAll(async () => {
    work = await temporaryDirectory('quota');
  });
  afterAll(async () => {
    await work?.remove();
  });

  /** A DOCKER_CONFIG directory holding the admin login for `host`. */
  const login = async (host: string): Promise<NodeJS.ProcessEnv> => {
    const directory = join(work.path, `docker-${randomBytes(4).toString('hex')}`);
    await mkdir(directory, { recursive: true });
    const auth = Buffer.from(`admin:${adminPassword}`).toString('base64');
    await writeFile(
      join(directory, 'config.json'),
      JSON.stringify({ auths: { [host]: { auth } } }),
    );
    return { ...process.env, DOCKER_CONFIG: directory };
  };
  /** A directory holding one random file of `bytes`, for oras push. */
  const artifact = async (bytes: number): Promise<{ directory: string; content: Buffer }> => {
    const directory = join(work.path, `artifact-${randomBytes(4).toString('hex')}`);
    await mkdir(directory, { recursive: true });
    const content = randomBytes(bytes);
    await writeFile(join(directory, 'payload.bin'), content);
    return { directory, content };
  };
  const oras = (env: NodeJS.ProcessEnv, cwd: string, ...args: string[]) =>
    run(tools.oras as string, [...args, '--plain-http'], { env, cwd, allowFailure: true });

  describe('per Repository', () => {
    let auth: AuthRegistry;
    let env: NodeJS.ProcessEnv;
    let host: string;
    beforeAll(async () => {
      auth = await startAuthRegistry(policy);
      host = auth.registry.host;
      env = await login(host);
    }, 60_000);
    afterAll(async () => {
      await auth?.stop();
    });

    it('refuses a push past quota.size naming quota and usage, changes nothing, and takes it after a delete', async () => {
      const small = await artifact(300 * 1024);
      const first = await oras(
        env,
        small.directory,
        'push',
        `${host}/team-a/app:small`,
        'payload.bin',
      );
      expect(first.code).toBe(0);
      const before = await usage(auth.storage, ['team-a/app']);
      expect(before).toBeGreaterThan(300 * 1024);

      // 300 KiB stored, 900 KiB more does not fit in 1 MiB: the layer's upload is refused.
      const big = await artifact(900 * 1024);
      const refused = await oras(
        env,
        big.directory,
        'push',
        `${host}/team-a/app:big`,
        'payload.bin',
      );
      expect(refused.code).not.toBe(0);
      const said = refused.stdout + refused.stderr;
      // oras prints the OCI code in lower case.
      expect(said).toContain('Error response from registry: denied: quota exceeded');
      expect(said).toContain(
        `Repository team-a/app (path team-a/app) has quota.size 1Mi (1048576 bytes) and uses ${before} bytes; this push to team-a/app adds ${900 * 1024} bytes`,
      );
      // Nothing of the refused push stays: usage, tags and uploads are as before.
      expect(await usage(auth.storage, ['team-a/app'])).toBe(before);
      expect(await uploadsLeft(auth.storage, 'team-a/app')).toEqual([]);
      const tags = await oras(env, work.path, 'repo', 'tags', `${host}/team-a/app`);
      expect(tags.stdout.trim().split('\n')).toEqual(['small']);

      // crane's client shows the same refusal for an image.
      const layer = await randomLayerTar(work.path, 'too-big', 900 * 1024);
      const crane = await run(
        tools.crane as string,
        ['append', '-f', layer, '-t', `${host}/team-a/app:image`, '--insecure'],
        { env, allowFailure: true },
      );
      expect(crane.code).not.toBe(0);
      expect(crane.stderr).toMatch(
        /DENIED: quota exceeded: Repository team-a\/app .*quota\.size 1Mi/,
      );

      // Deleting the small artifact (manifest, then its blob) frees its bytes; the big one fits.
      const digest = (
        await oras(env, work.path, 'resolve', `${host}/team-a/app:small`)
      ).stdout.trim();
      expect(
        (
          await oras(
            env,
            work.path,
            'manifest',
            'delete',
            '--force',
            `${host}/team-a/app@${digest}`,
          )
        ).code,
      ).toBe(0);
      const { createHash } = await import('node:crypto');
      const smallDigest = `sha256:${createHash('sha256').update(small.content).digest('hex')}`;
      expect(
        (
          await oras(
            env,
            work.path,
            'blob',
            'delete',
            '--force',
            `${host}/team-a/app@${smallDigest}`,
          )
        ).code,
      ).toBe(0);
      expect(await usage(auth.storage, ['team-a/app'])).toBeLessThan(before - 300 * 1024 + 1);
      const accepted = await oras(
        env,
        big.directory,
        'push',
        `${host}/team-a/app:big`,
        'payload.bin',
      );
      expect(accepted.stderr).toBe('');
      expect(accepted.code).toBe(0);
      const pulled = join(work.path, 'pulled-big');
      await mkdir(pulled);
      expect((await oras(env, pulled, 'pull', `${host}/team-a/app:big`)).code).toBe(0);
      expect((await readFile(join(pulled, 'payload.bin'))).equals(big.content)).toBe(true);
    }, 120_000);

    it('shares a subtree quota across its repositories, counting shared content once, copies between repositories included', async () => {
      const shared = await artifact(400 * 1024);
      expect(
        (await oras(env, shared.directory, 'push', `${host}/team-b/one:v1`, 'payload.bin')).code,
      ).toBe(0);
      // The same content in a second repository adds only its manifest (a mount or a dedup).
      expect(
        (await oras(env, shared.directory, 'push', `${host}/team-b/two:v1`, 'payload.bin')).code,
      ).toBe(0);
      const before = await usage(auth.storage, ['team-b/one', 'team-b/two']);
      expect(before).toBeLessThan(400 * 1024 + 4096);
      const other = await artifact(400 * 1024);
      const refused = await oras(
        env,
        other.directory,
        'push',
        `${host}/team-b/three:v1`,
        'payload.bin',
      );
      expect(refused.code).not.toBe(0);
      expect(refused.stdout + refused.stderr).toContain(
        `Repository team-b/all (path team-b/*) has quota.size 700Ki (716800 bytes) and uses ${before} bytes; this push to team-b/three adds ${400 * 1024} bytes`,
      );
      expect(await usage(auth.storage, ['team-b/one', 'team-b/two', 'team-b/three'])).toBe(before);
      // A cross-repository mount counts like an upload: team-a's 900 KiB do not fit in team-b/.
      const copied = await run(
        tools.crane as string,
        ['cp', `${host}/team-a/app:big`, `${host}/team-b/four:big`, '--insecure'],
        { env, allowFailure: true },
      );
      expect(copied.code).not.toBe(0);
      expect(copied.stderr).toContain(
        `Repository team-b/all (path team-b/*) has quota.size 700Ki (716800 bytes) and uses ${before} bytes; this push to team-b/four adds ${900 * 1024} bytes`,
      );
      expect(
        await usage(auth.storage, ['team-b/one', 'team-b/two', 'team-b/three', 'team-b/four']),
      ).toBe(before);
    }, 120_000);
  });

  describe('registry-wide limits', () => {
    const writeConfig = async (storage: string, limits: Record<string, unknown>) => {
      const file = join(work.path, `config-${randomBytes(4).toString('hex')}.yaml`);
      await writeFile(
        file,
        JSON.stringify({ storage: { filesystem: { rootDirectory: storage } }, limits }),
      );
      return file;
    };
    const crane = (...args: string[]) =>
      run(tools.crane as string, [...args, '--insecure'], { allowFailure: true });

    it('limits.storage.size stops pushes before it is passed, while pulls go on', async () => {
      const storage = join(work.path, 'limited-size');
      const config = await writeConfig(storage, { storage: { size: '1Mi' } });
      const registry = await startBerth(undefined, { extraArgs: ['--config', config] });
      try {
        const host = registry.host;
        const first = await randomLayerTar(work.path, 'fits', 500 * 1024);
        expect((await crane('append', '-f', first, '-t', `${host}/open/app:v1`)).code).toBe(0);
        const second = await randomLayerTar(work.path, 'does-not-fit', 600 * 1024);
        const refused = await crane('append', '-f', second, '-t', `${host}/open/app:v2`);
        expect(refused.code).not.toBe(0);
        expect(refused.stderr).toMatch(/UNAVAILABLE: registry storage is full: .*limits\.storage/);
        const pulled = await crane('pull', `${host}/open/app:v1`, join(work.path, 'v1.tar'));
        expect(pulled.code).toBe(0);
        const tags = await (await fetch(`${registry.url}/v2/open/app/tags/list`)).json();
        expect(tags).toEqual({ name: 'open/app', tags: ['v1'] });
        // The refused upload is 507 with the limit named, in OCI form.
        const start = await fetch(`${registry.url}/v2/open/app/blobs/uploads/`, { method: 'POST' });
        if (start.status === 202) {
          const location = start.headers.get('location') as string;
          const chunk = await fetch(new URL(location, registry.url), {
            method: 'PATCH',
            headers: { 'content-type': 'application/octet-stream' },
            body: new Uint8Array(randomBytes(700 * 1024)),
          });
          expect(chunk.status).toBe(507);
          const body = (await chunk.json()) as { errors: { code: string; message: string }[] };
          expect(body.errors[0]?.code).toBe('UNAVAILABLE');
          expect(body.errors[0]?.message).toContain('limits.storage');
        } else {
          expect(start.status).toBe(507);
        }
      } finally {
        await registry.stop();
      }
    }, 120_000);

    it('limits.storage.minFree stops pushes when the volume is below it, and pulls go on', async () => {
      const storage = join(work.path, 'limited-free');
      const open = await writeConfig(storage, {});
      let registry = await startBerth(undefined, { extraArgs: ['--config', open] });
      const layer = await randomLayerTar(work.path, 'before-full', 200 * 1024);
      try {
        expect(
          (await crane('append', '-f', layer, '-t', `${registry.host}/open/app:v1`)).code,
        ).toBe(0);
      } finally {
        await registry.stop();
      }
      // No disk has a pebibyte free: the floor is above the volume's free space.
      const full = await writeConfig(storage, { storage: { minFree: '1Pi' } });
      registry = await startBerth(undefined, { extraArgs: ['--config', full] });
      try {
        const host = registry.host;
        const refused = await crane('append', '-f', layer, '-t', `${host}/open/app:v2`);
        expect(refused.code).not.toBe(0);
        expect(refused.stderr).toMatch(
          /registry storage is full: the volume has \d+ bytes free, below limits\.storage\.minFree/,
        );
        const start = await fetch(`${registry.url}/v2/open/app/blobs/uploads/`, { method: 'POST' });
        expect(start.status).toBe(507);
        expect((await crane('pull', `${host}/open/app:v1`, join(work.path, 'free.tar'))).code).toBe(
          0,
        );
      } finally {
        await registry.stop();
      }
    }, 120_000);
  });
});
