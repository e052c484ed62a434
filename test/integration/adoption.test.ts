import { join } from 'node:path';
import { expectServedAsDistributionServed } from '../support/adoption.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, startDistribution } from '../support/registries.ts';
import { describeWithTools } from '../support/tools.ts';

/** A registry:2 volume (CNCF distribution 2.8, Debian's docker-registry) served by Berth as it is. */
describeWithTools(
  ['docker-registry', 'skopeo', 'crane'],
  'adopting a CNCF distribution volume',
  (tools) => {
    it('serves what distribution wrote, and skopeo pulls it back identical', async () => {
      const storage = await temporaryDirectory('adoption-data');
      const work = await temporaryDirectory('adoption-work');
      try {
        const distribution = await startDistribution(storage.path, work.path);
        const layer = await randomLayerTar(work.path, 'adopted', 2 * 1024 * 1024);
        await run(tools.crane as string, [
          'append',
          '--insecure',
          '-f',
          layer,
          '-t',
          `${distribution.host}/legacy/app:v1`,
        ]);
        await run(tools.crane as string, [
          'tag',
          '--insecure',
          `${distribution.host}/legacy/app:v1`,
          'stable',
        ]);
        const source = join(work.path, 'from-distribution');
        await run(tools.skopeo as string, [
          'copy',
          '--src-tls-verify=false',
          `docker://${distribution.host}/legacy/app:v1`,
          `dir:${source}`,
        ]);
        await distribution.stop();

        const berth = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
        try {
          await expectServedAsDistributionServed(
            tools.skopeo as string,
            berth.host,
            source,
            join(work.path, 'from-berth'),
          );
          const catalog = (await (await fetch(`${berth.url}/v2/_catalog`)).json()) as {
            repositories: string[];
          };
          expect(catalog.repositories).toEqual(['legacy/app']);
          // Distribution keeps no Content-Type; Berth reads it from the content.
          const head = await fetch(`${berth.url}/v2/legacy/app/manifests/v1`, { method: 'HEAD' });
          expect(head.headers.get('content-type')).toBe(
            'application/vnd.docker.distribution.manifest.v2+json',
          );
        } finally {
          await berth.stop();
        }
      } finally {
        await storage.remove();
        await work.remove();
      }
    });
  },
);
