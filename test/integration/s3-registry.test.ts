import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expectServedAsDistributionServed } from '../support/adoption.ts';
import { runConformanceSuite } from '../support/conformance.ts';
import { randomLayerTar, sha256Of } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import {
  s3Tool,
  startBerthOnS3,
  startDistributionOnS3,
  startS3Server,
  type S3Server,
} from '../support/s3.ts';
import { describeWithTools } from '../support/tools.ts';

/**
 * `berth registry` on S3 (versitygw): the conformance suite, real clients, `berth check`, and a
 * bucket written by CNCF distribution's s3 driver served as it is.
 */
describeWithTools(
  [s3Tool, 'conformance', 'crane', 'oras', 'skopeo', 'docker-registry'],
  'registry on S3 storage',
  (tools) => {
    let server: S3Server;
    let work: Awaited<ReturnType<typeof temporaryDirectory>>;
    beforeAll(async () => {
      server = await startS3Server();
      work = await temporaryDirectory('s3-registry-work');
    });
    afterAll(async () => {
      await server?.stop();
      await work?.remove();
    });

    const crane = (...args: string[]) => run(tools.crane as string, [...args, '--insecure']);

    it('passes the OCI conformance suite', async () => {
      const registry = await startBerthOnS3(server, await server.createBucket(), {
        extraArgs: ['--log-level', 'warn'],
      });
      try {
        await runConformanceSuite(tools.conformance as string, registry.host, {});
      } finally {
        await registry.stop();
        await registry.removeConfig();
      }
    });

    it('round-trips crane, oras and skopeo, and berth check finds the bucket clean', async () => {
      const bucket = await server.createBucket();
      const registry = await startBerthOnS3(server, bucket, {
        prefix: 'registry',
        extraArgs: ['--log-level', 'warn'],
      });
      const host = registry.host;
      try {
        // Layers above and below the 10 MiB part size.
        for (const [name, size] of [
          ['small', 3 * 1024 * 1024],
          ['large', 23 * 1024 * 1024 + 5],
        ] as const) {
          const layer = await randomLayerTar(work.path, name, size);
          await crane('append', '-f', layer, '-t', `${host}/crane/${name}:v1`);
          const digest = (await crane('digest', `${host}/crane/${name}:v1`)).stdout.trim();
          const tarball = join(work.path, `${name}-pulled.tar`);
          await crane('pull', `${host}/crane/${name}:v1`, tarball);
          await crane('push', tarball, `${host}/crane/${name}-again:v1`);
          expect((await crane('digest', `${host}/crane/${name}-again:v1`)).stdout.trim()).toBe(
            digest,
          );
        }

        const layout = join(work.path, 'layout');
        await run(tools.skopeo as string, [
          'copy',
          '--src-tls-verify=false',
          `docker://${host}/crane/large:v1`,
          `oci:${layout}:v1`,
        ]);
        for (const name of await readdir(join(layout, 'blobs', 'sha256'))) {
          expect(await sha256Of(await readFile(join(layout, 'blobs', 'sha256', name)))).toBe(
            `sha256:${name}`,
          );
        }
        await run(tools.skopeo as string, [
          'copy',
          '--dest-tls-verify=false',
          `oci:${layout}:v1`,
          `docker://${host}/skopeo/copied:v1`,
        ]);

        const artifact = join(work.path, 'artifact.txt');
        await run('sh', ['-c', `head -c 7000000 /dev/urandom > ${artifact}`]);
        await run(
          tools.oras as string,
          ['push', '--plain-http', `${host}/oras/artifact:v1`, 'artifact.txt'],
          { cwd: work.path },
        );
        const pulled = join(work.path, 'oras-pulled');
        await run(tools.oras as string, [
          'pull',
          '--plain-http',
          '-o',
          pulled,
          `${host}/oras/artifact:v1`,
        ]);
        expect(
          (await readFile(join(pulled, 'artifact.txt'))).equals(await readFile(artifact)),
        ).toBe(true);
      } finally {
        await registry.stop();
      }
      const check = await run(
        process.execPath,
        ['src/cli.ts', 'check', '--config', registry.configFile, '--verify-content'],
        { env: server.env },
      );
      expect(check.stdout).toMatch(/; 0 problems/);
      expect(check.stdout).toMatch(/^6 repositories/m);
      await registry.removeConfig();
    });

    it('serves a bucket that CNCF distribution wrote, identical to what distribution serves', async () => {
      const bucket = await server.createBucket();
      const distribution = await startDistributionOnS3(server, bucket, work.path, {
        prefix: '/legacy-root',
      });
      const source = join(work.path, 'from-distribution');
      try {
        const layer = await randomLayerTar(work.path, 'adopted', 12 * 1024 * 1024);
        await crane('append', '-f', layer, '-t', `${distribution.host}/legacy/app:v1`);
        await crane('tag', `${distribution.host}/legacy/app:v1`, 'stable');
        await run(tools.skopeo as string, [
          'copy',
          '--src-tls-verify=false',
          `docker://${distribution.host}/legacy/app:v1`,
          `dir:${source}`,
        ]);
      } finally {
        await distribution.stop();
      }
      const berth = await startBerthOnS3(server, bucket, {
        prefix: 'legacy-root',
        extraArgs: ['--log-level', 'warn'],
      });
      try {
        await expectServedAsDistributionServed(
          tools.skopeo as string,
          berth.host,
          source,
          join(work.path, 'from-berth'),
        );
        // And Berth writes into the adopted bucket.
        await crane('copy', `${berth.host}/legacy/app:v1`, `${berth.host}/legacy/app:v2`);
      } finally {
        await berth.stop();
        await berth.removeConfig();
      }
    });
  },
);
