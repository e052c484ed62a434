import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { adminPassword } from '../support/auth.ts';
import { randomLayerTar } from '../support/images.ts';
import {
  hashBlob,
  pullThrough,
  requestText,
  startNodeProxyProcess,
  startTlsRegistry,
  tokenFor,
  type NodeProxyProcess,
  type TlsRegistry,
} from '../support/node-proxy.ts';
import { rawRequest } from '../support/http.ts';
import { freePort, run, temporaryDirectory, waitFor } from '../support/processes.ts';
import { describeWithTools, findTool } from '../support/tools.ts';

const policy = {
  namespaces: { 'team-a': {}, 'team-b': {}, 'team-c': {} },
  repositories: [
    {
      metadata: { name: 'web', namespace: 'team-a' },
      spec: { visibility: 'Private', pull: { namespaces: ['team-b'] } },
    },
  ],
};

/**
 * `berth node-proxy` in front of `berth registry` over verified TLS with token auth: real crane
 * pulls, twenty concurrent protocol-level pulls of a 200 MB image, and the cache's guarantees.
 */
describeWithTools(['crane'], 'the node proxy', () => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let registry: TlsRegistry;
  const proxies: NodeProxyProcess[] = [];
  let teamB: { username: string; password: string };
  let layerDigest: string;

  const proxy = async (name: string, cacheSize = '2Gi'): Promise<NodeProxyProcess> => {
    const started = await startNodeProxyProcess({
      upstream: registry.url,
      caFile: registry.caFile,
      cacheDirectory: join(work.path, name),
      cacheSize,
    });
    proxies.push(started);
    return started;
  };
  const blobGets = () => registry.requests('blob', 'GET', '200');

  beforeAll(async () => {
    work = await temporaryDirectory('node-proxy');
    registry = await startTlsRegistry(work.path, policy);
    teamB = { username: 'team-b', password: await registry.credential('team-b') };
    const crane = findTool('crane') as string;
    const env = { ...process.env, DOCKER_CONFIG: join(work.path, 'docker') };
    await run(
      crane,
      ['auth', 'login', `localhost:${registry.port}`, '-u', 'admin', '-p', adminPassword],
      { env },
    );
    const layer = await randomLayerTar(work.path, 'layer', 200 * 1024 * 1024);
    await run(
      crane,
      ['append', '-f', layer, '-t', `localhost:${registry.port}/team-a/web:1`, '--insecure'],
      { env },
    );
    const manifest = JSON.parse(
      (
        await run(crane, ['manifest', `localhost:${registry.port}/team-a/web:1`, '--insecure'], {
          env,
        })
      ).stdout,
    ) as { layers: { digest: string }[] };
    layerDigest = (manifest.layers[0] as { digest: string }).digest;
  });

  afterAll(async () => {
    for (const started of proxies) await started.stop();
    await registry?.stop();
    await work?.remove();
  });

  it('lets crane pull through it with a namespace credential, and refuses without one', async () => {
    const node = await proxy('crane-cache');
    const crane = findTool('crane') as string;
    const env = { ...process.env, DOCKER_CONFIG: join(work.path, 'docker-team-b') };
    // localhost is plain HTTP for crane, as for containerd: no TLS settings on the client.
    await run(crane, ['auth', 'login', node.host, '-u', teamB.username, '-p', teamB.password], {
      env,
    });
    const pulled = await run(
      crane,
      ['pull', `${node.host}/team-a/web:1`, join(work.path, 'web.tar')],
      {
        env,
      },
    );
    expect(pulled.code).toBe(0);
    const digest = (await run(crane, ['digest', `${node.host}/team-a/web:1`], { env })).stdout;
    expect(digest.trim()).toMatch(/^sha256:[a-f0-9]{64}$/);

    const anonymous = await run(crane, ['manifest', `${node.host}/team-a/web:1`], {
      env: { ...process.env, DOCKER_CONFIG: join(work.path, 'nobody') },
      allowFailure: true,
    });
    expect(anonymous.code).not.toBe(0);
    expect(anonymous.stderr).toMatch(/UNAUTHORIZED|DENIED|401|403/);
  });

  it('fetches each blob once for twenty parallel pulls of a 200 MB image', async () => {
    const node = await proxy('parallel-cache');
    const before = await blobGets();
    const pulls = await Promise.all(
      Array.from({ length: 20 }, () => pullThrough(node.url, 'team-a/web', '1', teamB)),
    );
    for (const pull of pulls) {
      expect(pull.manifestStatus).toBe(200);
      expect([...pull.blobs.values()]).toEqual([true, true]);
    }
    // Config and layer: two blobs, each fetched from the registry exactly once.
    expect((await blobGets()) - before).toBe(2);
    expect(await node.metric('berth_node_proxy_upstream_blob_fetches_total')).toBe(2);
    process.stdout.write(
      `node proxy: 20 parallel pulls of ${(pulls[0]?.bytes ?? 0) / 1e6} MB, ${(await blobGets()) - before} blob GETs upstream\n`,
    );
  });

  it('never serves a cached private blob to a request the registry refuses', async () => {
    const node = await proxy('refusal-cache');
    expect((await pullThrough(node.url, 'team-a/web', '1', teamB)).blobs.get(layerDigest)).toBe(
      true,
    );
    const url = `${node.url}/v2/team-a/web/blobs/${layerDigest}`;
    const anonymous = await hashBlob(url, {});
    expect(anonymous.status).toBe(401);
    expect(anonymous.bytes).toBeLessThan(1024);

    const teamC = { username: 'team-c', password: await registry.credential('team-c') };
    const token = await tokenFor(node.url, 'team-a/web', teamC);
    const refused = await hashBlob(url, { Authorization: `Bearer ${token}` });
    expect([401, 403]).toContain(refused.status);
    expect(refused.bytes).toBeLessThan(1024);

    // A token for another repository does not open this one's blobs either.
    const forged = await hashBlob(url, { Authorization: 'Bearer not-a-token' });
    expect(forged.status).toBe(401);
    expect(await node.metric('berth_node_proxy_blob_requests_total', 'outcome="denied"')).toBe(3);
  });

  it('serves a blob GET that carries containerd’s ?ns= from its cache, checked by the registry with the query', async () => {
    const node = await proxy('ns-cache');
    expect((await pullThrough(node.url, 'team-a/web', '1', teamB)).blobs.get(layerDigest)).toBe(
      true,
    );
    const hits = await node.metric('berth_node_proxy_blob_requests_total', 'outcome="hit"');
    const before = await blobGets();
    const token = await tokenFor(node.url, 'team-a/web', teamB);
    const url = `${node.url}/v2/team-a/web/blobs/${layerDigest}?ns=registry.example`;
    const served = await hashBlob(url, { Authorization: `Bearer ${token}` });
    expect(served.status).toBe(200);
    expect(served.digest).toBe(layerDigest);
    expect(await node.metric('berth_node_proxy_blob_requests_total', 'outcome="hit"')).toBe(
      hits + 1,
    );
    expect(await blobGets()).toBe(before);
  });

  it('drops a corrupt cache entry and fetches it again', async () => {
    const node = await proxy('corrupt-cache');
    const token = await tokenFor(node.url, 'team-a/web', teamB);
    const headers = { Authorization: `Bearer ${token}` };
    const url = `${node.url}/v2/team-a/web/blobs/${layerDigest}`;
    expect((await hashBlob(url, headers)).digest).toBe(layerDigest);

    // The client has its bytes a moment before the entry is renamed into place.
    await waitFor(
      async () =>
        (await readdir(join(work.path, 'corrupt-cache', 'sha256'))).includes(
          layerDigest.slice('sha256:'.length),
        ),
      5_000,
      'the cache entry',
    );
    const file = await open(
      join(work.path, 'corrupt-cache', 'sha256', layerDigest.slice('sha256:'.length)),
      'r+',
    );
    await file.write(Buffer.from('corrupted'), 0, 9, 4096);
    await file.close();

    const before = await blobGets();
    const cut = await hashBlob(url, headers);
    // The bad copy is cut short (status 0) or, if checked first, replaced: never a wrong digest.
    expect(cut.digest === layerDigest || cut.status === 0).toBe(true);
    expect(await node.metric('berth_node_proxy_cache_corrupt_total')).toBe(1);
    const again = await hashBlob(url, headers);
    expect(again).toMatchObject({ status: 200, digest: layerDigest });
    expect((await blobGets()) - before).toBe(1);
  });

  it('keeps serving across a registry restart', async () => {
    const node = await proxy('restart-cache');
    expect((await pullThrough(node.url, 'team-a/web', '1', teamB)).manifestStatus).toBe(200);
    await registry.restart();
    const after = await pullThrough(node.url, 'team-a/web', '1', teamB);
    expect(after.manifestStatus).toBe(200);
    expect([...after.blobs.values()]).toEqual([true, true]);
  });

  it('answers what it cannot forward in the protocol’s form, and never leaves the registry', async () => {
    const node = await proxy('errors-cache');
    // A request target that would name another host is refused, not forwarded.
    const escape = await rawRequest(
      node.host.replace('localhost', '127.0.0.1'),
      'GET',
      '//example.com/v2/',
    );
    expect(escape.status).toBe(400);

    // The registry unreachable: a 502 with OCI error JSON, at once, not a hanging pull.
    const dead = await startNodeProxyProcess({
      upstream: `https://localhost:${await freePort()}`,
      caFile: registry.caFile,
      cacheDirectory: join(work.path, 'dead-cache'),
    });
    proxies.push(dead);
    const answer = await requestText(`${dead.url}/v2/team-a/web/blobs/${layerDigest}`, {});
    expect(answer.status).toBe(502);
    expect(JSON.parse(answer.body)).toMatchObject({ errors: [{ code: 'UNAVAILABLE' }] });
  });

  it('evicts least recently used blobs to stay within its size', async () => {
    const node = await proxy('small-cache', '100Mi');
    const pull = await pullThrough(node.url, 'team-a/web', '1', teamB);
    // The 200 MB layer is larger than the whole cache: served, not kept.
    expect(pull.blobs.get(layerDigest)).toBe(true);
    expect(await node.metric('berth_node_proxy_cache_bytes')).toBeLessThanOrEqual(
      100 * 1024 * 1024,
    );
  });
});
