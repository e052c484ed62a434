/**
 * A small Prometheus text-format registry: counters, gauges and histograms with labels. Enough
 * for Berth's processes without pulling in a client library; the exposition format is stable
 * (https://prometheus.io/docs/instrumenting/exposition_formats/).
 */
type Labels = Record<string, string>;

interface Metric {
  render(): string;
}

function labelKey(names: readonly string[], labels: Labels): string {
  return names.map((name) => labels[name] ?? '').join('\u0000');
}

function formatLabels(names: readonly string[], values: readonly string[], extra = ''): string {
  const parts = names.map((name, index) => `${name}="${escapeLabel(values[index] ?? '')}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

export class Counter implements Metric {
  private readonly values = new Map<string, { labels: string[]; value: number }>();
  private readonly name: string;
  private readonly help: string;
  private readonly labelNames: readonly string[];

  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  inc(labels: Labels = {}, amount = 1): void {
    const key = labelKey(this.labelNames, labels);
    const entry = this.values.get(key);
    if (entry) entry.value += amount;
    else
      this.values.set(key, {
        labels: this.labelNames.map((name) => labels[name] ?? ''),
        value: amount,
      });
  }

  get(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels))?.value ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const { labels, value } of this.values.values()) {
      lines.push(`${this.name}${formatLabels(this.labelNames, labels)} ${value}`);
    }
    return lines.join('\n');
  }
}

export class Gauge implements Metric {
  private readonly name: string;
  private readonly help: string;
  private readonly read: () => number;

  /** A gauge whose value is read when scraped. */
  constructor(name: string, help: string, read: () => number) {
    this.name = name;
    this.help = help;
    this.read = read;
  }

  render(): string {
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} gauge`,
      `${this.name} ${this.read()}`,
    ].join('\n');
  }
}

export class Histogram implements Metric {
  private readonly series = new Map<
    string,
    { labels: string[]; counts: number[]; sum: number; count: number }
  >();
  private readonly name: string;
  private readonly help: string;
  private readonly labelNames: readonly string[];
  private readonly buckets: readonly number[];

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
  ) {
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
    this.buckets = buckets;
  }

  observe(labels: Labels, value: number): void {
    const key = labelKey(this.labelNames, labels);
    let entry = this.series.get(key);
    if (!entry) {
      entry = {
        labels: this.labelNames.map((name) => labels[name] ?? ''),
        counts: this.buckets.map(() => 0),
        sum: 0,
        count: 0,
      };
      this.series.set(key, entry);
    }
    for (let index = 0; index < this.buckets.length; index += 1) {
      if (value <= (this.buckets[index] as number))
        entry.counts[index] = (entry.counts[index] as number) + 1;
    }
    entry.sum += value;
    entry.count += 1;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const { labels, counts, sum, count } of this.series.values()) {
      this.buckets.forEach((bound, index) => {
        lines.push(
          `${this.name}_bucket${formatLabels(this.labelNames, labels, `le="${bound}"`)} ${counts[index]}`,
        );
      });
      lines.push(
        `${this.name}_bucket${formatLabels(this.labelNames, labels, 'le="+Inf"')} ${count}`,
      );
      lines.push(`${this.name}_sum${formatLabels(this.labelNames, labels)} ${sum}`);
      lines.push(`${this.name}_count${formatLabels(this.labelNames, labels)} ${count}`);
    }
    return lines.join('\n');
  }
}

export class MetricsRegistry {
  private readonly metrics: Metric[] = [];

  register<T extends Metric>(metric: T): T {
    this.metrics.push(metric);
    return metric;
  }

  /** Adds the process gauges every Berth process exposes. */
  registerProcessMetrics(): void {
    this.register(
      new Gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () =>
        process.memoryUsage.rss(),
      ),
    );
    this.register(
      new Gauge(
        'process_cpu_seconds_total',
        'Total user and system CPU time spent in seconds.',
        () => {
          const usage = process.cpuUsage();
          return (usage.user + usage.system) / 1e6;
        },
      ),
    );
    const started = Date.now() / 1000;
    this.register(
      new Gauge(
        'process_start_time_seconds',
        'Start time of the process since unix epoch in seconds.',
        () => started,
      ),
    );
  }

  render(): string {
    return `${this.metrics.map((metric) => metric.render()).join('\n')}\n`;
  }
}
