/**
 * Manifest GET requests/s with token authentication on, beside the same registry with it off,
 * in one run (wrk, 2 threads, 32 connections; three alternating rounds, best of each). Target:
 * auth on at least 80% of auth off.
 *
 *   npm run bench:auth
 */
import { readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { fetchToken, startAuthRegistry, adminPassword } from '../support/auth.ts';
import { randomLayerTar } from '../support/images.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { findTool } from '../support/tools.ts';
import { manifestLoad } from './registry-clients.ts';

const seconds = Number(process.env.BENCH_MANIFEST_SECONDS ?? 10);

async function load(
  registry: RegistryProcess,
  token: string | undefined,
): Promise<{ rps: number; p99: string }> {
  const { rps, p99ms } = await manifestLoad(
    registry.url,
    '/v2/team-a/app/manifests/v1',
    seconds,
    token ? [`Authorization: Bearer ${token}`] : [],
  );
  return { rps, p99: `${p99ms.toFixed(2)}ms` };
}

async function main(): Promise<void> {
  const crane = findTool('crane');
  if (!crane || !findTool('wrk'))
    throw new Error('crane and wrk are needed: run test/tools/install.sh');
  const work = await temporaryDirectory('bench-auth');
  const layer = await randomLayerTar(work.path, 'layer', 64 * 1024);
  const open = await startBerth(`${work.path}/open`, {
    extraArgs: ['--log-level', 'warn'],
    built: true,
  });
  const secured = await startAuthRegistry(
    {
      namespaces: { 'team-a': {} },
      repositories: [{ metadata: { name: 'app', namespace: 'team-a' }, spec: {} }],
    },
    [],
    { built: true },
  );
  try {
    await run(crane, ['append', '--insecure', '-f', layer, '-t', `${open.host}/team-a/app:v1`]);
    const credentials = { username: 'admin', password: adminPassword };
    const push = await fetchToken(secured.registry, credentials, [
      'repository:team-a/app:pull,push',
    ]);
    const dockerConfig = `${work.path}/docker`;
    await run(
      crane,
      ['auth', 'login', secured.registry.host, '-u', 'admin', '-p', adminPassword, '--insecure'],
      {
        env: { ...process.env, DOCKER_CONFIG: dockerConfig },
      },
    );
    await run(
      crane,
      ['append', '--insecure', '-f', layer, '-t', `${secured.registry.host}/team-a/app:v1`],
      {
        env: { ...process.env, DOCKER_CONFIG: dockerConfig },
      },
    );
    if (!push.token) throw new Error('no token');
    const namespaceToken = (
      await fetchToken(
        secured.registry,
        { username: 'team-a', password: await secured.credential('team-a') },
        ['repository:team-a/app:pull'],
      )
    ).token as string;

    // Alternate the two, three rounds each, and keep each one's best: on a shared 2-core VM a
    // single run moves by 20%, and wrk competes with the server for the cores.
    let off = { rps: 0, p99: '?' };
    let on = { rps: 0, p99: '?' };
    for (let round = 0; round < 3; round += 1) {
      const a = await load(open, undefined);
      if (a.rps > off.rps) off = a;
      const b = await load(secured.registry, namespaceToken);
      if (b.rps > on.rps) on = b;
    }
    const cpu =
      (await readFile('/proc/cpuinfo', 'utf8')).match(/model name\s*:\s*(.*)/)?.[1] ??
      'unknown CPU';
    process.stdout.write(
      [
        '',
        `${cpu}, ${cpus().length} cores, Node ${process.version}, wrk -t2 -c32 -d${seconds}s, best of 3 alternating rounds`,
        '',
        '| manifest GET by tag | requests/s | p99 |',
        '| --- | --- | --- |',
        `| auth off | ${off.rps.toFixed(0)} | ${off.p99} |`,
        `| auth on (Bearer token of a namespace) | ${on.rps.toFixed(0)} | ${on.p99} |`,
        `| on / off | ${((on.rps / off.rps) * 100).toFixed(1)}% | |`,
        '',
      ].join('\n'),
    );
  } finally {
    await open.stop();
    await secured.stop();
    await work.remove();
  }
}

await main();
