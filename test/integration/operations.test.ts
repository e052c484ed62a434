import { createHash, randomBytes } from 'node:crypto';
import { sendSlowly } from '../support/http.ts';
import { temporaryDirectory, waitFor } from '../support/processes.ts';
import { startBerth } from '../support/registries.ts';

/** Health, metrics, request logs and graceful shutdown of a real `berth registry` process. */
describe('operations', () => {
  it('serves health and metrics, logs one line per request without credentials', async () => {
    const storage = await temporaryDirectory('operations');
    const registry = await startBerth(storage.path);
    try {
      expect((await fetch(`${registry.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${registry.url}/readyz`)).status).toBe(200);
      const secret = 'Bearer super-secret-token-value';
      await fetch(`${registry.url}/v2/ops/app/tags/list`, { headers: { Authorization: secret } });
      const metrics = await (await fetch(`${registry.url}/metrics`)).text();
      expect(metrics).toMatch(
        /berth_registry_http_requests_total\{route="tags",method="GET",status="404"\} 1/,
      );
      expect(metrics).toMatch(/process_resident_memory_bytes \d+/);
      await waitFor(
        async () => registry.daemon.output.includes('"route":"tags"'),
        5000,
        'the request log line',
      );
      const line = registry.daemon.output
        .split('\n')
        .find((entry) => entry.includes('"route":"tags"')) as string;
      expect(JSON.parse(line)).toMatchObject({
        msg: 'request',
        method: 'GET',
        repository: 'ops/app',
        status: 404,
      });
      expect(registry.daemon.output).not.toContain('super-secret-token-value');
    } finally {
      await registry.stop();
      await storage.remove();
    }
  });

  it('finishes an in-flight upload after SIGTERM, then exits 0', async () => {
    const storage = await temporaryDirectory('shutdown');
    const registry = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
    try {
      const data = randomBytes(4 * 1024 * 1024);
      const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      // The rest of the body arrives after the registry was told to stop.
      const response = sendSlowly(
        registry.host,
        'POST',
        `/v2/ops/slow/blobs/uploads/?digest=${digest}`,
        data,
        1024 * 1024,
        700,
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      registry.daemon.child.kill('SIGTERM');
      expect(await response).toBe(201);
      expect(await registry.daemon.waitForExit()).toBe(0);

      const restarted = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
      try {
        const blob = await fetch(`${restarted.url}/v2/ops/slow/blobs/${digest}`);
        expect(Buffer.from(await blob.arrayBuffer()).equals(data)).toBe(true);
      } finally {
        await restarted.stop();
      }
    } finally {
      await registry.stop();
      await storage.remove();
    }
  });
});
