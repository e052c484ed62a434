import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Agent } from 'node:http';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { fetchToken, startAuthRegistry, type AuthRegistry } from '../support/auth.ts';
import {
  counterValue,
  exchange,
  footprint,
  inParallel,
  stalledReader,
  SteadyPuller,
  tricklingBody,
  type Footprint,
} from '../support/hostile-clients.ts';
import { Inspector } from '../support/inspector.ts';
import { freePort, temporaryDirectory, waitFor } from '../support/processes.ts';

/**
 * Issue 11's attack, rerun against a real `berth registry` in token mode on loopback: floods of
 * unique long names, stalled blob readers, bodies that never end and tokens stuffed with scopes.
 * After each, once the attackers are gone, the registry's live objects retain no more than its
 * bounded caches allow, it holds no more than 16 descriptors over what it held before, and a
 * well-behaved client pulls throughout with a p99 under a second.
 */
const policy = {
  namespaces: { 'team-a': {}, 'team-b': {} },
  repositories: [
    { metadata: { name: 'public', namespace: 'team-a' }, spec: { visibility: 'Public' } },
    {
      metadata: { name: 'open', namespace: 'team-a' },
      spec: { path: 'team-a/open/*', visibility: 'Public' },
    },
    { metadata: { name: 'web', namespace: 'team-a' }, spec: { pull: { namespaces: ['team-b'] } } },
  ],
};

/**
 * What live objects may retain over the baseline once the attackers have gone: the caches the
 * attacks fill are bounded at 44 MiB together (token verifications 16, policy decisions 8, failure
 * limiters 20) and the shared read buffers at 16 MiB. The defects this suite guards against
 * retained 600 MiB to 1 GiB.
 */
const maxRetainedGrowthMiB = 64;
/**
 * The resident set may stay above what is retained: V8 and the allocator keep some freed memory
 * to reuse (glibc keeps a fragmented arena). Bounded loosely, to catch native memory held.
 */
const maxResidentGrowthMiB = 256;
const maxExtraFds = 16;
/** How long the registry waits on a client that does not keep up (limits.clientTimeout). */
const clientTimeoutMs = 3000;

interface Measured extends Footprint {
  /** Heap and external memory live objects retain, after a full collection. */
  retainedMiB: number;
}

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('hostile clients', () => {
  let directory: { path: string; remove: () => Promise<void> };
  let auth: AuthRegistry;
  let host: string;
  let pid: number;
  let puller: SteadyPuller;
  let baseline: Measured;
  let inspector: Inspector;
  let bigBlob: string;
  let pushToken: string;
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  const figures: string[] = [];

  async function push(repository: string, blob: Buffer, token: string): Promise<void> {
    const answer = await exchange(
      agent,
      host,
      'POST',
      `/v2/${repository}/blobs/uploads/?digest=${sha256(blob)}`,
      { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' },
      blob,
    );
    expect(answer.status).toBe(201);
  }

  const slowClientsCut = async (): Promise<number> =>
    counterValue(
      (await exchange(agent, host, 'GET', '/metrics')).body.toString(),
      'berth_registry_connections_refused_total{reason="slow_client"}',
    );

  /** The footprint and what live objects retain, after a full collection. */
  async function measure(): Promise<Measured> {
    const retained = await inspector.retained();
    return { ...(await footprint(pid)), retainedMiB: retained.heapMiB + retained.externalMiB };
  }

  const describeMeasured = (what: string, after: Measured) =>
    `${what}: retained ${baseline.retainedMiB.toFixed(0)} -> ${after.retainedMiB.toFixed(0)} MiB, RSS ${baseline.rssMiB.toFixed(0)} -> ${after.rssMiB.toFixed(0)} MiB (peak so far ${after.peakMiB.toFixed(0)}), fds ${baseline.fds} -> ${after.fds}`;

  /**
   * Runs `attack`, and once the attackers have gone (and the connections the registry cut have
   * closed, within 30 s), expects what the registry retains and holds open to be back within
   * bounds of the baseline.
   */
  async function expectAttackLeavesNothing(
    what: string,
    attack: () => Promise<void>,
  ): Promise<void> {
    await attack();
    agent.destroy();
    const within = (after: Measured) =>
      after.retainedMiB <= baseline.retainedMiB + maxRetainedGrowthMiB &&
      after.fds <= baseline.fds + maxExtraFds;
    await waitFor(async () => within(await measure()), 30_000, `${what} to be gone`).catch(
      () => undefined,
    );
    const after = await measure();
    figures.push(describeMeasured(what, after));
    expect(after.retainedMiB).toBeLessThanOrEqual(baseline.retainedMiB + maxRetainedGrowthMiB);
    expect(after.fds).toBeLessThanOrEqual(baseline.fds + maxExtraFds);
    expect(after.rssMiB).toBeLessThanOrEqual(baseline.rssMiB + maxResidentGrowthMiB);
  }

  beforeAll(async () => {
    directory = await temporaryDirectory('hostile');
    const config = join(directory.path, 'registry.yaml');
    await writeFile(config, `limits: {clientTimeout: ${clientTimeoutMs}ms}\n`);
    const inspectorPort = await freePort();
    auth = await startAuthRegistry(policy, ['--config', config], {
      env: { NODE_OPTIONS: `--inspect=127.0.0.1:${inspectorPort}` },
    });
    inspector = await Inspector.attach(inspectorPort);
    host = auth.registry.host;
    pid = auth.registry.daemon.child.pid as number;
    const teamA = await auth.credential('team-a');
    const teamB = await auth.credential('team-b');
    pushToken = (
      await fetchToken(auth.registry, { username: 'team-a', password: teamA }, [
        'repository:team-a/web:pull,push',
        'repository:team-a/public:pull,push',
      ])
    ).token as string;

    const big = randomBytes(16 * 1024 * 1024);
    bigBlob = sha256(big);
    await push('team-a/public', big, pushToken);
    const layer = randomBytes(256 * 1024);
    const imageConfig = Buffer.from('{"architecture":"amd64","os":"linux"}');
    await push('team-a/web', layer, pushToken);
    await push('team-a/web', imageConfig, pushToken);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: sha256(imageConfig),
          size: imageConfig.length,
        },
        layers: [
          {
            mediaType: 'application/vnd.oci.image.layer.v1.tar',
            digest: sha256(layer),
            size: layer.length,
          },
        ],
      }),
    );
    const put = await exchange(
      agent,
      host,
      'PUT',
      '/v2/team-a/web/manifests/latest',
      {
        Authorization: `Bearer ${pushToken}`,
        'Content-Type': 'application/vnd.oci.image.manifest.v1+json',
      },
      manifest,
    );
    expect(put.status).toBe(201);

    const pullToken = (
      await fetchToken(auth.registry, { username: 'team-b', password: teamB }, [
        'repository:team-a/web:pull',
      ])
    ).token as string;
    puller = new SteadyPuller(host, 'team-a/web', sha256(layer), pullToken);
    // Every path the attacks take runs once before the baseline is read.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    agent.destroy();
    await new Promise((resolve) => setTimeout(resolve, 500));
    baseline = await measure();
  });

  afterAll(async () => {
    await puller?.stop();
    agent.destroy();
    inspector?.close();
    await auth?.stop();
    await directory?.remove();
    if (figures.length) process.stdout.write(`hostile clients:\n  ${figures.join('\n  ')}\n`);
  });

  it('60,000 requests with unique 15 KB names are refused as NAME_INVALID and leave nothing', async () => {
    const long = 'a'.repeat(15_000);
    await expectAttackLeavesNothing('60,000 unique 15 KB names', async () => {
      const statuses = new Map<number, number>();
      await inParallel(60_000, 32, async (index) => {
        const { status } = await exchange(agent, host, 'GET', `/v2/${index}${long}/tags/list`);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
      });
      expect(statuses).toEqual(new Map([[400, 60_000]]));
    });
  });

  it('500 stalled blob readers are cut after the client timeout and leave nothing', async () => {
    await expectAttackLeavesNothing('500 stalled blob readers', async () => {
      const before = await slowClientsCut();
      const readers: Socket[] = [];
      await inParallel(500, 50, async () => {
        readers.push(await stalledReader(host, `/v2/team-a/public/blobs/${bigBlob}`));
      });
      await waitFor(
        async () => (await slowClientsCut()) >= before + 500,
        30_000,
        'the registry to cut 500 stalled readers',
      );
      for (const reader of readers) reader.destroy();
    });
  });

  it('500 uploads whose 4 GiB bodies trickle are cut, and leave nothing', async () => {
    await expectAttackLeavesNothing('500 trickling 4 GiB uploads', async () => {
      const before = await slowClientsCut();
      const locations: string[] = [];
      await inParallel(500, 16, async () => {
        const started = await exchange(agent, host, 'POST', '/v2/team-a/web/blobs/uploads/', {
          Authorization: `Bearer ${pushToken}`,
        });
        locations.push(started.headers.location as string);
      });
      const uploads: Socket[] = [];
      await inParallel(500, 50, async (index) => {
        uploads.push(
          await tricklingBody(host, 'PATCH', locations[index] as string, 4 * 1024 ** 3, 1000, {
            Authorization: `Bearer ${pushToken}`,
            'Content-Type': 'application/octet-stream',
          }),
        );
      });
      await waitFor(
        async () => (await slowClientsCut()) >= before + 500,
        30_000,
        'the registry to cut 500 trickling uploads',
      );
      for (const upload of uploads) upload.destroy();
      // What was cut off is cut back: each upload is empty and can go on.
      const status = () =>
        exchange(agent, host, 'GET', locations[0] as string, {
          Authorization: `Bearer ${pushToken}`,
        });
      await waitFor(async () => (await status()).status === 204, 5000, 'the upload to be free');
      expect((await status()).headers.range).toBe('0-0');
    });
  });

  it('3,000 anonymous tokens with 64 scopes each, all presented, leave nothing', async () => {
    const names = (index: number) =>
      Array.from(
        { length: 64 },
        (_, scope) => `repository:team-a/open/${index}-${scope}-${'n'.repeat(100)}:pull`,
      );
    const tooMany = await fetchToken(auth.registry, undefined, [
      ...names(0),
      'repository:team-a/public:pull',
    ]);
    expect(tooMany.status).toBe(400);
    await expectAttackLeavesNothing('3,000 tokens of 64 scopes', async () => {
      await inParallel(3000, 16, async (index) => {
        const query = new URLSearchParams({ service: 'berth-registry' });
        for (const scope of names(index)) query.append('scope', scope);
        const answer = await exchange(agent, host, 'GET', `/token?${query}`);
        expect(answer.status).toBe(200);
        const token = (JSON.parse(answer.body.toString()) as { token: string }).token;
        const presented = await exchange(
          agent,
          host,
          'GET',
          `/v2/team-a/open/${index}-0-${'n'.repeat(100)}/tags/list`,
          { Authorization: `Bearer ${token}` },
        );
        expect(presented.status).toBe(404);
      });
    });
  });

  it('kept a well-behaved client pulling throughout, with a p99 under a second', async () => {
    await puller.stop();
    figures.push(
      `well-behaved pulls: ${puller.latenciesMs.length}, p50 ${puller.percentile(50).toFixed(0)} ms, p99 ${puller.percentile(99).toFixed(0)} ms, max ${puller.percentile(100).toFixed(0)} ms`,
    );
    expect(puller.failures).toEqual([]);
    expect(puller.latenciesMs.length).toBeGreaterThan(100);
    expect(puller.percentile(99)).toBeLessThan(1000);
  });
});
