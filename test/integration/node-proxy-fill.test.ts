import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFile, readdir } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createCertificateAuthority, issueServingCertificate } from '../../src/tls/certificates.ts';
import {
  hashBlob,
  requestText,
  startNodeProxyProcess,
  type NodeProxyProcess,
} from '../support/node-proxy.ts';
import { temporaryDirectory, waitFor } from '../support/processes.ts';

/** How the stand-in registry answers a blob GET (its HEAD always says 200 and the length). */
type Behaviour = 'wrong-bytes' | 'slow' | 'gone';

/**
 * A cache fill when the registry misbehaves in ways `berth registry` never does on purpose, so
 * the stand-in is an HTTPS server the test scripts: bytes that do not match the digest, bytes
 * that trickle in, and a blob gone between the HEAD and the GET.
 */
describe('a node proxy cache fill', () => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let upstream: Server;
  let node: NodeProxyProcess;
  let behaviour: Behaviour = 'slow';
  let gets = 0;
  const blob = randomBytes(300 * 1024);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const path = `/v2/team-a/web/blobs/${digest}`;
  const cached = async () => readdir(join(work.path, 'cache', 'sha256'));

  beforeAll(async () => {
    work = await temporaryDirectory('node-proxy-fill');
    const hour = 3_600_000;
    const ca = createCertificateAuthority('fill test CA', hour);
    const serving = issueServingCertificate(ca, 'localhost', ['localhost', '127.0.0.1'], hour);
    await writeFile(join(work.path, 'ca.crt'), ca.certificatePem);
    upstream = createServer(
      { key: serving.privateKeyPem, cert: serving.certificatePem },
      (request, response) => {
        if (request.url !== path) {
          response.writeHead(404).end();
          return;
        }
        const headers = { 'Content-Length': blob.length, 'Docker-Content-Digest': digest };
        if (request.method === 'HEAD') {
          response.writeHead(200, headers).end();
          return;
        }
        gets += 1;
        if (behaviour === 'gone') {
          const body = JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'gone' }] });
          response.writeHead(404, { 'Content-Type': 'application/json' }).end(body);
        } else if (behaviour === 'wrong-bytes') {
          const wrong = Buffer.from(blob);
          wrong[1000] = (wrong[1000] as number) ^ 0xff;
          response.writeHead(200, headers).end(wrong);
        } else {
          // 30 KiB every 40 ms: the whole blob takes about 400 ms, well under one batch.
          response.writeHead(200, headers);
          let sent = 0;
          const timer = setInterval(() => {
            const next = blob.subarray(sent, sent + 30 * 1024);
            sent += next.length;
            if (sent >= blob.length) {
              clearInterval(timer);
              response.end(next);
            } else {
              response.write(next);
            }
          }, 40);
        }
      },
    );
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    node = await startNodeProxyProcess({
      upstream: `https://localhost:${(upstream.address() as AddressInfo).port}`,
      caFile: join(work.path, 'ca.crt'),
      cacheDirectory: join(work.path, 'cache'),
    });
  });

  afterAll(async () => {
    await node?.stop();
    upstream?.close();
    await work?.remove();
  });

  it('cuts the client off and caches nothing when the bytes do not match the digest', async () => {
    behaviour = 'wrong-bytes';
    const before = gets;
    const first = await hashBlob(`${node.url}${path}`, {});
    // The last bytes are held back until the digest is known: the client never sees an end.
    expect(first.status).toBe(0);
    expect(await cached()).toEqual([]);
    await hashBlob(`${node.url}${path}`, {});
    expect(gets - before).toBe(2);
  });

  it('sends bytes that trickle in as they come, not once a batch is full', async () => {
    behaviour = 'slow';
    const started = performance.now();
    const arrivals: number[] = [];
    const hash = createHash('sha256');
    await new Promise<void>((resolve, reject) => {
      httpRequest(`${node.url}${path}`, (response) => {
        response.on('data', (chunk: Buffer) => {
          arrivals.push(performance.now() - started);
          hash.update(chunk);
        });
        response.on('end', resolve);
        response.on('error', reject);
      })
        .on('error', reject)
        .end();
    });
    expect(`sha256:${hash.digest('hex')}`).toBe(digest);
    const total = arrivals.at(-1) as number;
    // Far more than one delivery, the first long before the blob has all come in.
    expect(arrivals.length).toBeGreaterThan(4);
    expect(arrivals[0]).toBeLessThan(total / 2);
    // The client has its bytes a moment before the entry is renamed into place.
    await waitFor(async () => (await cached()).length === 1, 5_000, 'the cache entry');
    expect(await cached()).toEqual([digest.slice('sha256:'.length)]);
  });

  it('answers with the registry’s own error when the blob is gone after the HEAD', async () => {
    behaviour = 'gone';
    // A fresh cache: the one above holds the blob now.
    await node.stop();
    node = await startNodeProxyProcess({
      upstream: `https://localhost:${(upstream.address() as AddressInfo).port}`,
      caFile: join(work.path, 'ca.crt'),
      cacheDirectory: join(work.path, 'cache-gone'),
    });
    const answer = await requestText(`${node.url}${path}`, {});
    expect(answer.status).toBe(404);
    expect(JSON.parse(answer.body)).toMatchObject({ errors: [{ code: 'BLOB_UNKNOWN' }] });
  });
});
