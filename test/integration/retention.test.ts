import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { berthGc, pushLooseBlob, referencedThroughApi, storedBlobs } from '../support/gc.ts';
import { imageManifest, ociManifestType, sha256 } from '../support/manifests.ts';
import { temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { FilesystemDriver } from '../../src/registry/storage/filesystem/driver.ts';
import { adminPassword, startAuthRegistry } from '../support/auth.ts';
import { randomLayerTar } from '../support/images.ts';
import { run } from '../support/processes.ts';
import { findTool } from '../support/tools.ts';
import { gcConfigSchema, registryConfigSchema } from '../../src/config/registry.ts';
import { loadPolicyFile, type RepositoryUsage } from '../../src/policy/source.ts';
import { createRegistryServices } from '../../src/registry/services.ts';
import { measureWithForecast } from '../../src/registry/service/usage-reports.ts';

/** 100 tags: 20 `v1.N`, 10 `release-N`, 70 `build-N`, pushed in a shuffled order. */
const tagNames = Array.from({ length: 100 }, (_, i) =>
  i < 20 ? `v1.${i}` : i < 30 ? `release-${i - 20}` : `build-${i}`,
);

interface Pushed {
  readonly tag: string;
  readonly digest: string;
  readonly config: string;
}

const retention = {
  last: { keepLast: 10 },
  patterns: { keepTags: ['v1.*', 'release-?'] },
  untagged: { untaggedAfter: '20s' },
  referrers: { deleteOrphanReferrers: true },
  combined: { keepLast: 5, keepTags: ['v1.1*'], deleteOrphanReferrers: true },
} as const;

/**
 * Retention per Repository, applied by `berth gc` from the standalone policy file, each rule on
 * its own repository of 100 tags: the exact set of tags and manifests that go, a dry run that
 * predicts the real run line for line, and storage left holding exactly what the API reaches.
 */
describe('retention', () => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let registry: RegistryProcess;
  let storage: string;
  const layer = randomBytes(4096);
  beforeAll(async () => {
    work = await temporaryDirectory('retention');
    storage = join(work.path, 'data');
    registry = await startBerth(storage, { extraArgs: ['--log-level', 'warn'] });
  }, 60_000);
  afterAll(async () => {
    await registry?.stop();
    await work?.remove();
  });

  const putManifest = async (repository: string, reference: string, bytes: Buffer) => {
    const response = await fetch(`${registry.url}/v2/${repository}/manifests/${reference}`, {
      method: 'PUT',
      headers: { 'content-type': ociManifestType },
      body: new Uint8Array(bytes),
    });
    if (response.status !== 201)
      throw new Error(`push ${repository}:${reference}: ${response.status}`);
    return response.headers.get('docker-content-digest') as string;
  };
  /** One image with its own config and the shared layer, tagged `tag`. */
  const pushImage = async (repository: string, tag: string | undefined): Promise<Pushed> => {
    const config = Buffer.from(JSON.stringify({ tag, nonce: randomBytes(8).toString('hex') }));
    await pushLooseBlob(registry.url, repository, config);
    const manifest = imageManifest(config, [layer]);
    const digest = await putManifest(repository, tag ?? sha256(manifest), manifest);
    return { tag: tag ?? '', digest, config: sha256(config) };
  };
  /** A referrer (an untagged SBOM-like artifact) of `subject`. */
  const attach = async (repository: string, subject: Pushed): Promise<Pushed> => {
    const config = Buffer.from(JSON.stringify({ sbom: randomBytes(8).toString('hex') }));
    await pushLooseBlob(registry.url, repository, config);
    const manifest = Buffer.from(
      JSON.stringify({
        ...(JSON.parse(imageManifest(config, []).toString()) as object),
        artifactType: 'application/vnd.berth.test.sbom',
        subject: { mediaType: ociManifestType, digest: subject.digest, size: 1 },
      }),
    );
    const digest = await putManifest(repository, sha256(manifest), manifest);
    return { tag: '', digest, config: sha256(config) };
  };
  const deleteReference = async (repository: string, reference: string) => {
    const response = await fetch(`${registry.url}/v2/${repository}/manifests/${reference}`, {
      method: 'DELETE',
    });
    if (response.status !== 202) throw new Error(`delete ${reference}: ${response.status}`);
  };
  /** Pushes the 100 tags in a shuffled order; returns them oldest first. */
  const push100 = async (repository: string): Promise<Pushed[]> => {
    const order = [...tagNames].sort(() => Math.random() - 0.5);
    await pushLooseBlob(registry.url, repository, layer);
    const pushed: Pushed[] = [];
    for (const tag of order) pushed.push(await pushImage(repository, tag));
    return pushed;
  };
  const tagsOf = async (repository: string): Promise<string[]> => {
    const body = (await (await fetch(`${registry.url}/v2/${repository}/tags/list`)).json()) as {
      tags: string[] | null;
    };
    return [...(body.tags ?? [])].sort();
  };
  const glob = (pattern: string) =>
    new RegExp(`^${pattern.replace(/\./g, '\\.').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);

  it('keeps exactly the expected set for each rule and a combination; the dry run predicts the run', async () => {
    const repositories = Object.keys(retention).map((name) => `ret/${name}`);
    const pushed = Object.fromEntries(
      await Promise.all(repositories.map(async (name) => [name, await push100(name)] as const)),
    ) as Record<string, Pushed[]>;

    // untagged: 50 tags deleted now (their manifests older than untaggedAfter by the run),
    // and, later, 5 untagged pushes younger than it.
    const untaggedTags = pushed['ret/untagged'] as Pushed[];
    const untagged = untaggedTags.filter((_, i) => i % 2 === 0);
    for (const image of untagged) await deleteReference('ret/untagged', image.tag);
    // referrers and combined: a referrer on each of 10 images, 5 of whose subjects are then
    // deleted by digest (their referrers are orphans), and one build tag immutable.
    const referrersOf: Record<string, { subject: Pushed; referrer: Pushed; orphan: boolean }[]> =
      {};
    for (const repository of ['ret/referrers', 'ret/combined']) {
      const images = (pushed[repository] as Pushed[]).slice(0, 10);
      referrersOf[repository] = [];
      for (const [i, subject] of images.entries()) {
        const referrer = await attach(repository, subject);
        const orphan = i < 5;
        if (orphan) await deleteReference(repository, subject.digest);
        (referrersOf[repository] as unknown[]).push({ subject, referrer, orphan });
      }
    }
    const immutable = ['build-4*'];

    const policyFile = join(work.path, 'policy.yaml');
    await writeFile(
      policyFile,
      stringify({
        namespaces: { ret: {} },
        repositories: Object.entries(retention).map(([name, rule]) => ({
          metadata: { namespace: 'ret', name },
          spec: {
            retention: rule,
            ...(name === 'combined' ? { immutableTags: immutable } : {}),
          },
        })),
      }),
    );
    const config = join(work.path, 'gc.yaml');
    await writeFile(
      config,
      JSON.stringify({
        storage: { filesystem: { rootDirectory: storage } },
        gc: { gracePeriod: '1s', untagged: 'keep' },
        auth: { policyFile },
        log: { requests: false },
      }),
    );
    await sleep(20_500);
    const young = [];
    for (let i = 0; i < 5; i += 1) young.push(await pushImage('ret/untagged', undefined));
    // Older than the grace period, younger than untaggedAfter until both runs are done.
    await sleep(1500);

    // What each rule must give up, computed from the push order and the names alone.
    const expectedTags: string[] = [];
    const expectedManifests: string[] = [];
    const keptTags: Record<string, string[]> = {};
    const byRule = (repository: string, keep: (image: Pushed, index: number) => boolean) => {
      const images = (pushed[repository] as Pushed[]).filter(
        (image) => !(referrersOf[repository] ?? []).some((r) => r.orphan && r.subject === image),
      );
      const newestFirst = [...images].reverse();
      const kept = newestFirst.filter((image, index) => keep(image, index));
      keptTags[repository] = kept.map((image) => image.tag).sort();
      for (const image of images.filter((candidate) => !kept.includes(candidate))) {
        expectedTags.push(`tag ${repository}:${image.tag} ${image.digest}`);
        expectedManifests.push(`manifest ${repository}@${image.digest}`);
      }
    };
    byRule('ret/last', (_, index) => index < 10);
    byRule('ret/patterns', (image) =>
      retention.patterns.keepTags.some((p) => glob(p).test(image.tag)),
    );
    keptTags['ret/untagged'] = untaggedTags
      .filter((image) => !untagged.includes(image))
      .map((image) => image.tag)
      .sort();
    for (const image of untagged) expectedManifests.push(`manifest ret/untagged@${image.digest}`);
    keptTags['ret/referrers'] = (pushed['ret/referrers'] as Pushed[])
      .filter(
        (image) => !referrersOf['ret/referrers']?.some((r) => r.orphan && r.subject === image),
      )
      .map((image) => image.tag)
      .sort();
    byRule(
      'ret/combined',
      (image, index) =>
        index < 5 ||
        glob('v1.1*').test(image.tag) ||
        immutable.some((pattern) => glob(pattern).test(image.tag)),
    );
    for (const repository of ['ret/referrers', 'ret/combined']) {
      for (const { subject, referrer, orphan } of referrersOf[repository] ?? []) {
        const subjectGoes =
          orphan || expectedManifests.includes(`manifest ${repository}@${subject.digest}`);
        if (subjectGoes) expectedManifests.push(`manifest ${repository}@${referrer.digest}`);
      }
    }

    // The status forecast, as the registry's usage round makes it (with the same gc settings),
    // taken in this process against the same storage before both runs.
    const services = createRegistryServices(
      new FilesystemDriver(storage),
      registryConfigSchema.parse({ storage: { filesystem: { rootDirectory: storage } } }),
    );
    const policy = await loadPolicyFile(policyFile, { anonymousPull: false });
    services.quotas.policy = () => policy;
    const collection = {
      manifests: services.manifests,
      settings: gcConfigSchema.parse({ interval: '1h', gracePeriod: '1s', untagged: 'keep' }),
    };
    const forecasts = new Map<string, RepositoryUsage>();
    const grants = policy.grants();
    for (const grant of grants)
      forecasts.set(grant.path, await measureWithForecast(services.quotas, grant, collection));

    const predicted = await berthGc(config, { dryRun: true });
    const removed = await berthGc(config);
    expect(removed).toEqual(predicted);
    // The forecast names and counts exactly what the run removed, and the usage drops by its
    // bytes.
    for (const grant of grants) {
      const repository = grant.path;
      const forecast = forecasts.get(repository)?.retention;
      const tagLines = removed.filter((line) => line.startsWith(`tag ${repository}:`));
      const manifestLines = removed.filter((line) => line.startsWith(`manifest ${repository}@`));
      const tagged = new Set(tagLines.map((line) => line.split(' ')[2]));
      const names = [
        ...tagLines.map((line) => (line.split(' ')[1] as string).trim()).sort(),
        ...manifestLines
          .map((line) => line.slice('manifest '.length))
          .filter((name) => !tagged.has(name.split('@')[1]))
          .sort(),
      ];
      const after = await services.quotas.measure(grant);
      expect(forecast).toEqual({
        evaluatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/),
        tags: tagLines.length,
        manifests: manifestLines.length,
        bytes: (forecasts.get(repository)?.bytes ?? 0) - after.bytes,
        wouldDelete: names.slice(0, 10),
      });
      expect(forecast?.manifests).toBeGreaterThan(0);
      expect(forecast?.bytes).toBeGreaterThan(0);
    }
    expect(removed.filter((line) => line.startsWith('tag '))).toEqual([...expectedTags].sort());
    expect(removed.filter((line) => line.startsWith('manifest '))).toEqual(
      [...expectedManifests].sort(),
    );
    // Sanity of the expectations themselves: each rule gave up something and kept something.
    expect(keptTags['ret/last']).toHaveLength(10);
    expect(keptTags['ret/patterns']).toHaveLength(30);
    expect(keptTags['ret/untagged']).toHaveLength(50);
    expect(keptTags['ret/combined']?.length).toBeGreaterThan(5);
    for (const repository of repositories) {
      expect(await tagsOf(repository)).toEqual(keptTags[repository]);
    }
    // The young untagged pushes and the referrers of kept subjects stay and pull.
    for (const image of young) {
      const response = await fetch(`${registry.url}/v2/ret/untagged/manifests/${image.digest}`, {
        method: 'HEAD',
      });
      expect(response.status).toBe(200);
    }
    for (const { subject, referrer, orphan } of referrersOf['ret/referrers'] ?? []) {
      const listed = (await (
        await fetch(`${registry.url}/v2/ret/referrers/referrers/${subject.digest}`)
      ).json()) as { manifests: { digest: string }[] };
      expect(listed.manifests.map((m) => m.digest)).toEqual(orphan ? [] : [referrer.digest]);
    }
    // After the run only what the API reaches is stored, but for the young untagged pushes.
    const stored = await storedBlobs(new FilesystemDriver(storage));
    const reached = await referencedThroughApi(registry.url);
    for (const image of young) {
      reached.add(image.digest);
      reached.add(image.config);
    }
    expect([...stored].sort()).toEqual([...reached].sort());
  }, 300_000);

  it("is applied by the registry's scheduled collector from its live policy", async () => {
    const crane = findTool('crane');
    if (!crane) throw new Error('crane is not installed; run test/tools/install.sh');
    const config = join(work.path, 'scheduled.yaml');
    await writeFile(config, JSON.stringify({ gc: { interval: '1s', gracePeriod: '1s' } }));
    const auth = await startAuthRegistry(
      {
        namespaces: { team: {} },
        repositories: [
          {
            metadata: { namespace: 'team', name: 'app' },
            spec: { retention: { keepLast: 2 }, immutableTags: ['stable'] },
          },
        ],
      },
      ['--config', config],
    );
    try {
      const host = auth.registry.host;
      const docker = join(work.path, 'docker-scheduled');
      const { mkdir } = await import('node:fs/promises');
      await mkdir(docker, { recursive: true });
      const login = Buffer.from(`admin:${adminPassword}`).toString('base64');
      await writeFile(
        join(docker, 'config.json'),
        JSON.stringify({ auths: { [host]: { auth: login } } }),
      );
      const env = { ...process.env, DOCKER_CONFIG: docker };
      for (const tag of ['stable', 'a', 'b', 'c', 'd']) {
        const layer = await randomLayerTar(work.path, `scheduled-${tag}`, 8 * 1024);
        await run(crane, ['append', '-f', layer, '-t', `${host}/team/app:${tag}`, '--insecure'], {
          env,
        });
      }
      // The two pushed last and the immutable one stay; a and b go once past the grace period.
      const expected = ['c', 'd', 'stable'];
      let tags: string[] = [];
      for (let waited = 0; waited < 30_000; waited += 500) {
        const listed = await run(crane, ['ls', `${host}/team/app`, '--insecure'], { env });
        tags = listed.stdout.trim().split('\n').sort();
        if (tags.join() === expected.join()) break;
        await sleep(500);
      }
      expect(tags).toEqual(expected);
    } finally {
      await auth.stop();
    }
  }, 120_000);
});
