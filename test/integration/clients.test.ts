import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomLayerTar, sha256Of } from '../support/images.ts';
import { startContainerd, type Containerd } from '../support/containerd.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { describeWithTools } from '../support/tools.ts';

/**
 * Round trips with the clients people use, against a real `berth registry` process. Digests are
 * compared at both ends: what the client says it pushed, what the registry serves, and what a
 * second client reads back.
 */
describeWithTools(
  ['crane', 'skopeo', 'oras', 'ctr', 'containerd', 'podman'],
  'real clients',
  (tools) => {
    let registry: RegistryProcess;
    let storage: Awaited<ReturnType<typeof temporaryDirectory>>;
    let work: Awaited<ReturnType<typeof temporaryDirectory>>;
    let host: string;
    let baseDigest: string;
    let containerd: Containerd;

    const crane = (...args: string[]) => run(tools.crane as string, [...args, '--insecure']);
    const skopeo = (...args: string[]) => run(tools.skopeo as string, args);
    const oras = (...args: string[]) => run(tools.oras as string, [...args, '--plain-http']);

    /** The manifest the registry serves for a reference, and its digest header. */
    async function served(
      repository: string,
      reference: string,
    ): Promise<{ digest: string; bytes: Buffer; contentType: string }> {
      const response = await fetch(`http://${host}/v2/${repository}/manifests/${reference}`, {
        headers: { Accept: '*/*' },
      });
      expect(response.status).toBe(200);
      const bytes = Buffer.from(await response.arrayBuffer());
      const digest = response.headers.get('docker-content-digest') as string;
      expect(await sha256Of(bytes)).toBe(digest);
      return { digest, bytes, contentType: response.headers.get('content-type') as string };
    }

    beforeAll(async () => {
      storage = await temporaryDirectory('clients-data');
      work = await temporaryDirectory('clients-work');
      registry = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
      host = registry.host;
      containerd = await startContainerd(
        { containerd: tools.containerd as string, ctr: tools.ctr as string },
        join(work.path, 'containerd'),
      );
      const layer = await randomLayerTar(work.path, 'base', 3 * 1024 * 1024);
      const pushed = await crane('append', '-f', layer, '-t', `${host}/base/app:v1`);
      baseDigest = (await crane('digest', `${host}/base/app:v1`)).stdout.trim();
      expect(pushed.stdout + pushed.stderr).toContain(baseDigest);
    });

    afterAll(async () => {
      await containerd?.stop();
      await registry?.stop();
      await storage?.remove();
      await work?.remove();
    });

    it('crane: push, pull, copy, manifest, ls, delete', async () => {
      const { digest, bytes } = await served('base/app', 'v1');
      expect(digest).toBe(baseDigest);
      expect((await crane('manifest', `${host}/base/app:v1`)).stdout).toBe(bytes.toString());

      const tarball = join(work.path, 'crane-pulled.tar');
      await crane('pull', `${host}/base/app:v1`, tarball);
      await crane('push', tarball, `${host}/crane/pushed:v1`);
      expect((await served('crane/pushed', 'v1')).digest).toBe(baseDigest);

      await crane('copy', `${host}/base/app:v1`, `${host}/crane/copied:v2`);
      expect((await served('crane/copied', 'v2')).digest).toBe(baseDigest);
      await crane('tag', `${host}/crane/copied:v2`, 'v3');
      expect((await crane('ls', `${host}/crane/copied`)).stdout.trim().split('\n')).toEqual([
        'v2',
        'v3',
      ]);

      await crane('delete', `${host}/crane/copied@${baseDigest}`);
      const gone = await run(
        tools.crane as string,
        ['manifest', '--insecure', `${host}/crane/copied@${baseDigest}`],
        {
          allowFailure: true,
        },
      );
      expect(gone.code).not.toBe(0);
      expect(gone.stderr).toContain('MANIFEST_UNKNOWN');
      // Deleting by digest takes the tags that pointed at it too.
      expect(
        (
          (await (await fetch(`http://${host}/v2/crane/copied/tags/list`)).json()) as {
            tags: string[];
          }
        ).tags,
      ).toEqual([]);
    });

    it('skopeo: copy in and out through an OCI layout and a docker-archive', async () => {
      const layout = join(work.path, 'layout');
      await skopeo(
        'copy',
        '--src-tls-verify=false',
        `docker://${host}/base/app:v1`,
        `oci:${layout}:v1`,
      );
      const digestFile = join(work.path, 'skopeo-oci.digest');
      await skopeo(
        'copy',
        '--dest-tls-verify=false',
        '--digestfile',
        digestFile,
        `oci:${layout}:v1`,
        `docker://${host}/skopeo/oci:v1`,
      );
      const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as {
        manifests: { digest: string }[];
      };
      const layoutDigest = index.manifests[0]?.digest;
      expect((await readFile(digestFile, 'utf8')).trim()).toBe(layoutDigest);
      const oci = await served('skopeo/oci', 'v1');
      expect(oci.digest).toBe(layoutDigest);
      expect(oci.contentType).toBe('application/vnd.oci.image.manifest.v1+json');
      // Every blob in the layout is named by its digest: pulling wrote the right bytes.
      for (const name of await readdir(join(layout, 'blobs', 'sha256'))) {
        expect(await sha256Of(await readFile(join(layout, 'blobs', 'sha256', name)))).toBe(
          `sha256:${name}`,
        );
      }

      const archive = join(work.path, 'image.tar');
      await skopeo(
        'copy',
        '--src-tls-verify=false',
        `docker://${host}/base/app:v1`,
        `docker-archive:${archive}`,
      );
      const archiveDigestFile = join(work.path, 'skopeo-archive.digest');
      await skopeo(
        'copy',
        '--dest-tls-verify=false',
        '--digestfile',
        archiveDigestFile,
        `docker-archive:${archive}`,
        `docker://${host}/skopeo/archive:v1`,
      );
      const archived = await served('skopeo/archive', 'v1');
      expect((await readFile(archiveDigestFile, 'utf8')).trim()).toBe(archived.digest);
      // Same config and layers as the original: the archive round trip preserved the image.
      expect(archived.digest).toBe(baseDigest);
    });

    it('oras: push and pull an artifact, attach a referrer and discover it', async () => {
      const file = join(work.path, 'notes.txt');
      await writeFile(file, 'artifact payload\n');
      await run(
        tools.oras as string,
        [
          'push',
          '--plain-http',
          `${host}/oras/artifact:v1`,
          '--artifact-type',
          'application/vnd.berth.test',
          'notes.txt:text/plain',
        ],
        { cwd: work.path },
      );
      const subject = await served('oras/artifact', 'v1');

      const output = join(work.path, 'oras-out');
      await oras('pull', `${host}/oras/artifact:v1`, '-o', output);
      expect(await readFile(join(output, 'notes.txt'), 'utf8')).toBe('artifact payload\n');

      await writeFile(join(work.path, 'signature.txt'), 'signed\n');
      await run(
        tools.oras as string,
        [
          'attach',
          '--plain-http',
          '--artifact-type',
          'application/vnd.berth.signature',
          `${host}/oras/artifact:v1`,
          'signature.txt:text/plain',
        ],
        { cwd: work.path },
      );
      const discovered = JSON.parse(
        (await oras('discover', `${host}/oras/artifact:v1`, '--format', 'json')).stdout,
      ) as {
        referrers: { artifactType: string; digest: string }[];
      };
      expect(discovered.referrers.map((r) => r.artifactType)).toEqual([
        'application/vnd.berth.signature',
      ]);

      const filtered = await fetch(
        `http://${host}/v2/oras/artifact/referrers/${subject.digest}?artifactType=application/vnd.berth.signature`,
      );
      expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
      const index = (await filtered.json()) as { manifests: { digest: string }[] };
      expect(index.manifests.map((m) => m.digest)).toEqual(
        discovered.referrers.map((r) => r.digest),
      );
    });

    it('containerd: ctr pulls and pushes over plain HTTP on localhost', async () => {
      const localhost = host.replace('127.0.0.1', 'localhost');
      await containerd.ctr('images', 'pull', '--plain-http', `${localhost}/base/app:v1`);
      expect((await containerd.ctr('images', 'ls')).stdout).toContain(baseDigest);
      await containerd.ctr(
        'images',
        'tag',
        `${localhost}/base/app:v1`,
        `${localhost}/ctr/pushed:v1`,
      );
      await containerd.ctr('images', 'push', '--plain-http', `${localhost}/ctr/pushed:v1`);
      expect((await served('ctr/pushed', 'v1')).digest).toBe(baseDigest);
    });

    it('podman: pull and push', async () => {
      const root = join(work.path, 'podman');
      const podman = (...args: string[]) =>
        run(tools.podman as string, [
          '--root',
          `${root}/root`,
          '--runroot',
          `${root}/run`,
          '--storage-driver',
          'vfs',
          ...args,
        ]);
      await podman('pull', '--tls-verify=false', `${host}/base/app:v1`);
      const imageId = (
        await podman('images', '--format', '{{.Digest}}', `${host}/base/app:v1`)
      ).stdout.trim();
      expect(imageId).toBe(baseDigest);
      await podman(
        'push',
        '--tls-verify=false',
        `${host}/base/app:v1`,
        `docker://${host}/podman/pushed:v1`,
      );
      const pushed = await served('podman/pushed', 'v1');
      // podman pushes what it stored; its layers must all be readable back from the registry.
      const manifest = JSON.parse(pushed.bytes.toString()) as {
        layers: { digest: string }[];
        config: { digest: string };
      };
      for (const { digest } of [...manifest.layers, manifest.config]) {
        const blob = await fetch(`http://${host}/v2/podman/pushed/blobs/${digest}`);
        expect(await sha256Of(Buffer.from(await blob.arrayBuffer()))).toBe(digest);
      }
    });

    it('a multi-architecture index round trips through crane and skopeo, and containerd pulls every platform', async () => {
      await crane(
        'mutate',
        `${host}/base/app:v1`,
        '--set-platform',
        'linux/arm64',
        '-t',
        `${host}/multi/app:arm64`,
      );
      await crane(
        'mutate',
        `${host}/base/app:v1`,
        '--set-platform',
        'linux/amd64',
        '-t',
        `${host}/multi/app:amd64`,
      );
      await crane(
        'index',
        'append',
        '--docker-empty-base',
        '-m',
        `${host}/multi/app:amd64`,
        '-m',
        `${host}/multi/app:arm64`,
        '-t',
        `${host}/multi/app:v1`,
      );
      const index = await served('multi/app', 'v1');
      expect(index.contentType).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
      const platforms = (
        JSON.parse(index.bytes.toString()) as {
          manifests: { platform: { architecture: string } }[];
        }
      ).manifests.map((m) => m.platform.architecture);
      expect(platforms.sort()).toEqual(['amd64', 'arm64']);

      // dir: keeps every manifest byte for byte; an OCI layout would convert a Docker list.
      const copyDirectory = join(work.path, 'multi-dir');
      await skopeo(
        'copy',
        '--all',
        '--preserve-digests',
        '--src-tls-verify=false',
        `docker://${host}/multi/app:v1`,
        `dir:${copyDirectory}`,
      );
      await skopeo(
        'copy',
        '--all',
        '--preserve-digests',
        '--dest-tls-verify=false',
        `dir:${copyDirectory}`,
        `docker://${host}/multi/back:v1`,
      );
      expect((await served('multi/back', 'v1')).digest).toBe(index.digest);

      await crane('copy', `${host}/multi/app:v1`, `${host}/multi/copied:v1`);
      expect((await served('multi/copied', 'v1')).digest).toBe(index.digest);
      const localhost = host.replace('127.0.0.1', 'localhost');
      await containerd.ctr(
        'images',
        'pull',
        '--plain-http',
        '--all-platforms',
        `${localhost}/multi/app:v1`,
      );
      expect((await containerd.ctr('images', 'ls')).stdout).toContain(index.digest);
      // Each child is there by digest.
      for (const child of (
        JSON.parse(index.bytes.toString()) as { manifests: { digest: string }[] }
      ).manifests) {
        expect((await served('multi/copied', child.digest)).digest).toBe(child.digest);
      }
    });
  },
);
