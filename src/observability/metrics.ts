import client from 'prom-client';

/**
 * Berth's metrics, on prom-client (the Prometheus client for Node): one `MetricsRegistry` per
 * process, or per server in a test that runs several in one process, so none shares the
 * library's global registry. The classes below keep the small API the rest of `src/` writes
 * against; each wraps one prom-client metric (`collector`), which does the counting and the
 * exposition format. Label values are passed by name; a label left out is exported empty, and
 * labels are written in the order the metric declares them.
 */
type Labels = Readonly<Record<string, string>>;

/** Something a `MetricsRegistry` exports: a prom-client metric. */
export interface Metric {
  readonly collector: client.Metric;
}

/** The value of one sample, with its labels, read when the metric is scraped. */
export interface Sample {
  readonly labels: Labels;
  readonly value: number;
}

function ordered(names: readonly string[], labels: Labels): Record<string, string> {
  const values: Record<string, string> = {};
  for (const name of names) values[name] = labels[name] ?? '';
  return values;
}

/** A count that only goes up; the name ends in `_total`. */
export class Counter implements Metric {
  readonly collector: client.Counter;
  private readonly labelNames: readonly string[];

  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    this.labelNames = labelNames;
    this.collector = new client.Counter({ name, help, labelNames, registers: [] });
  }

  inc(labels: Labels = {}, amount = 1): void {
    this.collector.inc(ordered(this.labelNames, labels), amount);
  }
}

/** A gauge whose one value is read when scraped; a read that yields NaN exports no sample. */
export class Gauge implements Metric {
  readonly collector: client.Gauge;

  constructor(name: string, help: string, read: () => number | Promise<number>) {
    this.collector = new SampledGauge(name, help, [], async () => {
      const value = await read();
      return Number.isNaN(value) ? [] : [{ labels: {}, value }];
    });
  }
}

/** A gauge of any number of labelled samples read when scraped: a state kept elsewhere. */
export class CollectedGauge implements Metric {
  readonly collector: client.Gauge;

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    read: () => Iterable<Sample> | Promise<Iterable<Sample>>,
  ) {
    this.collector = new SampledGauge(name, help, labelNames, read);
  }
}

/**
 * A counter whose labelled samples are read when scraped: a count something else keeps (the
 * kube client's failed requests, an informer's failed watches). The name ends in `_total`.
 */
export class CollectedCounter implements Metric {
  readonly collector: client.Counter;

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    read: () => Iterable<Sample> | Promise<Iterable<Sample>>,
  ) {
    this.collector = new SampledCounter(name, help, labelNames, read);
  }
}

type Read = () => Iterable<Sample> | Promise<Iterable<Sample>>;
type GaugeObject = Awaited<ReturnType<client.Gauge['get']>>;

/** The samples are exactly those `read` yields now: none when it yields none. */
async function sampled(
  base: GaugeObject,
  labelNames: readonly string[],
  read: Read,
): Promise<GaugeObject> {
  const values = [...(await read())].map(({ labels, value }) => ({
    labels: ordered(labelNames, labels),
    value,
  }));
  return { ...base, values };
}

class SampledGauge extends client.Gauge {
  private readonly read: Read;
  private readonly names: readonly string[];

  constructor(name: string, help: string, labelNames: readonly string[], read: Read) {
    super({ name, help, labelNames, registers: [] });
    this.read = read;
    this.names = labelNames;
  }

  override async get(): Promise<GaugeObject> {
    // The base keeps prom-client's name, help, type and aggregator; its own values are unused.
    return sampled(await super.get(), this.names, this.read);
  }
}

class SampledCounter extends client.Counter {
  private readonly read: Read;
  private readonly names: readonly string[];

  constructor(name: string, help: string, labelNames: readonly string[], read: Read) {
    super({ name, help, labelNames, registers: [] });
    this.read = read;
    this.names = labelNames;
  }

  override async get(): Promise<GaugeObject> {
    return sampled(await super.get(), this.names, this.read);
  }
}

/** Observations in buckets; a duration's name ends in `_seconds`, a size's in `_bytes`. */
export class Histogram implements Metric {
  readonly collector: client.Histogram;
  private readonly labelNames: readonly string[];

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
  ) {
    this.labelNames = labelNames;
    this.collector = new client.Histogram({
      name,
      help,
      labelNames,
      buckets: [...buckets],
      registers: [],
    });
  }

  observe(labels: Labels, value: number): void {
    this.collector.observe(ordered(this.labelNames, labels), value);
  }
}

export class MetricsRegistry {
  private readonly registry = new client.Registry();

  /** The `Content-Type` of `render()`: Prometheus text format 0.0.4. */
  readonly contentType: string = this.registry.contentType;

  /** Exports the metric; a second metric of the same name throws (prom-client). */
  register<T extends Metric>(metric: T): T {
    this.registry.registerMetric(metric.collector);
    return metric;
  }

  /**
   * prom-client's default metrics: `process_*` (CPU, resident memory, open files, start time)
   * and `nodejs_*` (heap spaces, GC durations, event-loop lag, active handles).
   */
  registerProcessMetrics(): void {
    client.collectDefaultMetrics({ register: this.registry });
  }

  /** Every metric in the Prometheus text format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
