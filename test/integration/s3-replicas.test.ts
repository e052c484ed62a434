import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { parseDigest } from '../../src/registry/reference.ts';
import { paths } from '../../src/registry/storage/paths.ts';
import { BlobService } from '../../src/registry/service/blobs.ts';
import { defaultClaimLeaseMillis, UploadService } from '../../src/registry/service/uploads.ts';
import { runConformanceSuite } from '../support/conformance.ts';
import { randomLayerTar } from '../support/images.ts';
import {
  configOnlyManifest,
  ociManifestType as ociManifest,
  sha256,
} from '../support/manifests.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';
import { startRoundRobinBalancer, type RoundRobinBalancer } from '../support/round-robin.ts';
import { s3Tool, startS3Server, type S3Server } from '../support/s3.ts';
import { describeWithTools } from '../support/tools.ts';

/**
 * Three `berth registry` processes on one versitygw bucket behind a balancer that sends every
 * request to the next replica: nothing but the bucket is shared, and every replica serves and
 * continues whatever another one wrote.
 */
const mib = 1024 * 1024;

describeWithTools(
  [s3Tool, 'conformance', 'crane'],
  'three registry replicas on one bucket',
  (tools) => {
    let server: S3Server;
    let work: Awaited<ReturnType<typeof temporaryDirectory>>;
    let configFile: string;
    let replicas: RegistryProcess[];
    let balancer: RoundRobinBalancer;
    let bucket: string;

    beforeAll(async () => {
      server = await startS3Server();
      work = await temporaryDirectory('s3-replicas');
      configFile = join(work.path, 'registry.yaml');
      await writeFile(
        configFile,
        JSON.stringify({
          storage: {
            s3: {
              bucket: (bucket = await server.createBucket()),
              endpoint: server.endpoint,
              region: 'us-east-1',
              forcePathStyle: true,
            },
          },
          // The default cache: on shared storage tags are read from the bucket on every request,
          // so a move by any replica is seen by all.
        }),
      );
      replicas = await Promise.all(
        [0, 1, 2].map(() =>
          startBerth(undefined, {
            extraArgs: ['--config', configFile, '--log-level', 'warn'],
            env: server.env,
          }),
        ),
      );
      balancer = await startRoundRobinBalancer(replicas.map((replica) => replica.host));
    }, 120_000);

    afterAll(async () => {
      await balancer?.stop();
      await Promise.all((replicas ?? []).map((replica) => replica.stop()));
      await server?.stop();
      await work?.remove();
    });

    it('passes the OCI conformance suite through the balancer', async () => {
      await runConformanceSuite(tools.conformance as string, balancer.host, {});
    }, 600_000);

    it('completes a chunked push whose every PATCH lands on another replica', async () => {
      const repository = 'chunked/app';
      const start = await fetch(`${balancer.url}/v2/${repository}/blobs/uploads/`, {
        method: 'POST',
      });
      expect(start.status).toBe(202);
      let location = start.headers.get('location') as string;
      // Across the 10 MiB part size, below S3's 5 MiB minimum part, and a few bytes.
      const chunks = [6 * mib, mib, 7, 4 * mib + 3, 7 * mib, 100 * 1024].map((size) =>
        randomBytes(size),
      );
      let offset = 0;
      const first = balancer.served.length;
      for (const chunk of chunks) {
        const answer = await patch(`${balancer.url}${location}`, chunk, offset);
        expect({ offset, status: answer.status }).toEqual({ offset, status: 202 });
        expect(answer.headers.get('range')).toBe(`0-${offset + chunk.length - 1}`);
        location = answer.headers.get('location') as string;
        offset += chunk.length;
      }
      const backends = balancer.served.slice(first).map((entry) => entry.backend);
      expect(backends.every((backend, index) => backend !== backends[index - 1])).toBe(true);
      expect(new Set(backends).size).toBe(3);

      // Two replicas offered a chunk at the same offset at once: exactly one takes it.
      const [a, b] = replicas as [RegistryProcess, RegistryProcess];
      const extra = randomBytes(3 * mib);
      const racing = await Promise.all(
        [a, b].map((replica) => patch(`${replica.url}${location}`, extra, offset)),
      );
      expect(racing.map((answer) => answer.status).sort()).toEqual([202, 416]);
      offset += extra.length;
      // A repeated (stale) chunk is refused by whichever replica gets it.
      expect((await patch(`${balancer.url}${location}`, extra, offset - extra.length)).status).toBe(
        416,
      );

      const last = randomBytes(500 * 1024);
      const content = Buffer.concat([...chunks, extra, last]);
      const digest = sha256(content);
      const put = await fetch(
        `${balancer.url}${location}${location.includes('?') ? '&' : '?'}digest=${digest}`,
        {
          method: 'PUT',
          body: last,
          headers: { 'Content-Type': 'application/octet-stream' },
        },
      );
      expect(put.status).toBe(201);
      for (const replica of replicas) {
        const pulled = await fetch(`${replica.url}/v2/${repository}/blobs/${digest}`);
        expect(sha256(Buffer.from(await pulled.arrayBuffer()))).toBe(digest);
      }
    }, 120_000);

    it('serves a tag moved through one replica from every other on the next request', async () => {
      const repository = 'tags/app';
      const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
      const pushed = await fetch(
        `${balancer.url}/v2/${repository}/blobs/uploads/?digest=${sha256(config)}`,
        { method: 'POST', body: config },
      );
      expect(pushed.status).toBe(201);
      const manifest = (round: number) => configOnlyManifest(config, { round: String(round) });
      const served = async (replica: RegistryProcess) => {
        const answer = await fetch(`${replica.url}/v2/${repository}/manifests/moving`, {
          headers: { Accept: ociManifest },
        });
        await answer.arrayBuffer();
        return answer.headers.get('docker-content-digest');
      };
      for (let round = 0; round < 6; round += 1) {
        const writer = replicas[round % 3] as RegistryProcess;
        const body = manifest(round);
        const put = await fetch(`${writer.url}/v2/${repository}/manifests/moving`, {
          method: 'PUT',
          body,
          headers: { 'Content-Type': ociManifest },
        });
        expect(put.status).toBe(201);
        // Every replica read the tag in the previous round, so a cache would answer the old digest.
        expect({ round, served: await Promise.all(replicas.map(served)) }).toEqual({
          round,
          served: [sha256(body), sha256(body), sha256(body)],
        });
      }
    }, 60_000);

    it('stops serving a manifest deleted through one replica from every other at once', async () => {
      const repository = 'deleted/app';
      const config = Buffer.from('{"architecture":"arm64","os":"linux"}');
      const [writer, ...others] = replicas as [RegistryProcess, ...RegistryProcess[]];
      const pushed = await fetch(
        `${writer.url}/v2/${repository}/blobs/uploads/?digest=${sha256(config)}`,
        { method: 'POST', body: config },
      );
      expect(pushed.status).toBe(201);
      const body = configOnlyManifest(config, { deleted: 'soon' });
      const digest = sha256(body);
      const put = await fetch(`${writer.url}/v2/${repository}/manifests/${digest}`, {
        method: 'PUT',
        body,
        headers: { 'Content-Type': ociManifest },
      });
      expect(put.status).toBe(201);
      const status = async (replica: RegistryProcess) => {
        const answer = await fetch(`${replica.url}/v2/${repository}/manifests/${digest}`, {
          headers: { Accept: ociManifest },
        });
        await answer.arrayBuffer();
        return answer.status;
      };
      // Each of the others reads it once, so it is in their caches.
      expect(await Promise.all(others.map(status))).toEqual([200, 200]);
      const deleted = await fetch(`${writer.url}/v2/${repository}/manifests/${digest}`, {
        method: 'DELETE',
      });
      expect(deleted.status).toBe(202);
      expect(await Promise.all(others.map(status))).toEqual([404, 404]);
    }, 60_000);

    it('continues at the offset of a replica killed mid-PATCH once its claim lease is over', async () => {
      const repository = 'takeover/app';
      const survivor = replicas[0] as RegistryProcess;
      const doomed = await startBerth(undefined, {
        extraArgs: ['--config', configFile, '--log-level', 'warn'],
        env: server.env,
      });
      try {
        const start = await fetch(`${survivor.url}/v2/${repository}/blobs/uploads/`, {
          method: 'POST',
        });
        expect(start.status).toBe(202);
        let location = start.headers.get('location') as string;
        // A whole 10 MiB part and a tail before the PATCH the kill cuts off.
        const first = randomBytes(12 * mib);
        const stored = await patch(`${survivor.url}${location}`, first, 0);
        expect(stored.status).toBe(202);
        location = stored.headers.get('location') as string;

        // 24 MiB of a 40 MiB chunk reach the doomed replica (parts go to S3), then it is killed.
        const killed = streamingPatch(`${doomed.url}${location}`, first.length, 40 * mib);
        await killed.send(randomBytes(24 * mib));
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        await doomed.stop('SIGKILL');
        const killedAt = Date.now();
        await killed.outcome;

        // Another chunk at the same offset is refused while the dead holder's lease runs, then
        // taken; it is shorter than the lost one, so the dead holder's parts must not leak in.
        const second = randomBytes(9 * mib);
        let statuses: number[] = [];
        let answer: Response;
        for (;;) {
          answer = await patch(`${survivor.url}${location}`, second, first.length);
          statuses = [...statuses, answer.status];
          if (answer.status !== 416 || Date.now() - killedAt > defaultClaimLeaseMillis * 2) break;
          await new Promise((resolve) => setTimeout(resolve, 3_000));
        }
        const waited = Date.now() - killedAt;
        expect(answer.status).toBe(202);
        expect(statuses[0]).toBe(416);
        // The holder renewed at most a sixth of a lease before it was killed.
        expect(waited).toBeGreaterThan((defaultClaimLeaseMillis * 5) / 6 - 1_000);
        expect(answer.headers.get('range')).toBe(`0-${first.length + second.length - 1}`);
        location = answer.headers.get('location') as string;

        const last = randomBytes(mib + 5);
        const digest = sha256(Buffer.concat([first, second, last]));
        const put = await fetch(
          `${balancer.url}${location}${location.includes('?') ? '&' : '?'}digest=${digest}`,
          { method: 'PUT', body: last, headers: { 'Content-Type': 'application/octet-stream' } },
        );
        expect(put.status).toBe(201);
        const pulled = await fetch(`${balancer.url}/v2/${repository}/blobs/${digest}`);
        expect(sha256(Buffer.from(await pulled.arrayBuffer()))).toBe(digest);
      } finally {
        if (doomed.daemon.running) await doomed.stop('SIGKILL');
      }
    }, 180_000);

    it('does not take a chunk over from a holder that is alive past its lease', async () => {
      const claimLeaseMillis = 3_000;
      const driver = server.driver(bucket, { partBytes: 5 * mib });
      const [holder, other] = [0, 1].map(
        () => new UploadService(driver, new BlobService(driver), { claimLeaseMillis }),
      ) as [UploadService, UploadService];
      try {
        const repository = 'lease/app';
        const id = await holder.start(repository);
        // 12 MiB over three leases: the holder keeps renewing its claim on offset 0.
        const pieces = Array.from({ length: 12 }, () => randomBytes(mib));
        const slow = Readable.from(
          (async function* () {
            for (const piece of pieces) {
              yield piece;
              await new Promise((resolve) => setTimeout(resolve, claimLeaseMillis / 4));
            }
          })(),
        );
        const holding = holder.append(repository, id, slow, { start: 0 });
        const refusals: string[] = [];
        let settled = false;
        void holding.finally(() => (settled = true));
        while (!settled) {
          await new Promise((resolve) => setTimeout(resolve, claimLeaseMillis / 2));
          if (settled) break;
          const attempt = await other
            .append(repository, id, Readable.from([randomBytes(mib)]), { start: 0 })
            .then(
              () => 'accepted',
              (error: { code?: string }) => error.code ?? 'failed',
            );
          refusals.push(attempt);
        }
        expect(await holding).toEqual({ size: 12 * mib, received: 12 * mib });
        expect(refusals.length).toBeGreaterThanOrEqual(4);
        expect(new Set(refusals)).toEqual(new Set(['RANGE_INVALID']));
        const content = Buffer.concat(pieces);
        await other.complete(repository, id, parseDigest(sha256(content)));
        const blob = await driver.getContent(paths.blobData(parseDigest(sha256(content))));
        expect(sha256(blob)).toBe(sha256(content));
      } finally {
        await Promise.all([holder.close(), other.close()]);
      }
    }, 120_000);

    it('loses nothing acknowledged when a replica is killed during eight pushes', async () => {
      const crane = (...args: string[]) =>
        run(tools.crane as string, [...args, '--insecure'], {
          allowFailure: true,
          timeoutMs: 120_000,
        });
      const layers = await Promise.all(
        Array.from({ length: 8 }, (_, index) =>
          randomLayerTar(work.path, `killed-${index}`, (8 + index) * mib),
        ),
      );
      const before = balancer.served.length;
      const attempts: number[] = Array.from({ length: 8 }, () => 0);
      const pushes = layers.map(async (layer, index) => {
        // A client that retries: crane retries requests itself, this retries the whole push.
        for (;;) {
          attempts[index] = (attempts[index] ?? 0) + 1;
          const result = await crane(
            'append',
            '-f',
            layer,
            '-t',
            `${balancer.host}/killed/app-${index}:v1`,
          );
          if (result.code === 0) return;
          if ((attempts[index] ?? 0) >= 5)
            throw new Error(`push ${index} failed: ${result.stderr}`);
        }
      });
      // Kill the third replica once the pushes are sending layer data.
      const victim = replicas[2] as RegistryProcess;
      const deadline = Date.now() + 60_000;
      while (
        balancer.served.slice(before).filter((entry) => entry.method === 'PATCH').length < 4 &&
        Date.now() < deadline
      ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await victim.stop('SIGKILL');
      await Promise.all(pushes);
      expect(victim.daemon.running).toBe(false);
      // The killed replica had taken part in these pushes.
      expect(balancer.served.slice(before).some((entry) => entry.backend === 2)).toBe(true);

      // Every acknowledged push reads back whole, its blobs verified against their digests.
      for (let index = 0; index < 8; index += 1) {
        const validated = await crane(
          'validate',
          '--remote',
          `${balancer.host}/killed/app-${index}:v1`,
        );
        expect({ index, code: validated.code, stderr: validated.stderr }).toEqual({
          index,
          code: 0,
          stderr: '',
        });
      }
      const check = await run(
        process.execPath,
        ['src/cli.ts', 'check', '--config', configFile, '--verify-content'],
        { env: server.env },
      );
      expect(check.stdout).toMatch(/; 0 problems/);
    }, 300_000);
  },
);

/** A PATCH of `chunk` with a Content-Range starting at `offset`. */
function patch(url: string, chunk: Buffer, offset: number): Promise<Response> {
  return fetch(url, {
    method: 'PATCH',
    body: chunk,
    headers: {
      'Content-Type': 'application/octet-stream',
      'Content-Range': `${offset}-${offset + chunk.length - 1}`,
      'Content-Length': String(chunk.length),
    },
  });
}

/**
 * A PATCH of `length` bytes at `offset` whose body is sent piece by piece; `outcome` settles when
 * the request ends either way (the server killed under it, say).
 */
function streamingPatch(
  url: string,
  offset: number,
  length: number,
): { send(bytes: Buffer): Promise<void>; outcome: Promise<unknown> } {
  const target = new URL(url);
  const outgoing = request(target, {
    method: 'PATCH',
    headers: {
      'Content-Type': 'application/octet-stream',
      'Content-Range': `${offset}-${offset + length - 1}`,
      'Content-Length': String(length),
    },
  });
  const outcome = new Promise((resolve) => {
    outgoing.on('response', (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode));
    });
    outgoing.on('error', resolve);
    outgoing.on('close', () => resolve('closed'));
  });
  return {
    send: (bytes) =>
      new Promise<void>((resolve, reject) =>
        outgoing.write(bytes, (error) => (error ? reject(error) : resolve())),
      ),
    outcome,
  };
}
