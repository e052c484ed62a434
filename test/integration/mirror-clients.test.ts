import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  criEndpoints,
  mirrorRegistry,
  startContainerd,
  type Containerd,
} from '../support/containerd.ts';
import { CountingProxy, type Exchange } from '../support/counting-proxy.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { describeWithTools } from '../support/tools.ts';
import {
  pushMultiArchImage,
  startUpstreamRegistry,
  type MultiArchImage,
  type UpstreamRegistry,
} from '../support/upstream-registry.ts';

/** One upstream as Berth mirrors it: the registry name clients use, and the proxy before it. */
interface Side {
  readonly kind: 'open' | 'htpasswd';
  /** The mirror's prefix, and the registry name containerd sends as `ns`. */
  readonly registry: string;
  readonly upstream: UpstreamRegistry;
  /** Between Berth and the upstream: counts and slows what Berth asks upstream. */
  readonly proxy: CountingProxy;
}

/** Upstream layer bodies are slowed to this, so a copy of the big layer takes about 2 s. */
const upstreamRate = 12 * 1024 * 1024;
const bigLayer = 24 * 1024 * 1024;
const login = { username: 'mirror-user', password: 'upstream-secret' };
/** Short for the anonymous upstream, so a pull with it stopped must use a stale tag. */
const openTagTTLSeconds = 2;

/**
 * Must-show 1 of the pull-through mirror with the clients a cluster uses: two real upstreams on
 * loopback (docker-registry, one anonymous, one behind htpasswd) holding multi-arch images,
 * `berth registry` mirroring both, containerd's CRI pulling through hosts.toml (`?ns=`) and
 * crane pulling by the prefixed path. A second counting proxy sits between the clients and
 * Berth, so the time to first byte a client sees is measured on the wire.
 */
describeWithTools(
  ['crane', 'containerd', 'ctr', 'crictl', 'docker-registry', 'htpasswd'],
  'pull-through mirrors with real clients and real upstreams',
  (tools) => {
    let work: Awaited<ReturnType<typeof temporaryDirectory>>;
    const sides: Side[] = [];
    let nologinRegistry: string;
    let berth: RegistryProcess;
    /** Between the clients and Berth. */
    let front: CountingProxy;
    let containerd: Containerd;

    const crane = (...args: string[]) =>
      run(tools.crane as string, [...args, '--insecure'], { timeoutMs: 120_000 });
    const crictl = (...args: string[]) =>
      run(
        tools.crictl as string,
        [...criEndpoints(containerd.socket), '--timeout', '120s', ...args],
        {
          timeoutMs: 150_000,
        },
      );
    const side = (kind: Side['kind']) => sides.find((candidate) => candidate.kind === kind) as Side;

    beforeAll(async () => {
      work = await temporaryDirectory('mirror-clients');
      for (const kind of ['open', 'htpasswd'] as const) {
        const upstream = await startUpstreamRegistry(
          join(work.path, kind),
          kind === 'htpasswd' ? login : undefined,
        );
        const proxy = new CountingProxy(upstream.url);
        await proxy.start();
        sides.push({ kind, registry: `registry.${kind}.test`, upstream, proxy });
      }
      nologinRegistry = 'registry.nologin.test';
      await writeFile(join(work.path, 'username'), `${login.username}\n`);
      await writeFile(join(work.path, 'password'), `${login.password}\n`);
      const config = join(work.path, 'berth.yaml');
      await writeFile(
        config,
        [
          'mirrors:',
          `  - {url: "${side('open').proxy.url}", prefix: ${side('open').registry}, tagTTL: ${openTagTTLSeconds}s}`,
          `  - url: "${side('htpasswd').proxy.url}"`,
          `    prefix: ${side('htpasswd').registry}`,
          '    credentials:',
          `      usernameFile: ${join(work.path, 'username')}`,
          `      passwordFile: ${join(work.path, 'password')}`,
          `  - {url: "${side('htpasswd').proxy.url}", prefix: ${nologinRegistry}}`,
          'log: {requests: false}',
          '',
        ].join('\n'),
      );
      berth = await startBerth(join(work.path, 'berth'), { extraArgs: ['--config', config] });
      front = new CountingProxy(berth.url);
      await front.start();
      const containerdDirectory = join(work.path, 'containerd');
      containerd = await startContainerd(
        { containerd: tools.containerd as string, ctr: tools.ctr as string },
        containerdDirectory,
      );
      for (const { registry } of sides)
        await mirrorRegistry(containerdDirectory, registry, front.url);
    }, 120_000);

    afterAll(async () => {
      await containerd?.stop();
      await front?.stop();
      await berth?.stop();
      for (const { proxy, upstream } of sides) {
        await proxy.stop();
        await upstream.stop();
      }
      await work?.remove();
    });

    /** Successful upstream GETs of `digest`'s blob. */
    const upstreamFetches = (target: Side, repository: string, digest: string) =>
      target.proxy
        .matching(new RegExp(`^GET /v2/${repository}/blobs/${digest}$`))
        .filter((exchange) => exchange.status === 200);
    const upstreamBlobFetches = (target: Side) =>
      target.proxy.matching(/^GET \/v2\/.*\/blobs\//).filter((exchange) => exchange.status === 200)
        .length;

    /**
     * The big layer's first pull: upstream sent it once, slowly (the time to copy it), and the
     * client had its first byte long before that copy was done.
     */
    function expectStreamed(target: Side, repository: string, layer: string, client: string): void {
      const copies = upstreamFetches(target, repository, layer);
      expect(copies).toHaveLength(1);
      const copy = copies[0] as Exchange;
      const copyMillis = (copy.finished as number) - copy.started;
      const toClient = front.matching(new RegExp(`^GET /v2/.*blobs/${layer}`));
      expect(toClient.length).toBeGreaterThanOrEqual(1);
      const first = toClient[0] as Exchange;
      const firstByteMillis = (first.firstByte as number) - first.started;
      const wholeMillis = (first.finished as number) - first.started;
      expect(first.status).toBe(200);
      expect(first.bytes).toBe(copy.bytes);
      // 24 MiB at 12 MiB/s: about 2 s; the first byte waits only for upstream's first chunks.
      expect(copyMillis).toBeGreaterThan(1500);
      expect(firstByteMillis).toBeLessThan(copyMillis / 4);
      console.log(
        `${target.kind} upstream, ${client}: layer of ${copy.bytes} bytes copied from upstream in ${copyMillis.toFixed(0)} ms; ` +
          `client's first byte after ${firstByteMillis.toFixed(0)} ms, last after ${wholeMillis.toFixed(0)} ms`,
      );
    }

    async function pushed(
      target: Side,
      repository: string,
      amd64Bytes: number,
    ): Promise<MultiArchImage> {
      return pushMultiArchImage(
        target.upstream,
        repository,
        '1',
        { amd64Bytes, arm64Bytes: 256 * 1024 },
        work.path,
      );
    }

    describe.each(['open', 'htpasswd'] as const)('%s upstream', (kind) => {
      it('containerd pulls through hosts.toml (?ns=): the first pull streams, the second asks upstream for no blob', async () => {
        const target = side(kind);
        const image = await pushed(target, 'library/app', bigLayer);
        const amd64 = image.platforms.find((platform) => platform.architecture === 'amd64');
        const reference = `${target.registry}/library/app:1`;
        target.proxy.bytesPerSecond = upstreamRate;
        try {
          await crictl('pull', reference);
        } finally {
          target.proxy.bytesPerSecond = 0;
        }
        const listed = await containerd.ctr('-n', 'k8s.io', 'images', 'ls');
        expect(listed.stdout).toContain(image.index);
        // containerd named the upstream with ns and used the unprefixed repository.
        const resolved = new RegExp(
          `^(HEAD|GET) /v2/library/app/manifests/1\\?ns=${target.registry}$`,
        );
        expect(front.count(resolved)).toBeGreaterThanOrEqual(1);
        expectStreamed(target, 'library/app', amd64?.layer as string, 'containerd');

        const upstreamBefore = upstreamBlobFetches(target);
        const toBerthBefore = front.count(new RegExp(`^GET /v2/library/app/blobs/${amd64?.layer}`));
        await crictl('rmi', reference);
        await crictl('pull', reference);
        // containerd fetched the layer again (it had dropped it), and Berth had it all.
        expect(
          front.count(new RegExp(`^GET /v2/library/app/blobs/${amd64?.layer}`)),
        ).toBeGreaterThan(toBerthBefore);
        expect(upstreamBlobFetches(target)).toBe(upstreamBefore);
      }, 240_000);

      it('crane pulls by the prefixed path: the first pull streams, the second asks upstream for no blob', async () => {
        const target = side(kind);
        const image = await pushed(target, 'tools/crane', bigLayer);
        const amd64 = image.platforms.find((platform) => platform.architecture === 'amd64');
        const reference = `${front.url.replace('http://', '')}/${target.registry}/tools/crane:1`;
        target.proxy.bytesPerSecond = upstreamRate;
        try {
          await crane(
            'pull',
            '--format',
            'oci',
            '--platform',
            'linux/amd64',
            reference,
            join(work.path, `crane-${kind}-1`),
          );
        } finally {
          target.proxy.bytesPerSecond = 0;
        }
        expect((await crane('digest', reference)).stdout.trim()).toBe(image.index);
        expectStreamed(target, 'tools/crane', amd64?.layer as string, 'crane');
        const upstreamBefore = upstreamBlobFetches(target);
        await crane(
          'pull',
          '--format',
          'oci',
          '--platform',
          'linux/amd64',
          reference,
          join(work.path, `crane-${kind}-2`),
        );
        expect(upstreamBlobFetches(target)).toBe(upstreamBefore);
      }, 240_000);

      it('20 concurrent cold crane pulls of every platform make one upstream fetch per blob and manifest', async () => {
        const target = side(kind);
        const image = await pushed(target, 'library/many', 8 * 1024 * 1024);
        const reference = `${front.url.replace('http://', '')}/${target.registry}/library/many:1`;
        target.proxy.bytesPerSecond = 16 * 1024 * 1024;
        try {
          await Promise.all(
            Array.from({ length: 20 }, (_, index) =>
              crane('pull', '--format', 'oci', reference, join(work.path, `many-${kind}-${index}`)),
            ),
          );
        } finally {
          target.proxy.bytesPerSecond = 0;
        }
        const amd64 = image.platforms.find((platform) => platform.architecture === 'amd64');
        const copy = upstreamFetches(target, 'library/many', amd64?.layer as string)[0] as Exchange;
        // The pulls overlapped: several asked Berth for the layer while upstream still sent it.
        const meanwhile = front
          .matching(new RegExp(`^GET /v2/.*blobs/${amd64?.layer}`))
          .filter((exchange) => exchange.started < (copy.finished as number));
        expect(meanwhile.length).toBeGreaterThan(1);
        console.log(
          `${kind} upstream: ${meanwhile.length} of 20 pulls asked for the layer during its one upstream copy`,
        );
        for (const blob of image.blobs) {
          expect(upstreamFetches(target, 'library/many', blob)).toHaveLength(1);
          for (let index = 0; index < 20; index += 1) {
            const file = join(work.path, `many-${kind}-${index}`, 'blobs', 'sha256', blob.slice(7));
            expect((await stat(file)).isFile()).toBe(true);
          }
        }
        for (const manifest of [
          '1',
          image.index,
          ...image.platforms.map((platform) => platform.manifest),
        ]) {
          const fetched = target.proxy
            .matching(new RegExp(`^GET /v2/library/many/manifests/${manifest}$`))
            .filter((exchange) => exchange.status === 200);
          // The index once by its tag (which stores it under its digest too), each child once.
          expect(fetched).toHaveLength(manifest === image.index ? 0 : 1);
        }
      }, 240_000);
    });

    it('an upstream that wants a login Berth was not given fails the pull naming the upstream', async () => {
      await pushed(side('htpasswd'), 'library/locked', 1024);
      const answer = await fetch(`${berth.url}/v2/${nologinRegistry}/library/locked/manifests/1`);
      expect(answer.status).toBe(503);
      const body = (await answer.json()) as { errors: { code: string; message: string }[] };
      expect(body.errors[0]?.code).toBe('UNAVAILABLE');
      expect(body.errors[0]?.message).toContain(`upstream ${side('htpasswd').proxy.url}`);
      expect(body.errors[0]?.message).toContain('401');
    }, 60_000);

    it('containerd still pulls cached tags and digests with the upstream stopped; an uncached image fails', async () => {
      const target = side('open');
      const image = await pushed(target, 'library/offline', 512 * 1024);
      const reference = `${target.registry}/library/offline`;
      await crictl('pull', `${reference}:1`);
      await target.proxy.stop();
      try {
        // Past the tag's TTL: Berth tries upstream, cannot reach it and serves what it has.
        await new Promise((resolve) => setTimeout(resolve, openTagTTLSeconds * 1000 + 500));
        for (const pull of [`${reference}:1`, `${reference}@${image.index}`]) {
          await crictl('rmi', `${reference}:1`);
          await crictl('pull', pull);
          expect((await containerd.ctr('-n', 'k8s.io', 'images', 'ls')).stdout).toContain(
            image.index,
          );
        }
        const absent = await run(
          tools.crictl as string,
          [
            ...criEndpoints(containerd.socket),
            '--timeout',
            '60s',
            'pull',
            `${target.registry}/library/absent:1`,
          ],
          { allowFailure: true, timeoutMs: 90_000 },
        );
        expect(absent.code).not.toBe(0);
        // What Berth answered containerd (which then tried the registry itself, unresolvable).
        const answered = await fetch(
          `${berth.url}/v2/library/absent/manifests/1?ns=${target.registry}`,
        );
        expect(answered.status).toBe(503);
        expect(
          ((await answered.json()) as { errors: { message: string }[] }).errors[0]?.message,
        ).toContain(`upstream ${target.proxy.url}: cannot be reached`);
      } finally {
        await target.proxy.start();
      }
    }, 240_000);
  },
);
