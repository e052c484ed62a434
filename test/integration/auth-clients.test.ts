import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startAuthRegistry, type AuthRegistry } from '../support/auth.ts';
import { startContainerd, type Containerd } from '../support/containerd.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

/**
 * Real clients through the Docker token flow: each authenticates with a namespace credential
 * (what a pull secret holds) and pushes and pulls; without one it gets 401, and a namespace the
 * policy does not name gets 403.
 */
const policy = {
  namespaces: { 'team-a': {}, 'team-b': {}, 'team-z': {} },
  repositories: [
    { metadata: { name: 'app', namespace: 'team-a' }, spec: { pull: { namespaces: ['team-b'] } } },
    { metadata: { name: 'open', namespace: 'team-a' }, spec: { visibility: 'Public' } },
  ],
};

describeWithTools(
  ['crane', 'skopeo', 'oras', 'ctr', 'containerd'],
  'real clients with token authentication',
  (tools) => {
    let auth: AuthRegistry;
    let work: Awaited<ReturnType<typeof temporaryDirectory>>;
    let containerd: Containerd;
    let host: string;
    let localhost: string;
    let digest: string;
    const credentials: Record<string, string> = {};

    /** A docker-style config.json with `auths`, as kubelet and docker read it. */
    async function dockerConfig(namespace: string): Promise<string> {
      const directory = join(work.path, `docker-${namespace}`);
      await mkdir(directory, { recursive: true });
      const auth = Buffer.from(`${namespace}:${credentials[namespace]}`).toString('base64');
      await writeFile(
        join(directory, 'config.json'),
        JSON.stringify({ auths: { [host]: { auth }, [localhost]: { auth } } }),
      );
      return directory;
    }

    const crane = (config: string | undefined, ...args: string[]) =>
      run(tools.crane as string, [...args, '--insecure'], {
        env: { ...process.env, DOCKER_CONFIG: config ?? join(work.path, 'no-credentials') },
        allowFailure: true,
      });

    beforeAll(async () => {
      auth = await startAuthRegistry(policy);
      work = await temporaryDirectory('auth-clients');
      host = auth.registry.host;
      localhost = host.replace('127.0.0.1', 'localhost');
      for (const namespace of ['team-a', 'team-b', 'team-z'])
        credentials[namespace] = await auth.credential(namespace);
      containerd = await startContainerd(
        { containerd: tools.containerd as string, ctr: tools.ctr as string },
        join(work.path, 'containerd'),
      );
      const layer = await randomLayerTar(work.path, 'layer', 1024 * 1024);
      const pushed = await crane(
        await dockerConfig('team-a'),
        'append',
        '-f',
        layer,
        '-t',
        `${host}/team-a/app:v1`,
      );
      expect(pushed.code).toBe(0);
      digest = (
        await crane(await dockerConfig('team-a'), 'digest', `${host}/team-a/app:v1`)
      ).stdout.trim();
      expect(digest).toMatch(/^sha256:/);
    });

    afterAll(async () => {
      await containerd?.stop();
      await auth?.stop();
      await work?.remove();
    });

    it('crane: auth login, then push and pull; without credentials 401, another tenant 403', async () => {
      const config = join(work.path, 'crane-login');
      const login = await run(
        tools.crane as string,
        [
          'auth',
          'login',
          host,
          '-u',
          'team-b',
          '-p',
          credentials['team-b'] as string,
          '--insecure',
        ],
        {
          env: { ...process.env, DOCKER_CONFIG: config },
        },
      );
      expect(login.code).toBe(0);
      expect((await crane(config, 'digest', `${host}/team-a/app:v1`)).stdout.trim()).toBe(digest);
      const push = await crane(
        config,
        'copy',
        `${host}/team-a/app:v1`,
        `${host}/team-a/app:from-b`,
      );
      expect(push.code).not.toBe(0);
      expect(push.stderr).toMatch(/DENIED|403/);

      const anonymous = await crane(undefined, 'digest', `${host}/team-a/app:v1`);
      expect(anonymous.code).not.toBe(0);
      expect(anonymous.stderr).toMatch(/UNAUTHORIZED|401/);
      const stranger = await crane(await dockerConfig('team-z'), 'digest', `${host}/team-a/app:v1`);
      expect(stranger.code).not.toBe(0);
      expect(stranger.stderr).toMatch(/DENIED|403/);
    });

    it('skopeo: --creds and a docker config.json (--authfile)', async () => {
      const archive = join(work.path, 'image.tar');
      const pulled = await run(tools.skopeo as string, [
        'copy',
        '--src-tls-verify=false',
        '--src-creds',
        `team-b:${credentials['team-b']}`,
        `docker://${host}/team-a/app:v1`,
        `docker-archive:${archive}`,
      ]);
      expect(pulled.code).toBe(0);
      const digestFile = join(work.path, 'skopeo.digest');
      await run(tools.skopeo as string, [
        'copy',
        '--dest-tls-verify=false',
        '--authfile',
        join(await dockerConfig('team-a'), 'config.json'),
        '--digestfile',
        digestFile,
        `docker-archive:${archive}`,
        `docker://${host}/team-a/app:skopeo`,
      ]);
      expect((await readFile(digestFile, 'utf8')).trim()).toBe(digest);
      const anonymous = await run(
        tools.skopeo as string,
        ['inspect', '--tls-verify=false', '--no-creds', `docker://${host}/team-a/app:v1`],
        {
          allowFailure: true,
        },
      );
      expect(anonymous.code).not.toBe(0);
      expect(anonymous.stderr).toMatch(/unauthorized/i);
    });

    it('oras: login, push and pull an artifact', async () => {
      const env = { ...process.env, DOCKER_CONFIG: join(work.path, 'oras-login') };
      await run(
        tools.oras as string,
        ['login', '--plain-http', '-u', 'team-a', '-p', credentials['team-a'] as string, host],
        { env },
      );
      await writeFile(join(work.path, 'notes.txt'), 'authenticated artifact\n');
      await run(
        tools.oras as string,
        ['push', '--plain-http', `${host}/team-a/app:notes`, 'notes.txt:text/plain'],
        { env, cwd: work.path },
      );
      await run(
        tools.oras as string,
        ['pull', '--plain-http', `${host}/team-a/app:notes`, '-o', join(work.path, 'oras-out')],
        { env },
      );
      const anonymous = await run(
        tools.oras as string,
        ['pull', '--plain-http', `${host}/team-a/app:notes`, '-o', join(work.path, 'anon')],
        {
          env: { ...process.env, DOCKER_CONFIG: join(work.path, 'no-credentials') },
          allowFailure: true,
        },
      );
      expect(anonymous.code).not.toBe(0);
    });

    it('containerd: ctr --user pulls and pushes; a public repository needs no credential', async () => {
      await containerd.ctr(
        'images',
        'pull',
        '--plain-http',
        '--user',
        `team-b:${credentials['team-b']}`,
        `${localhost}/team-a/app:v1`,
      );
      expect((await containerd.ctr('images', 'ls')).stdout).toContain(digest);
      await containerd.ctr(
        'images',
        'tag',
        `${localhost}/team-a/app:v1`,
        `${localhost}/team-a/open:v1`,
      );
      await containerd.ctr(
        'images',
        'push',
        '--plain-http',
        '--user',
        `team-a:${credentials['team-a']}`,
        `${localhost}/team-a/open:v1`,
      );
      await containerd.ctr('images', 'rm', `${localhost}/team-a/open:v1`);
      await containerd.ctr('images', 'pull', '--plain-http', `${localhost}/team-a/open:v1`);
      const refused = await run(
        tools.ctr as string,
        ['-a', containerd.socket, 'images', 'pull', '--plain-http', `${localhost}/team-a/app:v1`],
        {
          allowFailure: true,
        },
      );
      expect(refused.code).not.toBe(0);
      // containerd reports the 401's insufficient_scope as "pull access denied ... may require authorization".
      expect(refused.stderr).toMatch(/401|unauthorized|require authorization/i);
      // A tag the registry lacks, so ctr must write (for an existing one it only checks and skips).
      await containerd.ctr(
        'images',
        'tag',
        `${localhost}/team-a/app:v1`,
        `${localhost}/team-a/open:anonymous`,
      );
      const anonymousPush = await run(
        tools.ctr as string,
        [
          '-a',
          containerd.socket,
          'images',
          'push',
          '--plain-http',
          `${localhost}/team-a/open:anonymous`,
        ],
        {
          allowFailure: true,
        },
      );
      expect(anonymousPush.code).not.toBe(0);
    });
  },
);
