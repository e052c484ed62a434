import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import {
  controlPlaneToolNames,
  startLocalControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const chart = join(root, 'deploy', 'helm', 'berth');
const namespace = 'berth-system';

type KubeObject = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
};

/** The labels Helm adds to every object, which deploy/ does not have. */
const helmLabels = {
  'helm.sh/chart': 'berth-0.1.0',
  'app.kubernetes.io/managed-by': 'Helm',
  'app.kubernetes.io/version': '0.1.0',
  'app.kubernetes.io/instance': 'berth',
};

function parseObjects(text: string): KubeObject[] {
  return parseAllDocuments(text)
    .map((document) => document.toJS() as KubeObject | null)
    .filter((object): object is KubeObject => object !== null);
}

const keyOf = (object: KubeObject): string =>
  `${object.kind} ${object.metadata.namespace ?? ''}/${object.metadata.name}`;

function byKey(objects: KubeObject[]): Map<string, KubeObject> {
  const map = new Map<string, KubeObject>();
  for (const object of objects) {
    expect(map.has(keyOf(object))).toBe(false);
    map.set(keyOf(object), object);
  }
  return map;
}

function find(objects: KubeObject[], kind: string, name: string): KubeObject {
  const object = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!object) throw new Error(`no ${kind} ${name} among ${objects.map(keyOf).join(', ')}`);
  return object;
}

/** Removes Helm's labels from an object's and its pod template's metadata, checking their values. */
function withoutHelmLabels(object: KubeObject): KubeObject {
  const copy = structuredClone(object);
  const strip = (metadata: { labels?: Record<string, string> } | undefined) => {
    if (!metadata?.labels) return;
    for (const [label, value] of Object.entries(helmLabels)) {
      expect([keyOf(object), label, metadata.labels[label]]).toEqual([keyOf(object), label, value]);
      delete metadata.labels[label];
    }
  };
  strip(copy.metadata);
  const template = (copy.spec as { template?: { metadata?: { labels?: Record<string, string> } } })
    ?.template;
  strip(template?.metadata);
  return copy;
}

type Deployment = KubeObject & {
  spec: {
    replicas: number;
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        nodeSelector?: Record<string, string>;
        tolerations?: unknown[];
        affinity?: unknown;
        securityContext?: unknown;
        containers: {
          image: string;
          imagePullPolicy?: string;
          args: string[];
          resources: unknown;
          securityContext: unknown;
          ports: { containerPort: number }[];
        }[];
      };
    };
  };
};

describeWithTools(['helm', 'kubectl'], 'Helm chart deploy/helm/berth', (tools) => {
  const helm = (args: string[], allowFailure = false) =>
    run(tools.helm as string, args, { allowFailure, timeoutMs: 120_000 });
  let directory: { path: string; remove: () => Promise<void> };

  /** `helm template` of the chart as release berth in berth-system, with these values. */
  async function render(values: Record<string, unknown> = {}): Promise<KubeObject[]> {
    const file = join(directory.path, `values-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, stringify(values));
    const result = await helm(['template', 'berth', chart, '-n', namespace, '-f', file]);
    return parseObjects(result.stdout);
  }

  async function renderFails(values: Record<string, unknown>): Promise<string> {
    const file = join(directory.path, `values-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, stringify(values));
    const result = await helm(['template', 'berth', chart, '-n', namespace, '-f', file], true);
    expect(result.code).not.toBe(0);
    return result.stderr;
  }

  const operator = (objects: KubeObject[]) =>
    find(objects, 'Deployment', 'berth-operator') as Deployment;
  const container = (objects: KubeObject[]) => {
    const first = operator(objects).spec.template.spec.containers[0];
    if (!first) throw new Error('no container');
    return first;
  };

  beforeAll(async () => {
    directory = await temporaryDirectory('helm');
  });
  afterAll(async () => {
    await directory?.remove();
  });

  it('passes helm lint --strict', async () => {
    const result = await helm(['lint', '--strict', chart]);
    expect(result.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it('renders, with default values, what kubectl kustomize deploy/ renders, object for object', async () => {
    const kustomize = await run(tools.kubectl as string, ['kustomize', join(root, 'deploy')]);
    const expected = byKey(parseObjects(kustomize.stdout));
    // The CRDs come from crds/ (the kustomize base includes them), so compare with them too.
    for (const file of ['registries.berth.dev.yaml', 'repositories.berth.dev.yaml']) {
      const [crd] = parseObjects(await readFile(join(root, 'crds', file), 'utf8'));
      expect(expected.get(keyOf(crd as KubeObject))).toEqual(crd);
    }
    const namespaceKey = `Namespace /${namespace}`;
    const expectedNamespace = expected.get(namespaceKey);
    expect(expectedNamespace).toBeDefined();
    expected.delete(namespaceKey);

    const rendered = byKey((await render()).map(withoutHelmLabels));
    // crds.keep is on by default (cert-manager's convention): the CRDs carry Helm's keep policy.
    for (const object of rendered.values()) {
      if (object.kind !== 'CustomResourceDefinition') continue;
      expect(object.metadata.annotations).toEqual({ 'helm.sh/resource-policy': 'keep' });
      delete object.metadata.annotations;
    }
    expect([...rendered.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [key, object] of expected) expect([key, rendered.get(key)]).toEqual([key, object]);

    // The Namespace is the release's (helm install -n berth-system --create-namespace) unless
    // namespace.create asks for it; then it is deploy/namespace.yaml's, kept on uninstall.
    const withNamespace = (await render({ namespace: { create: true, name: namespace } })).map(
      withoutHelmLabels,
    );
    const created = find(withNamespace, 'Namespace', namespace);
    expect(created.metadata.annotations).toEqual({ 'helm.sh/resource-policy': 'keep' });
    delete created.metadata.annotations;
    expect(created).toEqual(expectedNamespace);
  });

  it('refuses a values typo through values.schema.json', async () => {
    expect(await renderFails({ replica: 3 })).toMatch(/additional properties 'replica'/);
    expect(await renderFails({ image: { tg: 'v2' } })).toMatch(/additional properties 'tg'/);
    expect(await renderFails({ crds: { keepp: false } })).toMatch(/additional properties 'keepp'/);
    expect(await renderFails({ leaderElection: { leaseDuration: '15' } })).toMatch(/leaseDuration/);
    expect(await renderFails({ image: { pullPolicy: 'Sometimes' } })).toMatch(/pullPolicy/);
  });

  it('puts changed values where they act', async () => {
    const resources = { requests: { cpu: '200m', memory: '300Mi' }, limits: { memory: '1Gi' } };
    const tolerations = [
      { key: 'dedicated', operator: 'Equal', value: 'infra', effect: 'NoSchedule' },
    ];
    const affinity = {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [
            { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] },
          ],
        },
      },
    };
    const objects = await render({
      replicas: 3,
      image: { repository: 'registry.example/berth', tag: '0.2.0', pullPolicy: 'Always' },
      resources,
      nodeSelector: { 'node-role.kubernetes.io/infra': '' },
      tolerations,
      affinity,
      leaderElection: { leaseDuration: '30s' },
      metrics: { port: 9090 },
    });
    const deployment = operator(objects);
    expect(deployment.spec.replicas).toBe(3);
    const pod = deployment.spec.template.spec;
    expect(pod.nodeSelector).toEqual({ 'node-role.kubernetes.io/infra': '' });
    expect(pod.tolerations).toEqual(tolerations);
    expect(pod.affinity).toEqual(affinity);
    const main = container(objects);
    expect(main.image).toBe('registry.example/berth:0.2.0');
    expect(main.imagePullPolicy).toBe('Always');
    expect(main.resources).toEqual(resources);
    expect(main.args).toEqual([
      'operator',
      '--metrics-listen',
      '0.0.0.0:9090',
      '--lease-duration',
      '30s',
    ]);
    expect(main.ports).toEqual([{ name: 'metrics', containerPort: 9090 }]);
    find(objects, 'Role', 'berth-operator-leader-election');
  });

  it('turns leader election off, with its Role, and refuses it with more than one replica', async () => {
    const objects = await render({ replicas: 1, leaderElection: { enabled: false } });
    expect(container(objects).args).toEqual([
      'operator',
      '--metrics-listen',
      '0.0.0.0:8080',
      '--no-leader-elect',
    ]);
    expect(objects.filter((o) => o.metadata.name === 'berth-operator-leader-election')).toEqual([]);
    find(objects, 'Role', 'berth-operator-own-pod');
    expect(await renderFails({ leaderElection: { enabled: false } })).toMatch(/replicas: 1/);
  });

  it('renders a ServiceMonitor and the Service it selects, only when asked', async () => {
    const defaults = await render();
    expect(defaults.filter((o) => ['Service', 'ServiceMonitor'].includes(o.kind))).toEqual([]);
    const objects = await render({
      metrics: {
        port: 9090,
        serviceMonitor: { enabled: true, labels: { release: 'kps' }, interval: '30s' },
      },
    });
    const monitor = find(objects, 'ServiceMonitor', 'berth-operator') as KubeObject & {
      spec: {
        namespaceSelector: { matchNames: string[] };
        selector: { matchLabels: Record<string, string> };
        endpoints: { port: string; path: string; interval: string }[];
      };
    };
    expect(monitor.metadata.namespace).toBe(namespace);
    expect(monitor.metadata.labels?.release).toBe('kps');
    expect(monitor.spec.namespaceSelector.matchNames).toEqual([namespace]);
    expect(monitor.spec.endpoints).toEqual([
      { port: 'metrics', path: '/metrics', interval: '30s' },
    ]);
    const service = find(objects, 'Service', 'berth-operator-metrics') as KubeObject & {
      spec: { selector: Record<string, string>; ports: { name: string; port: number }[] };
    };
    // The monitor selects the Service, the Service the operator's pods, on the metrics port.
    for (const [label, value] of Object.entries(monitor.spec.selector.matchLabels))
      expect(service.metadata.labels?.[label]).toBe(value);
    const podLabels = operator(objects).spec.template.metadata.labels;
    for (const [label, value] of Object.entries(service.spec.selector))
      expect(podLabels[label]).toBe(value);
    expect(service.spec.ports).toEqual([{ name: 'metrics', port: 9090, targetPort: 'metrics' }]);
  });

  it('alerts in its PrometheusRule only on metrics the operator exports', async () => {
    expect((await render()).filter((o) => o.kind === 'PrometheusRule')).toEqual([]);
    const objects = await render({ metrics: { prometheusRule: { enabled: true } } });
    const rule = find(objects, 'PrometheusRule', 'berth-operator') as KubeObject & {
      spec: { groups: { rules: { alert: string; expr: string }[] }[] };
    };
    const source = [
      await readFile(join(root, 'src', 'operator', 'metrics.ts'), 'utf8'),
      await readFile(join(root, 'src', 'operator', 'operator.ts'), 'utf8'),
    ].join('\n');
    /** Whether the operator's source registers this metric (the condition gauges by template). */
    const exported = (name: string): boolean => {
      const condition = /^berth_operator_registry_(ready|degraded)$/.exec(name);
      if (condition) {
        const type = (condition[1] as string).replace(/^./, (c) => c.toUpperCase());
        return (
          source.includes('`berth_operator_registry_${type.toLowerCase()}`') &&
          source.includes(`conditionGauge('${type}')`)
        );
      }
      return source.includes(`'${name.replace(/_(bucket|sum|count)$/, '')}'`);
    };
    const rules = rule.spec.groups.flatMap((group) => group.rules);
    expect(rules.length).toBeGreaterThanOrEqual(4);
    for (const { alert, expr } of rules) {
      const names = expr.match(/\bberth_[a-z_]+/g) ?? [];
      expect([alert, names.length > 0]).toEqual([alert, true]);
      for (const name of names) expect([alert, name, exported(name)]).toEqual([alert, name, true]);
    }
    expect(exported('berth_operator_no_such_metric')).toBe(false);
  });

  it('keeps the CRDs on uninstall only with crds.keep, and leaves them out with crds.enabled: false', async () => {
    const crds = (objects: KubeObject[]) =>
      objects.filter((o) => o.kind === 'CustomResourceDefinition');
    const kept = crds(await render({ crds: { keep: true } }));
    expect(kept.map((crd) => crd.metadata.name).sort()).toEqual([
      'registries.berth.dev',
      'repositories.berth.dev',
    ]);
    for (const crd of kept)
      expect(crd.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
    const notKept = crds(await render({ crds: { keep: false } }));
    expect(notKept).toHaveLength(2);
    for (const crd of notKept) expect(crd.metadata.annotations).toBeUndefined();
    expect(crds(await render({ crds: { enabled: false } }))).toEqual([]);
  });
});

/** The chart on a real kube-apiserver: installed, upgraded and uninstalled by helm. */
describeWithTools(
  ['helm', ...controlPlaneToolNames],
  'Helm chart on a real API server',
  (tools) => {
    let cluster: ControlPlane;
    const helm = (args: string[]) =>
      run(tools.helm as string, [...args, '--kubeconfig', cluster.kubeconfig], {
        timeoutMs: 180_000,
      });
    const get = async (args: string[]) =>
      JSON.parse((await cluster.kubectl(['get', ...args, '-o', 'json'])).stdout) as {
        items?: KubeObject[];
        spec?: { replicas?: number };
        metadata: KubeObject['metadata'];
      };

    beforeAll(async () => {
      cluster = await startLocalControlPlane();
    });
    afterAll(async () => {
      await cluster?.stop();
    });

    it('installs with default values, upgrades, and leaves the kept CRDs on uninstall', async () => {
      await helm(['install', 'berth', chart, '-n', namespace, '--create-namespace']);
      for (const crd of ['registries.berth.dev', 'repositories.berth.dev'])
        await cluster.kubectl([
          'wait',
          '--for=condition=Established',
          `crd/${crd}`,
          '--timeout=60s',
        ]);
      const deployment = await get(['deployment', 'berth-operator', '-n', namespace]);
      expect(deployment.spec?.replicas).toBe(2);
      expect(deployment.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('Helm');
      for (const object of [
        ['serviceaccount', 'berth-operator', '-n', namespace],
        ['role', 'berth-operator-leader-election', '-n', namespace],
        ['rolebinding', 'berth-operator-own-pod', '-n', namespace],
        ['clusterrole', 'berth-operator'],
        ['clusterrole', 'berth-registry'],
        ['clusterrolebinding', 'berth-registries'],
      ])
        expect((await get(object)).metadata.name).toBe(object[1]);
      // The operator's ServiceAccount may do what deploy/rbac.yaml grants, and no more (the
      // authorizer's cache may lag the bindings by a moment).
      const can = async (...args: string[]) =>
        (
          await cluster.kubectl(
            ['auth', 'can-i', ...args, `--as=system:serviceaccount:${namespace}:berth-operator`],
            { allowFailure: true },
          )
        ).stdout.trim();
      await waitFor(
        async () => (await can('patch', 'registries.berth.dev', '--subresource=status')) === 'yes',
        30_000,
        'the operator may patch Registry status',
      );
      expect(await can('get', 'leases.coordination.k8s.io', '-n', namespace)).toBe('yes');
      expect(await can('get', 'pods', '-n', namespace)).toBe('yes');
      expect(await can('update', 'registries.berth.dev')).toBe('no');
      expect(await can('create', 'clusterrolebindings')).toBe('no');
      expect(await can('get', 'pods', '-n', 'default')).toBe('no');

      await helm(['upgrade', 'berth', chart, '-n', namespace, '--set', 'replicas=1']);
      expect((await get(['deployment', 'berth-operator', '-n', namespace])).spec?.replicas).toBe(1);

      await helm(['uninstall', 'berth', '-n', namespace]);
      const left = await cluster.kubectl(['get', 'deployment', 'berth-operator', '-n', namespace], {
        allowFailure: true,
      });
      expect(left.stderr).toMatch(/NotFound/);
      const crds = await get(['crd', '-l', 'app.kubernetes.io/part-of=berth']);
      expect((crds.items ?? []).map((crd) => crd.metadata.name).sort()).toEqual([
        'registries.berth.dev',
        'repositories.berth.dev',
      ]);
    });
  },
);
