/**
 * Pull throughput through `berth registry` as a pull-through mirror, beside a direct pull from
 * its upstream, in the same run on the same machine: the upstream is CNCF distribution
 * (Debian's docker-registry) on loopback, Berth mirrors it under the prefix `upstream.bench`.
 *
 * A pull is at the protocol level (manifest, then every blob streamed and hashed, nothing kept).
 * Every round pushes a new image of one random layer to the upstream (not timed), then pulls it
 * direct, through Berth cold (Berth streams it from upstream while storing it) and through Berth
 * warm (from Berth's storage). The direct pull goes first in even rounds and after the mirrored
 * pair in odd ones, so neither side always runs on a warmer machine; the report gives each round
 * and the median of the per-round ratios to the direct pull.
 *
 *   npm run bench:mirror                (BENCH_LAYER_MB=256, BENCH_ROUNDS=5)
 *   BENCH_SOURCE=1 node test/bench/mirror.ts   (Berth from src/ instead of dist/)
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pullThrough, type ProtocolPull } from '../support/node-proxy.ts';
import { temporaryDirectory } from '../support/processes.ts';
import { startBerth } from '../support/registries.ts';
import { pushPlatformImage, startUpstreamRegistry } from '../support/upstream-registry.ts';
import {
  machineLine,
  orderOfRound,
  pullTable,
  roundsFromEnvironment,
  type PullSeries,
} from './rounds.ts';

const layerMB = Number(process.env.BENCH_LAYER_MB ?? 256);
const rounds = roundsFromEnvironment(5);
const built = process.env.BENCH_SOURCE !== '1';
const prefix = 'upstream.bench';

type Series = PullSeries;

/** MB/s of one pull; a pull that failed or got wrong bytes ends the bench. */
async function timed(pull: () => Promise<ProtocolPull>): Promise<number> {
  const started = performance.now();
  const result = await pull();
  const seconds = (performance.now() - started) / 1000;
  if (result.manifestStatus !== 200 || [...result.blobs.values()].some((ok) => !ok))
    throw new Error('a pull failed or returned wrong bytes');
  return result.bytes / 1e6 / seconds;
}

async function measure(): Promise<Series> {
  const work = await temporaryDirectory('bench-mirror');
  const upstream = await startUpstreamRegistry(join(work.path, 'upstream'));
  const config = join(work.path, 'berth.yaml');
  await writeFile(
    config,
    [
      'mirrors:',
      `  - {url: "${upstream.url}", prefix: ${prefix}}`,
      'log: {requests: false}',
      '',
    ].join('\n'),
  );
  const berth = await startBerth(join(work.path, 'berth'), {
    built,
    extraArgs: ['--config', config],
  });
  const series: Series = { direct: [], cold: [], warm: [] };
  try {
    for (let round = 0; round < rounds; round += 1) {
      const repository = `bench/app-${round}`;
      await pushPlatformImage(upstream, repository, 'amd64', layerMB * 1024 * 1024, work.path, '1');
      const direct = async () => {
        series.direct.push(
          await timed(() => pullThrough(upstream.url, repository, '1', undefined)),
        );
      };
      const mirrored = async () => {
        const through = () => pullThrough(berth.url, `${prefix}/${repository}`, '1', undefined);
        series.cold.push(await timed(through));
        series.warm.push(await timed(through));
      };
      for (const side of orderOfRound(round, [direct, mirrored] as const)) await side();
    }
    return series;
  } finally {
    await berth.stop();
    await upstream.stop();
    await work.remove();
  }
}

const machine = await machineLine();
const series = await measure();
process.stdout.write(
  [
    '',
    `${layerMB} MiB layer, ${rounds} rounds, Berth from ${built ? 'dist/' : 'src/'}, ${machine}.`,
    '',
    pullTable('pull', series, {
      direct: 'direct from the upstream (docker-registry)',
      cold: 'through the Berth mirror, cold (streamed from upstream while stored)',
      warm: 'through the Berth mirror, warm (from Berth storage)',
    }),
  ].join('\n'),
);
