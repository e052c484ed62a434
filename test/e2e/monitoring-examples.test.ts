import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { controlPlaneToolNames } from '../support/control-plane.ts';
import {
  requestText,
  startNodeProxyProcess,
  startTlsRegistry,
  type NodeProxyProcess,
  type TlsRegistry,
} from '../support/node-proxy.ts';
import { startOperatorHarness, type OperatorHarness } from '../support/operator-harness.ts';
import { Daemon, freePort, run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const root = join(import.meta.dirname, '..', '..');
const examples = join(root, 'examples', 'monitoring');

interface Rule {
  alert: string;
  expr: string;
}
interface RuleFile {
  spec: { groups: { name: string; rules: Rule[] }[] };
}
interface Panel {
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

/** Every PromQL expression of the dashboard (its panels and template variables) and the rules. */
async function examplesExpressions(): Promise<{ where: string; expr: string }[]> {
  const dashboard = JSON.parse(
    await readFile(join(examples, 'grafana-dashboard.json'), 'utf8'),
  ) as { panels: Panel[]; templating: { list: { name: string; definition?: string }[] } };
  const rules = parse(await readFile(join(examples, 'prometheus-rules.yaml'), 'utf8')) as RuleFile;
  const panels = dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]);
  return [
    ...panels.flatMap((panel) =>
      (panel.targets ?? []).map((target) => ({ where: `panel ${panel.title}`, expr: target.expr })),
    ),
    ...dashboard.templating.list
      .filter((variable) => variable.definition)
      .map((variable) => ({ where: `variable ${variable.name}`, expr: variable.definition ?? '' })),
    ...rules.spec.groups.flatMap((group) =>
      group.rules.map((rule) => ({ where: `alert ${rule.alert}`, expr: rule.expr })),
    ),
  ];
}

/** Series names a PromQL expression reads: Berth's and the client library's process metrics. */
function referencedMetrics(expr: string): string[] {
  return [...new Set(expr.match(/\b(?:berth|process|nodejs)_[a-z0-9_]+\b/g) ?? [])];
}

/** Label names an expression groups or selects by, other than those Prometheus adds. */
function referencedLabels(expr: string): string[] {
  const targetLabels = new Set(['pod', 'instance', 'job', 'namespace', 'le', 'container']);
  const names = new Set<string>();
  for (const [, list] of expr.matchAll(/\bby \(([^)]*)\)/g))
    for (const name of (list as string).split(',')) names.add(name.trim());
  for (const [, selector] of expr.matchAll(/\{([^}]*)\}/g))
    for (const [, name] of (selector as string).matchAll(/([a-z_]+)\s*(?:=~|!=|!~|=)/g))
      names.add(name as string);
  return (
    [...names]
      .filter((name) => name && !targetLabels.has(name))
      // A label Berth exports as namespace is exported_namespace beside the target's own.
      .map((name) => name.replace(/^exported_/, ''))
  );
}

interface Exported {
  readonly labels: Set<string>;
  samples: number;
}

/** What a scrape exports: each series name (histograms as _bucket, _sum, _count), its labels and samples. */
function exportedSeries(text: string, into: Map<string, Exported>): void {
  const entry = (name: string): Exported => {
    let known = into.get(name);
    if (!known) into.set(name, (known = { labels: new Set(), samples: 0 }));
    return known;
  };
  for (const line of text.split('\n')) {
    const declared = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/.exec(line);
    if (declared) {
      const [, name, type] = declared as unknown as [string, string, string];
      const names =
        type === 'histogram' ? ['_bucket', '_sum', '_count'].map((s) => name + s) : [name];
      for (const each of names) entry(each);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (!sample) continue;
    const known = entry(sample[1] as string);
    known.samples += 1;
    for (const [, name] of (sample[2] ?? '').matchAll(/([a-zA-Z_]+)="/g))
      known.labels.add(name as string);
  }
}

/**
 * The example dashboard and alerts under examples/monitoring/ against what a running `berth
 * registry` (over TLS), `berth node-proxy` in front of it and `berth operator` on a real API
 * server export: every metric they read must be exported by one of them, every label they group
 * or select by must be on that metric's samples where it has samples, and the Helm chart's
 * PrometheusRule must be the examples' operator group.
 */
describeWithTools([...controlPlaneToolNames, 'helm'], 'the monitoring examples', (tools) => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let registry: TlsRegistry;
  let proxy: NodeProxyProcess;
  let harness: OperatorHarness;
  let operator: Daemon;
  let operatorMetrics: string;

  const scrapeAll = async (): Promise<{ process: string; text: string }[]> => [
    {
      process: 'registry',
      text: (await requestText(`${registry.url}/metrics`, {}, registry.ca)).body,
    },
    { process: 'node proxy', text: (await requestText(`${proxy.url}/metrics`, {})).body },
    { process: 'operator', text: await (await fetch(`${operatorMetrics}/metrics`)).text() },
  ];

  beforeAll(async () => {
    work = await temporaryDirectory('monitoring-examples');
    registry = await startTlsRegistry(work.path, { namespaces: { 'team-a': {} } });
    proxy = await startNodeProxyProcess({
      upstream: `https://127.0.0.1:${registry.port}`,
      tlsServerName: 'localhost',
      caFile: registry.caFile,
      cacheDirectory: join(work.path, 'cache'),
    });
    harness = await startOperatorHarness('monitoring-examples', ['team-a']);
    const port = await freePort();
    operatorMetrics = `http://127.0.0.1:${port}`;
    operator = harness.startOperator(['--metrics-listen', `127.0.0.1:${port}`]);
    await harness.apply({
      apiVersion: 'berth.dev/v1alpha1',
      kind: 'Registry',
      metadata: { name: 'main', namespace: 'berth-system' },
      spec: { nodeAccess: { mode: 'None' }, storage: { filesystem: { size: '1Gi' } } },
    });
    // Traffic, so that labelled series have samples: a request the registry answers 401, one
    // the node proxy forwards, reconciles of the Registry and its certificates made.
    await requestText(`${registry.url}/v2/`, {}, registry.ca);
    await requestText(`${proxy.url}/v2/team-a/app/blobs/sha256:${'0'.repeat(64)}`, {});
    await waitFor(
      async () => {
        const text = await (await fetch(`${operatorMetrics}/metrics`)).text();
        return (
          /^berth_operator_registry_ready\{namespace="berth-system",name="main"\} /m.test(text) &&
          /^berth_operator_certificate_expiry_timestamp_seconds\{.*key="tls\.crt"\} /m.test(text)
        );
      },
      60_000,
      `the operator to render Registry main (operator: ${operator?.output.slice(-2000)})`,
    );
  });

  afterAll(async () => {
    await operator?.stop();
    await harness?.stop();
    await proxy?.stop();
    await registry?.stop();
    await work?.remove();
  });

  it('reads only metrics and labels that the registry, the node proxy and the operator export', async () => {
    const scrapes = await scrapeAll();
    const exported = new Map<string, Exported>();
    for (const { text } of scrapes) exportedSeries(text, exported);
    const expressions = await examplesExpressions();
    const referenced = new Set(expressions.flatMap(({ expr }) => referencedMetrics(expr)));
    // The examples cover each process: requests, the node proxy, the operator, the runtime.
    expect(referenced.size).toBeGreaterThanOrEqual(30);
    for (const prefix of ['berth_registry_', 'berth_node_proxy_', 'berth_operator_', 'nodejs_'])
      expect([prefix, [...referenced].some((name) => name.startsWith(prefix))]).toEqual([
        prefix,
        true,
      ]);
    const missing = expressions.flatMap(({ where, expr }) =>
      referencedMetrics(expr)
        .filter((name) => !exported.has(name))
        .map((name) => `${where}: ${name}`),
    );
    expect(missing).toEqual([]);

    const unverified: string[] = [];
    const wrongLabels = expressions.flatMap(({ where, expr }) => {
      const metrics = referencedMetrics(expr).map((name) => exported.get(name) as Exported);
      return referencedLabels(expr).flatMap((label) => {
        if (metrics.some((metric) => metric.labels.has(label))) return [];
        // A labelled series with no sample yet (nothing was refused, no mirror is configured).
        if (metrics.some((metric) => metric.samples === 0)) {
          unverified.push(`${where}: ${label}`);
          return [];
        }
        return [`${where}: ${label}`];
      });
    });
    expect(wrongLabels).toEqual([]);
    process.stdout.write(
      `monitoring examples: ${expressions.length} expressions, ${referenced.size} metrics, all exported; labels not checked (no samples yet) in: ${unverified.join('; ') || 'none'}\n`,
    );
    // The check itself: a name nobody exports is reported.
    expect(
      referencedMetrics('rate(berth_registry_no_such_total[5m])').filter((n) => !exported.has(n)),
    ).toEqual(['berth_registry_no_such_total']);
  });

  it('exports the certificate expiries and the storage usage the alerts read, with real values', async () => {
    const [registryText, proxyText, operatorText] = (await scrapeAll()).map(({ text }) => text) as [
      string,
      string,
      string,
    ];
    const value = (text: string, pattern: RegExp): number =>
      Number(pattern.exec(text)?.[1] ?? Number.NaN);
    const now = Date.now() / 1000;
    // The node proxy's CA file (a day's validity in the test PKI).
    const ca = value(
      proxyText,
      /^berth_certificate_expiry_timestamp_seconds\{certificate="ca",file="[^"]+"\} (\S+)$/m,
    );
    expect(ca).toBeGreaterThan(now + 3_600);
    expect(ca).toBeLessThan(now + 86_400 + 60);
    // The CA and serving certificate the operator made for Registry main.
    const serving = value(
      operatorText,
      /^berth_operator_certificate_expiry_timestamp_seconds\{namespace="berth-system",secret="berth-main-tls",key="tls\.crt"\} (\S+)$/m,
    );
    expect(serving).toBeGreaterThan(now + 86_400);
    const capacity = value(registryText, /^berth_registry_storage_capacity_bytes (\d+)$/m);
    const available = value(registryText, /^berth_registry_storage_available_bytes (\d+)$/m);
    expect(capacity).toBeGreaterThan(0);
    expect(available).toBeLessThanOrEqual(capacity);
    expect(registryText).toMatch(
      /^berth_registry_http_request_duration_seconds_count\{route="base",method="GET",status="401"\} [1-9]\d*$/m,
    );
  });

  it('installs with the Helm chart the operator group of the example rules, unchanged', async () => {
    const values = join(work.path, 'values.yaml');
    await writeFile(values, 'metrics:\n  prometheusRule:\n    enabled: true\n');
    // A failure to render (the chart or its schema) fails the test with helm's output.
    const chart = await run(
      tools.helm as string,
      [
        'template',
        'berth',
        join(root, 'deploy', 'helm', 'berth'),
        '-n',
        'berth-system',
        '-f',
        values,
      ],
      { timeoutMs: 120_000 },
    );
    const rule = chart.stdout
      .split(/^---$/m)
      .map((document) => parse(document) as { kind?: string } | null)
      .find((object) => object?.kind === 'PrometheusRule') as RuleFile | undefined;
    const example = parse(
      await readFile(join(examples, 'prometheus-rules.yaml'), 'utf8'),
    ) as RuleFile;
    const group = (file: RuleFile | undefined) =>
      file?.spec.groups.find((candidate) => candidate.name === 'berth-operator');
    expect(group(example)?.rules.length).toBeGreaterThanOrEqual(5);
    expect(group(rule)).toEqual(group(example));
  });
});
