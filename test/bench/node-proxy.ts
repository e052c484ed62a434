/**
 * Pull throughput through `berth node-proxy` against a direct pull from `berth registry`, in the
 * same run, on the same machine: the registry serves HTTPS with token auth (as in a cluster), the
 * proxy listens on loopback and verifies the registry's certificate.
 *
 * Two kinds of pull: at the protocol level (token, manifest, every blob streamed and hashed,
 * nothing kept) and containerd's CRI (`crictl pull` into a fresh containerd: fetch and unpack).
 * Two CPU layouts: everything sharing both cores, and "split", the registry on core 0 and the
 * node side (client, containerd, proxy) on core 1, as in a cluster where the registry runs on
 * another machine than the pulling node.
 *
 * Every round pulls direct, then through a fresh proxy cold, then warm, so the three alternate;
 * the report gives each round and the median of the per-round ratios to the direct pull.
 *
 *   npm run bench:node-proxy            (BENCH_LAYER_MB=512, BENCH_ROUNDS=5)
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { criEndpoints, startContainerd } from '../support/containerd.ts';
import { adminPassword } from '../support/auth.ts';
import { randomLayerTar } from '../support/images.ts';
import {
  pullThrough,
  startNodeProxyProcess,
  startTlsRegistry,
  type ProtocolPull,
} from '../support/node-proxy.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { findTool } from '../support/tools.ts';
import { machineLine, pullTable, roundsFromEnvironment, type PullSeries } from './rounds.ts';

const layerMB = Number(process.env.BENCH_LAYER_MB ?? 512);
const rounds = roundsFromEnvironment(5);

type Series = PullSeries;

async function measure(layout: 'shared' | 'split'): Promise<{ protocol: Series; cri: Series }> {
  const work = await temporaryDirectory('bench-node-proxy');
  // Children inherit this process's CPU set: pinning it pins the proxy and containerd too.
  await run('taskset', ['-a', '-p', '-c', layout === 'split' ? '1' : '0,1', String(process.pid)]);
  const registry = await startTlsRegistry(
    work.path,
    {
      namespaces: { 'team-a': {}, 'team-b': {} },
      repositories: [
        {
          metadata: { name: 'web', namespace: 'team-a' },
          spec: { pull: { namespaces: ['team-b'] } },
        },
      ],
    },
    { built: true, cpus: layout === 'split' ? '0' : '0,1' },
  );
  try {
    const crane = findTool('crane');
    if (!crane) throw new Error('crane is not installed; run test/tools/install.sh');
    const env = { ...process.env, DOCKER_CONFIG: join(work.path, 'docker') };
    const target = `localhost:${registry.port}`;
    await run(crane, ['auth', 'login', target, '-u', 'admin', '-p', adminPassword], { env });
    const layer = await randomLayerTar(work.path, 'layer', layerMB * 1024 * 1024);
    await run(crane, ['append', '-f', layer, '-t', `${target}/team-a/web:1`, '--insecure'], {
      env,
    });
    const credential = { username: 'team-b', password: await registry.credential('team-b') };
    const direct = () => pullThrough(registry.url, 'team-a/web', '1', credential, registry.ca);
    const imageBytes = (await direct()).bytes; // also warms the page cache for everyone

    const protocol: Series = { direct: [], cold: [], warm: [] };
    const cri: Series = { direct: [], cold: [], warm: [] };
    for (let round = 0; round < rounds; round += 1) {
      protocol.direct.push(await timed(direct));
      const proxy = await startNodeProxyProcess({
        upstream: registry.url,
        caFile: registry.caFile,
        cacheDirectory: join(work.path, `cache-${round}`),
        built: true,
      });
      const through = () => pullThrough(proxy.url, 'team-a/web', '1', credential);
      protocol.cold.push(await timed(through));
      protocol.warm.push(await timed(through));
      await proxy.stop();
    }
    for (let round = 0; round < rounds; round += 1) {
      const directRoot = join(work.path, `containerd-direct-${round}`);
      await trustRegistry(directRoot, target, registry.caFile);
      cri.direct.push(await criPull(directRoot, `${target}/team-a/web:1`, credential, imageBytes));
      const proxy = await startNodeProxyProcess({
        upstream: registry.url,
        caFile: registry.caFile,
        cacheDirectory: join(work.path, `cri-cache-${round}`),
        built: true,
      });
      const image = `${proxy.host}/team-a/web:1`;
      const fresh = (name: string) => join(work.path, `containerd-${name}-${round}`);
      cri.cold.push(await criPull(fresh('cold'), image, credential, imageBytes));
      cri.warm.push(await criPull(fresh('warm'), image, credential, imageBytes));
      await proxy.stop();
    }
    return { protocol, cri };
  } finally {
    await registry.stop();
    await work.remove();
    await run('taskset', ['-a', '-p', '-c', '0,1', String(process.pid)]);
  }
}

async function timed(pull: () => Promise<ProtocolPull>): Promise<number> {
  const started = performance.now();
  const result = await pull();
  const seconds = (performance.now() - started) / 1000;
  if (result.manifestStatus !== 200 || [...result.blobs.values()].some((ok) => !ok))
    throw new Error('a pull failed or returned wrong bytes');
  return result.bytes / 1e6 / seconds;
}

/** containerd trusts the registry's CA for this host, as a node configured for TLS would. */
async function trustRegistry(root: string, host: string, caFile: string): Promise<void> {
  const directory = join(root, 'certs.d', host);
  await mkdir(directory, { recursive: true });
  await writeFile(
    join(directory, 'hosts.toml'),
    `server = "https://${host}"\n[host."https://${host}"]\n  ca = "${caFile}"\n`,
  );
}

/** A CRI pull into a fresh containerd under `root`; MB/s of image content. */
async function criPull(
  root: string,
  image: string,
  credential: { username: string; password: string },
  bytes: number,
): Promise<number> {
  const containerd = await startContainerd(
    { containerd: findTool('containerd') as string, ctr: findTool('ctr') as string },
    root,
  );
  try {
    const started = performance.now();
    await run(findTool('crictl') as string, [
      ...criEndpoints(containerd.socket),
      '--timeout',
      '300s',
      'pull',
      '--creds',
      `${credential.username}:${credential.password}`,
      image,
    ]);
    return bytes / 1e6 / ((performance.now() - started) / 1000);
  } finally {
    await containerd.stop();
    await rm(root, { recursive: true, force: true });
  }
}

const proxyRows = {
  direct: 'direct from the registry (HTTPS)',
  cold: 'through the node proxy, cache cold',
  warm: 'through the node proxy, cache warm',
};
const table = (title: string, series: Series): string => pullTable(title, series, proxyRows);

const machine = await machineLine();
const results = { shared: await measure('shared'), split: await measure('split') };
process.stdout.write(
  [
    '',
    `${layerMB} MiB layer, ${rounds} rounds, ${machine}.`,
    '',
    table('protocol pull, both cores shared', results.shared.protocol),
    table('containerd CRI pull, both cores shared', results.shared.cri),
    table('protocol pull, registry on core 0, node side on core 1', results.split.protocol),
    table('containerd CRI pull, registry on core 0, node side on core 1', results.split.cri),
  ].join('\n'),
);
