/**
 * Pull throughput through `berth node-proxy` against a direct pull from `berth registry`, in the
 * same run, on the same machine: the registry serves HTTPS with token auth (as in a cluster), the
 * proxy listens on loopback and verifies the registry's certificate. Each pull fetches a token,
 * the manifest and every blob, hashing them as they arrive (nothing is kept).
 *
 *   npm run bench:node-proxy            (BENCH_LAYER_MB=512, BENCH_ROUNDS=3)
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startContainerd } from '../support/containerd.ts';
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

const layerMB = Number(process.env.BENCH_LAYER_MB ?? 512);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);

async function timed(pull: () => Promise<ProtocolPull>): Promise<number> {
  const started = performance.now();
  const result = await pull();
  const seconds = (performance.now() - started) / 1000;
  if (result.manifestStatus !== 200 || [...result.blobs.values()].some((ok) => !ok))
    throw new Error('a pull failed or returned wrong bytes');
  return result.bytes / 1e6 / seconds;
}

async function main(): Promise<void> {
  const work = await temporaryDirectory('bench-node-proxy');
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
    { built: true },
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

    const results = { direct: [] as number[], cold: [] as number[], warm: [] as number[] };
    const cri = { direct: [] as number[], cold: [] as number[], warm: [] as number[] };
    await direct(); // page cache warm for everyone
    for (let round = 0; round < rounds; round += 1) {
      results.direct.push(await timed(direct));
      const proxy = await startNodeProxyProcess({
        upstream: registry.url,
        caFile: registry.caFile,
        cacheDirectory: join(work.path, `cache-${round}`),
        built: true,
      });
      const through = () => pullThrough(proxy.url, 'team-a/web', '1', credential);
      results.cold.push(await timed(through));
      results.warm.push(await timed(through));
      await proxy.stop();
    }
    // The same pulls as the kubelet makes them: containerd's CRI fetching and unpacking the
    // image, each time into a fresh containerd, so nothing is already there.
    const imageBytes = (await pullThrough(registry.url, 'team-a/web', '1', credential, registry.ca))
      .bytes;
    for (let round = 0; round < rounds; round += 1) {
      const directRoot = join(work.path, `containerd-direct-${round}`);
      await trustRegistry(directRoot, `localhost:${registry.port}`, registry.caFile);
      cri.direct.push(
        await criPull(
          directRoot,
          `localhost:${registry.port}/team-a/web:1`,
          credential,
          imageBytes,
        ),
      );
      const proxy = await startNodeProxyProcess({
        upstream: registry.url,
        caFile: registry.caFile,
        cacheDirectory: join(work.path, `cri-cache-${round}`),
        built: true,
      });
      cri.cold.push(
        await criPull(
          join(work.path, `containerd-cold-${round}`),
          `${proxy.host}/team-a/web:1`,
          credential,
          imageBytes,
        ),
      );
      cri.warm.push(
        await criPull(
          join(work.path, `containerd-warm-${round}`),
          `${proxy.host}/team-a/web:1`,
          credential,
          imageBytes,
        ),
      );
      await proxy.stop();
    }
    const best = (values: number[]) => Math.max(...values);
    const line = (name: string, values: number[], reference: number[]) =>
      `| ${name} | ${best(values).toFixed(0)} MB/s | ${values.map((v) => v.toFixed(0)).join(', ')} | ${((best(values) / best(reference)) * 100).toFixed(0)}% |`;
    process.stdout.write(
      [
        '',
        `| pull of a ${layerMB} MiB layer (token, manifest, blobs, hashed) | best | rounds | vs direct |`,
        '| --- | --- | --- | --- |',
        line('direct from the registry (HTTPS)', results.direct, results.direct),
        line('through the node proxy, cache cold', results.cold, results.direct),
        line('through the node proxy, cache warm', results.warm, results.direct),
        '',
        `| containerd CRI pull (crictl pull, fetch and unpack) | best | rounds | vs direct |`,
        '| --- | --- | --- | --- |',
        line('direct from the registry (HTTPS, CA in hosts.toml)', cri.direct, cri.direct),
        line('through the node proxy, cache cold', cri.cold, cri.direct),
        line('through the node proxy, cache warm', cri.warm, cri.direct),
        '',
      ].join('\n'),
    );
  } finally {
    await registry.stop();
    await work.remove();
  }
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
    const endpoint = `unix://${containerd.socket}`;
    const started = performance.now();
    await run(findTool('crictl') as string, [
      '--runtime-endpoint',
      endpoint,
      '--image-endpoint',
      endpoint,
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

await main();
