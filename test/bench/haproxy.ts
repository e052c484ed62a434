import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Daemon, ExitedError, freePort, waitFor } from '../support/processes.ts';

/**
 * HAProxy (Debian's) in front of registry replicas, round robin per request, as a Service or an
 * ingress in front of a Deployment would spread them. The benches use it rather than the tests'
 * Node balancer (test/support/round-robin.ts), which costs more CPU than a replica and on two
 * cores would measure itself. One thread, keep-alive to clients and to the replicas.
 */
export async function startHaproxy(
  backends: readonly string[],
  directory: string,
): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const config = join(directory, `haproxy-${port}.cfg`);
  await writeFile(
    config,
    [
      'global',
      '  nbthread 1',
      '  maxconn 1024',
      'defaults',
      '  mode http',
      '  timeout connect 5s',
      '  timeout client 120s',
      '  timeout server 120s',
      'frontend registry',
      `  bind 127.0.0.1:${port}`,
      '  default_backend replicas',
      'backend replicas',
      '  balance roundrobin',
      '  http-reuse always',
      ...backends.map((backend, index) => `  server replica${index} ${backend}`),
      '',
    ].join('\n'),
  );
  const daemon = new Daemon('haproxy', ['-db', '-f', config], process.env);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (!daemon.running) throw new ExitedError(`haproxy exited: ${daemon.output}`);
      return (await fetch(`${url}/v2/`)).status > 0;
    },
    10_000,
    'haproxy to listen',
  );
  return {
    url,
    stop: async () => {
      await daemon.stop();
    },
  };
}
