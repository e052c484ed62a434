/**
 * What the alternating benches share: the machine they ran on and how rounds become a figure.
 * On a shared 2-core VM one round can be off by a third, so the benches measure the two sides
 * alternately, round after round, and decide on the median of the per-round ratios.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';

/** Rounds each side is measured, from BENCH_ROUNDS. */
export function roundsFromEnvironment(fallback: number): number {
  const rounds = Number(process.env.BENCH_ROUNDS ?? fallback);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('BENCH_ROUNDS must be >= 1');
  return rounds;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** One core's SHA-256 speed in MB/s through node:crypto: what every push and pull pays for. */
export function sha256MBps(): number {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const hash = createHash('sha256');
  hash.update(chunk); // first use loads the implementation
  const rounds = 512;
  const started = performance.now();
  for (let index = 0; index < rounds; index += 1) hash.update(chunk);
  hash.digest();
  return (rounds * chunk.length) / 1e6 / ((performance.now() - started) / 1000);
}

/**
 * "AMD EPYC, 2 cores, SHA-256 1772 MB/s on one core, load 0.4, Node v24.21.0": the load
 * average says how much of the machine other work took when the bench started.
 */
export async function machineLine(): Promise<string> {
  const cpu =
    (await readFile('/proc/cpuinfo', 'utf8')).match(/model name\s*:\s*(.*)/)?.[1] ?? 'unknown CPU';
  return `${cpu}, ${cpus().length} cores, SHA-256 ${sha256MBps().toFixed(0)} MB/s on one core, load ${(loadavg()[0] as number).toFixed(1)}, Node ${process.version}`;
}

/** Each side in turn, the one that goes first swapping every round, so neither always runs warm. */
export function orderOfRound<T>(round: number, sides: readonly [T, T]): [T, T] {
  return round % 2 === 0 ? [sides[0], sides[1]] : [sides[1], sides[0]];
}

/** A pull measured directly and two other ways, cold and warm, round by round (MB/s). */
export interface PullSeries {
  direct: number[];
  cold: number[];
  warm: number[];
}

/**
 * A Markdown table of each round's MB/s with its ratio to that round's direct figure, and the
 * medians; `names` labels the direct, cold and warm rows.
 */
export function pullTable(
  title: string,
  series: PullSeries,
  names: { direct: string; cold: string; warm: string },
): string {
  const row = (name: string, values: number[]) => {
    const ratios = values.map((value, index) => value / (series.direct[index] as number));
    const cells = values.map(
      (value, index) => `${value.toFixed(0)} (${((ratios[index] as number) * 100).toFixed(0)}%)`,
    );
    return `| ${name} | ${cells.join(', ')} | ${median(values).toFixed(0)} | ${(median(ratios) * 100).toFixed(0)}% |`;
  };
  return [
    `| ${title} | MB/s per round (vs that round's direct) | median MB/s | median vs direct |`,
    '| --- | --- | --- | --- |',
    row(names.direct, series.direct),
    row(names.cold, series.cold),
    row(names.warm, series.warm),
    '',
  ].join('\n');
}

/** A measure compared across the two sides: its name, unit, how a round's figure is read. */
export interface Scenario<F> {
  readonly name: string;
  readonly unit: string;
  readonly figure: (figures: F) => number;
  readonly higherIsBetter: boolean;
  /** Judged on its own (a memory bound), not against distribution's figure. */
  readonly absolute?: true;
}

/** Berth's advantage in one round: above 1 when Berth did better. */
function advantage<F>(scenario: Scenario<F>, berth: F, distribution: F): number {
  const ours = scenario.figure(berth);
  const theirs = scenario.figure(distribution);
  return scenario.higherIsBetter ? ours / theirs : theirs / ours;
}

/** A Markdown table: per-round figures of both sides and the median ratio, one row per scenario. */
export function comparisonTable<F>(
  scenarios: readonly Scenario<F>[],
  rounds: readonly { berth: F; distribution: F }[],
): string[] {
  const lines = [
    `| measure | ${rounds.map((_, index) => `round ${index + 1} berth / distribution`).join(' | ')} | median berth | median distribution | median ratio |`,
    `| --- | ${rounds.map(() => '---').join(' | ')} | --- | --- | --- |`,
  ];
  for (const scenario of scenarios) {
    const cells = rounds.map(({ berth, distribution }) => {
      const pair = `${scenario.figure(berth).toFixed(1)} / ${scenario.figure(distribution).toFixed(1)}`;
      if (scenario.absolute) return pair;
      return `${pair} (${advantage(scenario, berth, distribution).toFixed(2)}x)`;
    });
    const berthMedian = median(rounds.map(({ berth }) => scenario.figure(berth)));
    const distributionMedian = median(
      rounds.map(({ distribution }) => scenario.figure(distribution)),
    );
    const ratioMedian = median(
      rounds.map(({ berth, distribution }) => advantage(scenario, berth, distribution)),
    );
    lines.push(
      `| ${scenario.name} (${scenario.unit}) | ${cells.join(' | ')} | ${berthMedian.toFixed(1)} | ${distributionMedian.toFixed(1)} | ${scenario.absolute ? '-' : `${ratioMedian.toFixed(2)}x`} |`,
    );
  }
  return lines;
}
