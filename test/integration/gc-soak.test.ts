import { randomBytes, randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { berthCli } from '../support/cli.ts';
import {
  deleteTag,
  gcStorages,
  metricValue,
  referencedThroughApi,
  storedBlobs,
  writeGcConfig,
} from '../support/gc.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth } from '../support/registries.ts';
import { s3Tool, startS3Server, type S3Server } from '../support/s3.ts';
import { describeWithTools } from '../support/tools.ts';

const clients = 4;
const soakMillis = 35_000;

/**
 * Collection every 2 s with a 3 s grace period while clients push, mount across repositories,
 * move and delete tags. Afterwards every acknowledged tag pulls back what was pushed, storage is
 * consistent, and once the grace period is over it holds exactly what the tags reach.
 */
describeWithTools(['crane', s3Tool], 'garbage collection during pushes (soak)', (tools) => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let s3: S3Server;
  beforeAll(async () => {
    work = await temporaryDirectory('gc-soak');
    s3 = await startS3Server();
  });
  afterAll(async () => {
    await s3?.stop();
    await work?.remove();
  });
  const crane = (...args: string[]) =>
    run(tools.crane as string, [...args, '--insecure'], { timeoutMs: 60_000 });

  const setups = gcStorages(() => s3);

  for (const [name, makeSetup] of Object.entries(setups)) {
    it(`keeps every acknowledged image on ${name}`, async () => {
      const setup = await makeSetup();
      const config = await writeGcConfig(work.path, setup.storage, {
        interval: '2s',
        gracePeriod: '3s',
        untagged: 'delete',
      });
      const registry = await startBerth(undefined, {
        extraArgs: ['--config', config, '--log-level', 'warn'],
        env: setup.env,
      });
      const host = registry.host;
      /** What each tag points at, as last acknowledged; each client moves only its own tags. */
      const owned = Array.from({ length: clients }, () => new Map<string, string>());
      let operations = 0;
      const client = async (index: number): Promise<void> => {
        const tags = owned[index] as Map<string, string>;
        const deadline = Date.now() + soakMillis;
        for (let step = 0; Date.now() < deadline; step += 1) {
          const known = [...tags.entries()];
          const pick = known[randomInt(Math.max(known.length, 1))];
          const choice = known.length < 4 ? 0 : randomInt(4);
          if (choice === 0) {
            const reference = `soak/r${randomInt(3)}:c${index}-${step}`;
            const layer = await randomLayerTar(
              work.path,
              `s${randomBytes(6).toString('hex')}`,
              16 * 1024,
            );
            await crane('append', '-f', layer, '-t', `${host}/${reference}`);
            tags.set(reference, (await crane('digest', `${host}/${reference}`)).stdout.trim());
          } else if (choice === 1 && pick) {
            // A copy to another repository mounts every blob.
            const target = `soak/r${randomInt(3)}:m${index}-${step}`;
            await crane('copy', `${host}/${pick[0]}`, `${host}/${target}`);
            tags.set(target, pick[1]);
          } else if (choice === 2 && pick) {
            // Move a tag of the same repository onto this image.
            const repository = pick[0].split(':')[0] as string;
            const other = known.find(([reference]) => reference.startsWith(`${repository}:`));
            if (other && other[0] !== pick[0]) {
              await crane('tag', `${host}/${pick[0]}`, other[0].split(':')[1] as string);
              tags.set(other[0], pick[1]);
            }
          } else if (pick && tags.has(pick[0])) {
            tags.delete(pick[0]);
            const [repository, tag] = pick[0].split(':') as [string, string];
            await deleteTag(registry.url, repository, tag).catch(() => undefined);
          }
          operations += 1;
        }
      };
      try {
        await Promise.all(Array.from({ length: clients }, (_, index) => client(index)));
        expect(operations).toBeGreaterThan(20);
        const during = await metricValue(
          registry.url,
          'berth_registry_gc_runs_total{result="success"}',
        );
        expect(during).toBeGreaterThan(1);
        for (const [reference, digest] of owned.flatMap((tags) => [...tags])) {
          expect((await crane('digest', `${host}/${reference}`)).stdout.trim()).toBe(digest);
          await crane(
            'pull',
            `${host}/${reference}@${digest}`.replace(/:[^:/]+@/, '@'),
            `${work.path}/pulled.tar`,
          );
        }
        // Past the grace period and two more collections, only what the tags reach is left.
        await sleep(3500);
        const before = await metricValue(
          registry.url,
          'berth_registry_gc_runs_total{result="success"}',
        );
        for (let waited = 0; waited < 20_000; waited += 250) {
          const now = await metricValue(
            registry.url,
            'berth_registry_gc_runs_total{result="success"}',
          );
          if (now >= before + 2) break;
          await sleep(250);
        }
        const check = await run(
          process.execPath,
          [berthCli(), 'check', '--config', config, '--verify-content'],
          { env: setup.env },
        );
        expect(check.stdout).toMatch(/; 0 problems/);
        expect(await storedBlobs(setup.driver)).toEqual(await referencedThroughApi(registry.url));
        expect(
          await metricValue(registry.url, 'berth_registry_gc_runs_total{result="failure"}'),
        ).toBe(0);
        expect(
          await metricValue(registry.url, 'berth_registry_gc_freed_bytes_total'),
        ).toBeGreaterThan(0);
      } finally {
        await registry.stop();
      }
    }, 90_000);
  }
});
