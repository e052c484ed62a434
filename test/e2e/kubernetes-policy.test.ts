import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { fetchToken, issueCredential } from '../support/auth.ts';
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

/**
 * `berth registry` in Kubernetes mode: its policy comes from Repository objects and Namespace
 * labels by watch, through the same compiler as the standalone file. Grants and revocations take
 * effect within a second.
 */
describeWithTools([...controlPlaneToolNames, 'crane'], 'registry policy from the cluster', () => {
  let cluster: ControlPlane;
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let registry: RegistryProcess;
  const credentials: Record<string, string> = {};

  const manifestStatus = async (namespace: string): Promise<number> => {
    const token = (
      await fetchToken(
        registry,
        { username: namespace, password: credentials[namespace] as string },
        ['repository:team-a/web:pull'],
      )
    ).token as string;
    return (
      await fetch(`${registry.url}/v2/team-a/web/manifests/v1`, {
        headers: { Authorization: `Bearer ${token}` },
      })
    ).status;
  };

  beforeAll(async () => {
    cluster = await startControlPlane();
    work = await temporaryDirectory('kubernetes-policy');
    await cluster.kubectl(['apply', '--server-side', '-k', join(root, 'crds')]);
    await cluster.kubectl([
      'wait',
      '--for=condition=Established',
      'crd/repositories.berth.dev',
      '--timeout=60s',
    ]);
    for (const namespace of ['team-a', 'team-b', 'team-c'])
      await cluster.kubectl(['create', 'namespace', namespace]);
    await cluster.kubectl(['label', 'namespace', 'team-b', 'env=prod']);
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Repository',
        metadata: { name: 'web', namespace: 'team-a' },
        spec: { pull: { namespaceSelector: { matchLabels: { env: 'prod' } } } },
      }),
    });
    const storage = join(work.path, 'data');
    const config = join(work.path, 'registry.yaml');
    await writeFile(join(work.path, 'admin-password'), 'admin-secret');
    await writeFile(
      config,
      stringify({
        storage: { filesystem: { rootDirectory: storage } },
        auth: {
          adminPasswordFile: join(work.path, 'admin-password'),
          kubernetes: { kubeconfig: cluster.kubeconfig },
        },
      }),
    );
    registry = await startBerth(storage, {
      extraArgs: ['--config', config, '--log-level', 'warn'],
    });
    for (const namespace of ['team-a', 'team-b', 'team-c']) {
      credentials[namespace] = await issueCredential(storage, namespace);
    }
    const crane = findTool('crane') as string;
    const env = { ...process.env, DOCKER_CONFIG: join(work.path, 'docker') };
    await run(
      crane,
      [
        'auth',
        'login',
        registry.host,
        '-u',
        'team-a',
        '-p',
        credentials['team-a'] as string,
        '--insecure',
      ],
      { env },
    );
    await run(
      crane,
      [
        'append',
        '--insecure',
        '-f',
        await randomLayerTar(work.path, 'layer', 64 * 1024),
        '-t',
        `${registry.host}/team-a/web:v1`,
      ],
      { env },
    );
  });

  afterAll(async () => {
    await registry?.stop();
    await cluster?.stop();
    await work?.remove();
  });

  it('lets the owner and the selected namespaces pull, and no one else', async () => {
    expect(await manifestStatus('team-a')).toBe(200);
    expect(await manifestStatus('team-b')).toBe(200);
    expect(await manifestStatus('team-c')).toBe(403);
  });

  it('follows namespace labels within a second, both ways', async () => {
    await cluster.kubectl(['label', 'namespace', 'team-c', 'env=prod']);
    const granted = Date.now();
    await waitFor(
      async () => (await manifestStatus('team-c')) === 200,
      1000,
      'team-c to be granted',
    );
    expect(Date.now() - granted).toBeLessThan(1000);

    const token = (
      await fetchToken(
        registry,
        { username: 'team-b', password: credentials['team-b'] as string },
        ['repository:team-a/web:pull'],
      )
    ).token as string;
    await cluster.kubectl(['label', 'namespace', 'team-b', 'env-']);
    const revoked = Date.now();
    await waitFor(
      async () =>
        (
          await fetch(`${registry.url}/v2/team-a/web/manifests/v1`, {
            headers: { Authorization: `Bearer ${token}` },
          })
        ).status === 403,
      1000,
      'team-b to be refused with its unexpired token',
    );
    expect(Date.now() - revoked).toBeLessThan(1000);
  });

  it('takes every grant away with the Repository, and refuses a Repository claiming another tenant’s path', async () => {
    await cluster.kubectl(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'berth.dev/v1alpha1',
        kind: 'Repository',
        metadata: { name: 'steal', namespace: 'team-c' },
        spec: { path: 'team-a/web', pull: { namespaces: ['team-c'] } },
      }),
    });
    await cluster.kubectl(['delete', 'repository', 'web', '-n', 'team-a']);
    await waitFor(
      async () => (await manifestStatus('team-a')) === 403,
      1000,
      'the owner to lose access',
    );
    expect(await manifestStatus('team-c')).toBe(403);
  });
});
