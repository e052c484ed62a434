import { randomBytes } from 'node:crypto';
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import {
  berthGc,
  deleteTag,
  gcContent,
  pushLooseBlob,
  storedBlobs,
  writeGcConfig,
} from '../support/gc.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth } from '../support/registries.ts';
import { describeWithTools, findTool } from '../support/tools.ts';

interface ManifestJson {
  config?: { digest: string };
  layers?: { digest: string }[];
  manifests?: { digest: string }[];
}

/**
 * Berth's collector against CNCF distribution's `registry garbage-collect --delete-untagged`
 * (Debian's docker-registry 2.8) on two copies of the same filesystem storage, written by Berth
 * (whose layout is distribution's), with nothing pushing. Both remove the same unreferenced
 * blobs; Berth also keeps what distribution wrongly deletes: the configs and layers of the
 * untagged children of a tagged index (distribution keeps the children's manifests, so the index
 * resolves and its images fail to pull: distribution#3178), and the referrers of a tagged
 * manifest with their blobs (distribution 2.8 knows no `subject`).
 */
describeWithTools(
  ['crane', 'oras', 'docker-registry'],
  'gc compared with distribution',
  (tools) => {
    let work: Awaited<ReturnType<typeof temporaryDirectory>>;
    beforeAll(async () => {
      work = await temporaryDirectory('gc-distribution');
    });
    afterAll(async () => {
      await work?.remove();
    });

    it('removes what distribution removes, but for the children of kept indexes and referrers of kept manifests', async () => {
      const berthData = join(work.path, 'berth');
      const registry = await startBerth(berthData, { extraArgs: ['--log-level', 'warn'] });
      const host = registry.host;
      const content = gcContent(
        { crane: tools.crane as string, oras: tools.oras as string },
        work.path,
      );
      const { crane, push } = content;
      const manifestOf = async (reference: string): Promise<ManifestJson> =>
        JSON.parse((await crane('manifest', reference)).stdout) as ManifestJson;
      const contentOf = (digest: string, manifest: ManifestJson): string[] => [
        digest,
        ...(manifest.config ? [manifest.config.digest] : []),
        ...(manifest.layers ?? []).map((layer) => layer.digest),
      ];
      let childContent: string[];
      let referrerContent: string[];
      let wrongDeletions: string[];
      try {
        // Kept by both: a tagged image. Removed by both: an image whose tag went, its referrer,
        // and a blob no manifest names.
        await push(`${host}/team/app:v1`);
        const old = await push(`${host}/team/app:old`);
        const oldReferrer = await content.attachSbom(`${host}/team/app@${old}`);
        await deleteTag(registry.url, 'team/app', 'old');
        await pushLooseBlob(registry.url, 'team/app', randomBytes(3000));
        // Kept by Berth only: the children of a tagged index, and a referrer of a tagged image.
        const [amd, arm] = await content.pushIndexOfUntaggedChildren(registry, 'team/multi');
        const referrer = await content.attachSbom(`${host}/team/app:v1`);
        childContent = [
          ...contentOf(amd, await manifestOf(`${host}/team/multi@${amd}`)),
          ...contentOf(arm, await manifestOf(`${host}/team/multi@${arm}`)),
        ];
        referrerContent = contentOf(referrer, await manifestOf(`${host}/team/app@${referrer}`));
        wrongDeletions = [amd, arm, referrer];
        expect(oldReferrer).toMatch(/^sha256:/);
      } finally {
        await registry.stop();
      }

      const distributionData = join(work.path, 'distribution');
      await cp(berthData, distributionData, { recursive: true });
      const before = await storedBlobs(new FilesystemDriver(berthData));
      expect(await storedBlobs(new FilesystemDriver(distributionData))).toEqual(before);

      const distributionConfig = join(work.path, 'distribution.yml');
      await writeFile(
        distributionConfig,
        [
          'version: 0.1',
          'log: {level: warn}',
          'storage:',
          `  filesystem: {rootdirectory: ${distributionData}}`,
          '  delete: {enabled: true}',
          '',
        ].join('\n'),
      );
      await run(findTool('docker-registry') as string, [
        'garbage-collect',
        '--delete-untagged',
        distributionConfig,
      ]);
      await sleep(1500);
      const gcConfig = await writeGcConfig(
        work.path,
        { filesystem: { rootDirectory: berthData } },
        {
          gracePeriod: '1s',
          untagged: 'delete',
        },
      );
      await berthGc(gcConfig);

      const keptByBerth = await storedBlobs(new FilesystemDriver(berthData));
      const keptByDistribution = await storedBlobs(new FilesystemDriver(distributionData));
      const removedByBerth = [...before].filter((digest) => !keptByBerth.has(digest)).sort();
      const removedByDistribution = [...before]
        .filter((digest) => !keptByDistribution.has(digest))
        .sort();
      expect(removedByBerth.length).toBeGreaterThan(0);
      // Everything Berth removed, distribution removed too.
      expect(removedByBerth.filter((digest) => keptByDistribution.has(digest))).toEqual([]);
      // What distribution removed beyond that is exactly: the configs and layers of the index's
      // children (it keeps their manifests, so the index resolves but its images do not pull:
      // distribution#3178), and the referrer with everything it holds.
      const onlyDistribution = removedByDistribution.filter((digest) => keptByBerth.has(digest));
      const [amd, arm, referrer] = wrongDeletions;
      expect(keptByDistribution.has(amd as string)).toBe(true);
      expect(keptByDistribution.has(arm as string)).toBe(true);
      const childBlobs = childContent.filter((digest) => digest !== amd && digest !== arm);
      expect(onlyDistribution).toEqual([...new Set([...childBlobs, ...referrerContent])].sort());
      expect(referrerContent[0]).toBe(referrer);
    }, 240_000);
  },
);
