import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
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
        // RFC 3339 in UTC, as Kubernetes components and log collectors read it.
        time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
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

/** The registry's uid in its container image, which a hostPath volume must be writable by. */
const containerUser = { uid: 65532, gid: 65532 };
/** Only root can start the registry as another uid (and root itself ignores permission bits). */
const asRoot = process.getuid?.() === 0;
if (!asRoot) {
  process.stderr.write(
    '\n*** SKIPPED "storage readiness": needs root to run the registry as uid 65532 ***\n\n',
  );
}

(asRoot ? describe : describe.skip)('storage readiness', () => {
  it('is not ready while its storage is not writable, refuses pushes clearly, recovers', async () => {
    const parent = await temporaryDirectory('unwritable');
    // Owned by root and 0755: the registry's user can read it and write nothing.
    await chmod(parent.path, 0o755);
    const storage = join(parent.path, 'storage');
    await mkdir(storage, { mode: 0o755 });
    const registry = await startBerth(storage, { user: containerUser, ready: false });
    try {
      const readyz = await fetch(`${registry.url}/readyz`);
      expect(readyz.status).toBe(503);
      const state = (await readyz.json()) as { message: string };
      expect(state).toEqual({
        ready: false,
        reason: 'StorageNotWritable',
        message: expect.stringContaining(
          `storage ${storage} is not writable by uid 65532 (gid 65532): EACCES: permission denied`,
        ),
      });

      const refused = await fetch(`${registry.url}/v2/ops/app/blobs/uploads/`, { method: 'POST' });
      expect(refused.status).toBe(503);
      expect(await refused.json()).toEqual({
        errors: [
          {
            code: 'UNAVAILABLE',
            message: 'registry storage is unavailable: StorageNotWritable',
            detail: { reason: 'StorageNotWritable' },
          },
        ],
      });

      // Past a probe period still failing: the problem is logged once, on the change.
      await new Promise((resolve) => setTimeout(resolve, 6_000));
      const logged = registry.daemon.output
        .split('\n')
        .filter((line) => line.includes('"msg":"storage not ready"'));
      expect(logged.map((line) => JSON.parse(line) as unknown)).toEqual([
        expect.objectContaining({
          level: 50,
          reason: 'StorageNotWritable',
          message: state.message,
        }),
      ]);
      expect(registry.daemon.running).toBe(true);

      await chown(storage, containerUser.uid, containerUser.gid);
      const fixed = Date.now();
      await waitFor(
        async () => (await fetch(`${registry.url}/readyz`)).status === 200,
        7_000,
        'readiness once storage is writable',
      );
      expect(Date.now() - fixed).toBeLessThan(6_000);
      expect(await (await fetch(`${registry.url}/readyz`)).json()).toEqual({ ready: true });
      expect(registry.daemon.output).toContain('"msg":"storage ready again"');

      const data = randomBytes(1024);
      const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      const pushed = await fetch(`${registry.url}/v2/ops/app/blobs/uploads/?digest=${digest}`, {
        method: 'POST',
        body: data,
      });
      expect(pushed.status).toBe(201);
      const blob = await fetch(`${registry.url}/v2/ops/app/blobs/${digest}`);
      expect(Buffer.from(await blob.arrayBuffer()).equals(data)).toBe(true);
    } finally {
      await registry.stop();
      await parent.remove();
    }
  });
});
