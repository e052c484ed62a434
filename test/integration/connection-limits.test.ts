import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Agent } from 'node:http';
import { join } from 'node:path';
import {
  closesWithin,
  counterValue,
  exchange,
  openConnection,
  stalledReader,
  tricklingBody,
} from '../support/hostile-clients.ts';
import { temporaryDirectory, waitFor } from '../support/processes.ts';
import { startBerth, type RegistryProcess } from '../support/registries.ts';

/**
 * What one client may hold of a real `berth registry`: a bounded number of connections, and
 * none for long while it makes the registry wait on it, sending a body or taking a response too
 * slowly. Clients that keep up are never cut, however long they take.
 */
const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

describe('connection limits', () => {
  let directory: { path: string; remove: () => Promise<void> };
  let registry: RegistryProcess;
  let blob: Buffer;
  const agent = new Agent({ keepAlive: false });

  const refused = async (reason: string): Promise<number> => {
    const metrics = await exchange(agent, registry.host, 'GET', '/metrics');
    return counterValue(
      metrics.body.toString(),
      `berth_registry_connections_refused_total{reason="${reason}"}`,
    );
  };

  beforeAll(async () => {
    directory = await temporaryDirectory('limits');
    const config = join(directory.path, 'registry.yaml');
    await writeFile(
      config,
      'limits: {maxConnections: 20, clientTimeout: 2s, minClientRate: 1Ki}\nlog: {level: warn}\n',
    );
    registry = await startBerth(join(directory.path, 'data'), { extraArgs: ['--config', config] });
    blob = randomBytes(16 * 1024 * 1024);
    const pushed = await exchange(
      agent,
      registry.host,
      'POST',
      `/v2/team/app/blobs/uploads/?digest=${sha256(blob)}`,
      { 'Content-Type': 'application/octet-stream' },
      blob,
    );
    expect(pushed.status).toBe(201);
  });

  afterAll(async () => {
    agent.destroy();
    await registry?.stop();
    await directory?.remove();
  });

  it('closes connections past maxConnections at once, and serves again when they go', async () => {
    // One more than the limit; the readiness probe's keep-alive connection may hold a slot too.
    const sockets = await Promise.all(
      Array.from({ length: 21 }, () => openConnection(registry.host)),
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    const open = sockets.filter((socket) => !socket.closed);
    expect(open.length).toBeLessThanOrEqual(20);
    expect(open.length).toBeGreaterThanOrEqual(19);
    for (const socket of open.splice(0, 2)) socket.destroy();
    await waitFor(async () => (await refused('max_connections')) >= 1, 2000, 'the refusal counted');
    expect((await exchange(agent, registry.host, 'GET', '/v2/')).status).toBe(200);
    for (const socket of open) socket.destroy();
  });

  it('disconnects a client that stops reading a blob, but not one that reads slowly', async () => {
    const before = await refused('slow_client');
    const stalled = await stalledReader(registry.host, `/v2/team/app/blobs/${sha256(blob)}`);
    // A reader at 2 MiB/s takes several times the client timeout and is never cut.
    const slow = await openConnection(registry.host);
    let received = 0;
    const finished = new Promise<void>((resolve, reject) => {
      slow.on('data', (chunk: Buffer) => {
        received += chunk.length;
        slow.pause();
        setTimeout(() => slow.resume(), (chunk.length / (2 * 1024 * 1024)) * 1000);
        if (received >= blob.length) resolve();
      });
      slow.on('close', () => reject(new Error(`cut off after ${received} bytes`)));
    });
    slow.write(`GET /v2/team/app/blobs/${sha256(blob)} HTTP/1.1\r\nHost: ${registry.host}\r\n\r\n`);
    await waitFor(async () => (await refused('slow_client')) === before + 1, 8000, 'the cut');
    await finished;
    slow.destroy();
    stalled.destroy();
  });

  it('disconnects an upload whose body trickles, and the upload stays consistent', async () => {
    const before = await refused('slow_client');
    const started = await exchange(agent, registry.host, 'POST', '/v2/team/app/blobs/uploads/');
    expect(started.status).toBe(202);
    const location = started.headers.location as string;
    // 4 GiB declared, one byte every 250 ms: well under 1 KiB/s.
    const trickle = await tricklingBody(registry.host, 'PATCH', location, 4 * 1024 ** 3, 250, {
      'Content-Type': 'application/octet-stream',
    });
    const startedAt = Date.now();
    expect(await closesWithin(trickle, 8000)).toBe(true);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(2000);
    expect(await refused('slow_client')).toBe(before + 1);

    await waitFor(
      async () => (await exchange(agent, registry.host, 'GET', location)).status === 204,
      2000,
      'the upload to be free again',
    );
    const status = await exchange(agent, registry.host, 'GET', location);
    expect(status.headers.range).toBe('0-0');
    const body = randomBytes(300 * 1024);
    // A body sent steadily at 100 KiB/s for three times the client timeout goes through.
    const patched = await new Promise<number>((resolve, reject) => {
      void openConnection(registry.host).then((socket) => {
        socket.write(
          `PATCH ${location} HTTP/1.1\r\nHost: ${registry.host}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`,
        );
        let offset = 0;
        const timer = setInterval(() => {
          socket.write(body.subarray(offset, offset + 10 * 1024));
          offset += 10 * 1024;
          if (offset >= body.length) clearInterval(timer);
        }, 100);
        socket.once('data', (chunk: Buffer) => {
          resolve(Number(chunk.toString().split(' ')[1]));
          socket.destroy();
        });
        socket.once('close', () => reject(new Error('cut off')));
      });
    });
    expect(patched).toBe(202);
    const completed = await exchange(
      agent,
      registry.host,
      'PUT',
      `${location}?digest=${sha256(body)}`,
    );
    expect(completed.status).toBe(201);
  });
});
