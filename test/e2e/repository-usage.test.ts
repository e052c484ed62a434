import { readdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { fieldManager } from '../../src/operator/render/labels.ts';
import {
  controlPlaneToolNames,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { describeWithTools, findTool } from '../support/tools.ts';

const root = resolve(fileURLToPath(new URL('../..', import.meta.url)));

interface UsageEntry {
  registry: string;
  bytes: number;
  size: string;
  quota?: string;
  retention?: {
    evaluatedAt: string;
    tags: number;
    manifests: number;
    bytes: number;
    wouldDelete: string[];
  };
}

/**
 * `berth registry` in Kubernetes mode enforces spec.quota.size of Repository objects and
 * writes each Repository's usage into status.usage under its own field manager, which the
 * operator's status applies leave alone; with gc configured, a Repository with retention also
 * gets the forecast of the next collection there.
 */
describeWithTools([...controlPlaneToolNames, 'crane'], 'repository usage in status', () => {
  let cluster: ControlPlane;
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let registry: RegistryProcess;
  let storage: string;
  let env: NodeJS.ProcessEnv;

  const usageOf = async (name: string): Promise<UsageEntry[] | undefined> => {
    const { stdout } = await cluster.kubectl([
      'get',
      'repository',
      '-n',
      'team-a',
      name,
      '-o',
      'json',
    ]);
    return (JSON.parse(stdout) as { status?: { usage?: UsageEntry[] } }).status?.usage;
  };
  /** Unique bytes linked in `repository`, read from the filesystem past the registry. */
  const linkedBytes = async (repository: string): Promise<number> => {
    const base = join(storage, 'docker/registry/v2');
    const digests = new Set<string>();
    for (const where of ['_layers', '_manifests/revisions']) {
      const directory = join(base, 'repositories', repository, where, 'sha256');
      for (const hex of await readdir(directory).catch(() => [] as string[])) digests.add(hex);
    }
    let bytes = 0;
    for (const hex of digests)
      bytes += (await stat(join(base, 'blobs/sha256', hex.slice(0, 2), hex, 'data'))).size;
    return bytes;
  };
  const crane = (...args: string[]) =>
    run(findTool('crane') as string, [...args, '--insecure'], { env, allowFailure: true });

  beforeAll(async () => {
    cluster = await startControlPlane();
    work = await temporaryDirectory('repository-usage');
    await cluster.kubectl(['apply', '--server-side', '-k', join(root, 'crds')]);
    await cluster.kubectl([
      'wait',
      '--for=condition=Established',
      'crd/repositories.berth.dev',
      '--timeout=60s',
    ]);
    await cluster.kubectl(['create', 'namespace', 'team-a']);
    for (const [name, spec] of [
      ['web', { quota: { size: '1Mi' } }],
      ['api', {}],
      ['app', { retention: { keepLast: 1 } }],
    ] as const) {
      await cluster.kubectl(['apply', '-f', '-'], {
        input: stringify({
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Repository',
          metadata: { name, namespace: 'team-a' },
          spec,
        }),
      });
    }
    storage = join(work.path, 'data');
    const config = join(work.path, 'registry.yaml');
    await writeFile(join(work.path, 'admin-password'), 'admin-secret');
    await writeFile(
      config,
      stringify({
        storage: { filesystem: { rootDirectory: storage } },
        // Scheduled (so the usage reports forecast it) but not run during the test.
        gc: { interval: '1h', gracePeriod: '1s' },
        auth: {
          adminPasswordFile: join(work.path, 'admin-password'),
          kubernetes: {
            kubeconfig: cluster.kubeconfig,
            registry: { name: 'main', namespace: 'berth-system' },
          },
        },
      }),
    );
    registry = await startBerth(storage, {
      extraArgs: ['--config', config, '--log-level', 'warn'],
    });
    env = { ...process.env, DOCKER_CONFIG: join(work.path, 'docker') };
    await run(
      findTool('crane') as string,
      ['auth', 'login', registry.host, '-u', 'admin', '-p', 'admin-secret', '--insecure'],
      { env },
    );
  }, 180_000);

  afterAll(async () => {
    await registry?.stop();
    await cluster?.stop();
    await work?.remove();
  });

  it('enforces spec.quota.size and reports usage per Registry, kept by the operator', async () => {
    const layer = await randomLayerTar(work.path, 'fits', 300 * 1024);
    expect((await crane('append', '-f', layer, '-t', `${registry.host}/team-a/web:v1`)).code).toBe(
      0,
    );
    expect((await crane('append', '-f', layer, '-t', `${registry.host}/team-a/api:v1`)).code).toBe(
      0,
    );
    const big = await randomLayerTar(work.path, 'too-big', 900 * 1024);
    const refused = await crane('append', '-f', big, '-t', `${registry.host}/team-a/web:v2`);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('quota exceeded: Repository team-a/web (path team-a/web)');

    const web = await linkedBytes('team-a/web');
    const api = await linkedBytes('team-a/api');
    await waitFor(
      async () => (await usageOf('web'))?.[0]?.bytes === web,
      60_000,
      'status.usage of team-a/web',
    );
    expect(await usageOf('web')).toEqual([
      {
        registry: 'berth-system/main',
        bytes: web,
        size: `${Math.round((web / 1024) * 10) / 10}Ki`,
        quota: '1Mi',
      },
    ]);
    await waitFor(
      async () => (await usageOf('api'))?.[0]?.bytes === api,
      60_000,
      'status.usage of team-a/api',
    );

    // The operator applies the rest of the status with its own field manager: usage stays.
    await cluster.kubectl(
      [
        'apply',
        '--server-side',
        '--subresource=status',
        `--field-manager=${fieldManager}`,
        '-f',
        '-',
      ],
      {
        input: stringify({
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Repository',
          metadata: { name: 'web', namespace: 'team-a' },
          status: { url: `${registry.host}/team-a/web`, pullNamespaces: 1 },
        }),
      },
    );
    expect((await usageOf('web'))?.[0]?.bytes).toBe(web);
  }, 240_000);

  it('forecasts in status.usage what retention removes on the next collection', async () => {
    const push = async (tag: string) => {
      const layer = await randomLayerTar(work.path, `app-${tag}`, 64 * 1024);
      const reference = `${registry.host}/team-a/app:${tag}`;
      expect((await crane('append', '-f', layer, '-t', reference)).code).toBe(0);
    };
    for (const tag of ['a', 'b', 'c']) await push(tag);
    const forecastOf = async () => (await usageOf('app'))?.[0]?.retention;
    await waitFor(
      async () => (await forecastOf())?.tags === 2,
      60_000,
      'the retention forecast of team-a/app',
    );
    const usage = (await usageOf('app'))?.[0];
    expect(usage?.retention).toEqual({
      evaluatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/),
      tags: 2,
      manifests: 2,
      bytes: expect.any(Number),
      wouldDelete: ['team-a/app:a', 'team-a/app:b'],
    });
    // a and b go with their own layers and configs; c's stay.
    expect(usage?.retention?.bytes).toBeGreaterThan(2 * 64 * 1024);
    expect(usage?.retention?.bytes).toBeLessThan(usage?.bytes ?? 0);
    // Rewritten when it changes: one more push, one more tag to go (the oldest first).
    await push('d');
    await waitFor(
      async () => (await forecastOf())?.tags === 3,
      60_000,
      'the retention forecast after one more push',
    );
    expect((await forecastOf())?.wouldDelete).toEqual([
      'team-a/app:a',
      'team-a/app:b',
      'team-a/app:c',
    ]);
    // A Repository without retention gets no forecast.
    expect((await usageOf('api'))?.[0]?.retention).toBeUndefined();
  }, 240_000);
});
