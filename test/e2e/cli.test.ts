import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { berthCli } from '../support/cli.ts';
import {
  controlPlaneToolNames,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const berth = (args: string[]) =>
  run(process.execPath, [berthCli(), ...args], { allowFailure: true, timeoutMs: 60_000 });

/** A port something else holds, as a user's busy port would be. */
async function occupiedPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return { port: typeof address === 'object' && address ? address.port : 0, server };
}

/** `berth` as users run it, a process of its own: help, and one clear line for what they got wrong. */
describe('the berth command line', () => {
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;

  beforeAll(async () => {
    work = await temporaryDirectory('cli');
  });

  afterAll(async () => {
    await work?.remove();
  });

  it.each([
    [['--help']],
    [['-h']],
    [['operator', '--help']],
    [['registry', '--help']],
    [['node-proxy', '-h']],
    [['credential', '--help']],
    [['check', '--help']],
  ])('prints the usage for berth %j and exits 0', async (args) => {
    const result = await berth(args);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^usage: berth <command>/);
    expect(result.stdout).toContain('--metrics-listen');
  });

  it('still refuses an unknown flag, with the usage, exit 2', async () => {
    const result = await berth(['operator', '--bogus']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("berth: Unknown option '--bogus'");
  });

  it.each([
    ['a missing file', undefined, 'ENOENT'],
    ['a file that is not YAML', 'clusters: [\n', 'line 2'],
    ['YAML that is not a kubeconfig', 'clusters: 5\n', 'is not valid'],
  ])(
    'says in one line, exit 2, what is wrong with --kubeconfig naming %s',
    async (_label, content, detail) => {
      const file = join(work.path, `kubeconfig-${detail.replace(/\W/g, '')}`);
      if (content !== undefined) await writeFile(file, content);
      const result = await berth(['operator', '--image', 'berth:test', '--kubeconfig', file]);
      expect(result.code).toBe(2);
      const lines = result.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`berth: cannot use --kubeconfig ${file}: `);
      expect(lines[0]).toContain(detail);
    },
  );

  it('names --listen when the registry cannot listen', async () => {
    const { port, server } = await occupiedPort();
    try {
      const result = await berth([
        'registry',
        '--listen',
        `127.0.0.1:${port}`,
        '--storage-dir',
        join(work.path, 'data'),
        '--log-level',
        'silent',
      ]);
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toBe(
        `berth: cannot listen: listen EADDRINUSE: address already in use 127.0.0.1:${port}; choose another address with --listen`,
      );
    } finally {
      server.close();
    }
  });
});

describeWithTools(controlPlaneToolNames, 'berth operator on a real API server', () => {
  let cluster: ControlPlane;

  beforeAll(async () => {
    cluster = await startControlPlane();
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('names --metrics-listen, its own flag, when its metrics address is taken', async () => {
    const { port, server } = await occupiedPort();
    try {
      const result = await berth([
        'operator',
        '--image',
        'berth:test',
        '--kubeconfig',
        cluster.kubeconfig,
        '--metrics-listen',
        `127.0.0.1:${port}`,
        '--no-leader-elect',
        '--log-level',
        'silent',
      ]);
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toBe(
        `berth: cannot listen: listen EADDRINUSE: address already in use 127.0.0.1:${port}; choose another address with --metrics-listen`,
      );
    } finally {
      server.close();
    }
  });
});
