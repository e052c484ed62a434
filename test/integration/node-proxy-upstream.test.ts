import { join } from 'node:path';
import {
  requestText,
  startNodeProxyProcess,
  startTlsRegistry,
  tokenFor,
  type NodeProxyProcess,
  type TlsRegistry,
} from '../support/node-proxy.ts';
import { temporaryDirectory, waitFor } from '../support/processes.ts';

const policy = {
  namespaces: { 'team-a': {}, 'team-b': {} },
  repositories: [
    {
      metadata: { name: 'web', namespace: 'team-a' },
      spec: { visibility: 'Private', pull: { namespaces: ['team-b'] } },
    },
  ],
};

/**
 * `berth node-proxy` as the operator runs it: connecting to an address (the Service's ClusterIP;
 * here 127.0.0.1) and verifying a name, and ready only while the registry answers.
 */
describe('the node proxy and its upstream', () => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let registry: TlsRegistry;
  const proxies: NodeProxyProcess[] = [];

  const proxy = async (name: string, tlsServerName: string): Promise<NodeProxyProcess> => {
    const started = await startNodeProxyProcess({
      upstream: `https://127.0.0.1:${registry.port}`,
      tlsServerName,
      caFile: registry.caFile,
      cacheDirectory: join(work.path, name),
    });
    proxies.push(started);
    return started;
  };
  const readyz = async (started: NodeProxyProcess) => {
    const answer = await requestText(`${started.url}/readyz`, {});
    // The probe state as every Berth process answers it (src/observability/probes.ts).
    const state = JSON.parse(answer.body) as { ready: boolean; message?: string };
    return { status: answer.status, body: state.ready ? 'ok' : (state.message ?? '') };
  };

  beforeAll(async () => {
    work = await temporaryDirectory('node-proxy-upstream');
    registry = await startTlsRegistry(work.path, policy);
  });

  afterAll(async () => {
    for (const started of proxies) await started.stop();
    await registry?.stop();
    await work?.remove();
  });

  it('is ready only while the registry answers, and alive throughout', async () => {
    await registry.stop();
    const started = await proxy('readiness', 'localhost');
    // The first check runs at start; until it has failed the reason is that none ran yet.
    await waitFor(
      async () => (await readyz(started)).body.includes('cannot be reached'),
      10_000,
      'the first check',
    );
    expect(await readyz(started)).toEqual({
      status: 503,
      body: expect.stringMatching(/^the registry cannot be reached: .*ECONNREFUSED/),
    });
    expect((await requestText(`${started.url}/healthz`, {})).status).toBe(200);

    await registry.restart();
    const up = Date.now();
    // Checks run every 5 s in the background: within one interval, plus the check itself.
    await waitFor(async () => (await readyz(started)).status === 200, 8_000, 'readiness');
    process.stdout.write(`node proxy: ready ${Date.now() - up} ms after the registry\n`);
    expect(await started.metric('berth_node_proxy_upstream_up')).toBe(1);

    await registry.stop();
    await waitFor(async () => (await readyz(started)).status === 503, 8_000, 'unreadiness');
    expect((await requestText(`${started.url}/healthz`, {})).status).toBe(200);
    expect(await started.metric('berth_node_proxy_upstream_up')).toBe(0);
    await registry.restart();
  });

  it('holds a request while the registry is being replaced, instead of failing it', async () => {
    const started = await proxy('replacement', 'localhost');
    await waitFor(async () => (await readyz(started)).status === 200, 10_000, 'readiness');
    await registry.stop();
    // A pull that arrives while no registry listens (a pod being replaced): refused at first,
    // answered once the registry is back, without the client seeing an error.
    const pending = requestText(`${started.url}/v2/`, {});
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await registry.restart();
    expect((await pending).status).toBe(401);
  });

  it('verifies the server name, not the address, and sends it as Host', async () => {
    // The certificate names localhost and 127.0.0.1: the address alone would verify.
    const wrong = await proxy('wrong-name', 'berth-main.berth-system.svc');
    await waitFor(
      async () => (await readyz(wrong)).body.includes('cannot be reached'),
      10_000,
      'the first check',
    );
    expect(await readyz(wrong)).toEqual({
      status: 503,
      body: expect.stringContaining("berth-main.berth-system.svc. is not in the cert's altnames"),
    });

    const right = await proxy('right-name', 'localhost');
    await waitFor(async () => (await readyz(right)).status === 200, 10_000, 'readiness');
    // The registry names its realm after the Host it was sent; the proxy puts its own in its
    // place, so the whole token flow runs through the proxy.
    const challenge = await requestText(`${right.url}/v2/`, {});
    expect(challenge.headers['www-authenticate']).toContain(`realm="${right.url}/token"`);
    const token = await tokenFor(right.url, 'team-a/web', {
      username: 'team-b',
      password: await registry.credential('team-b'),
    });
    const tags = await requestText(`${right.url}/v2/team-a/web/tags/list`, {
      Authorization: `Bearer ${token}`,
    });
    // Authorized (nothing was pushed): the token the proxy's realm issued is the registry's own.
    expect(tags.status).toBe(404);
  });
});
