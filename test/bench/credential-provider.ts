/**
 * KEP-4412's two costs, on this machine:
 *
 * 1. The credential provider's cold answer: the kubelet starts a new process for every lookup it
 *    does not have cached, so each is a cold start. Timed from spawn to exit with the answer on
 *    stdout, through the launcher the DaemonSet installs (bundled loader, node and modules), next
 *    to `node dist/credential-provider/main.js` and `node -e 0` (node's own floor). Target: well
 *    under 300 ms.
 * 2. The registry's check of a ServiceAccount token, per request, against a real kube-apiserver:
 *    the signature check on cached keys alone, a first login (signature + TokenReview), and a
 *    repeated login within the review cache (5 s).
 *
 *   npm run build && node test/bench/credential-provider.ts
 *   (BENCH_ROUNDS: spawns per variant, 30 by default; BENCH_TOKENS: distinct tokens, 40)
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pino } from 'pino';
import { repositoryRoot } from '../support/cli.ts';
import { startControlPlane } from '../support/control-plane.ts';
import { run, temporaryDirectory } from '../support/processes.ts';
import { machineLine, median, roundsFromEnvironment } from './rounds.ts';
import { clusterGet } from '../../src/registry/auth/cluster-get.ts';
import { ServiceAccountIssuer } from '../../src/registry/auth/service-account-issuer.ts';
import { ServiceAccountAuthenticator } from '../../src/registry/auth/service-account-login.ts';
import { TokenReviewer } from '../../src/registry/auth/token-review.ts';
import { KubeClient } from '../../src/kube/client.ts';
import { connectionFromFile } from '../../src/kube/config.ts';

const rounds = roundsFromEnvironment(30);
const tokens = Number(process.env.BENCH_TOKENS ?? 40);
const audience = 'berth.dev/berth-system/main';

function percentile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))] as number;
}

function summary(values: number[], unit = 'ms', digits = 1): string {
  const f = (value: number) => value.toFixed(digits);
  return `median ${f(median(values))} ${unit}, p95 ${f(percentile(values, 0.95))} ${unit}, max ${f(Math.max(...values))} ${unit}`;
}

/** Milliseconds from spawn to exit; the process must exit 0 with `expect` in its stdout. */
function timedSpawn(
  command: string,
  args: string[],
  input: string,
  expect: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const millis = performance.now() - started;
      if (code !== 0 || !stdout.includes(expect))
        reject(new Error(`${command} exited ${code}: ${stdout}`));
      else resolve(millis);
    });
    // `node -e` never reads its stdin: the write may find the pipe closed.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

async function providerColdStart(work: string, token: string): Promise<void> {
  // The installer as the image runs it: from dist/, so the launcher runs the built modules.
  const built = join(repositoryRoot, 'dist', 'credential-provider', 'install-main.js');
  await run(process.execPath, [
    built,
    `--bin-dir=${join(work, 'bin')}`,
    `--config-file=${join(work, 'config.yaml')}`,
    '--host=localhost:5000',
    `--audience=${audience}`,
  ]);
  const request = JSON.stringify({
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    kind: 'CredentialProviderRequest',
    image: 'localhost:5000/team-a/web:1',
    serviceAccountToken: token,
  });
  const variants: [string, string, string[], string][] = [
    [
      'launcher (as the kubelet runs it)',
      join(work, 'bin', 'berth-credential-provider'),
      ['--host', 'localhost:5000'],
      'CredentialProviderResponse',
    ],
    [
      'node dist/credential-provider/main.js',
      process.execPath,
      [join(repositoryRoot, 'dist', 'credential-provider', 'main.js'), '--host', 'localhost:5000'],
      'CredentialProviderResponse',
    ],
    ['node -e 0 (floor)', process.execPath, ['-e', 'process.stdout.write("ok")'], 'ok'],
  ];
  const times = new Map<string, number[]>(variants.map(([name]) => [name, []]));
  // Interleaved, so a burst of load elsewhere hits every variant alike.
  for (let round = 0; round < rounds; round++)
    for (const [name, command, args, expect] of variants)
      times.get(name)?.push(await timedSpawn(command, args, request, expect));
  console.log(`provider cold answer, ${rounds} spawns each:`);
  for (const [name, values] of times) console.log(`  ${name.padEnd(40)} ${summary(values)}`);
}

async function tokenCheckCost(): Promise<string> {
  const cluster = await startControlPlane();
  try {
    const kubectl = (...args: string[]) => cluster.kubectl(args);
    await kubectl('create', 'namespace', 'team-b');
    const minted: string[] = [];
    for (let index = 0; index < tokens; index++) {
      const name = `puller-${index}`;
      await kubectl('create', 'serviceaccount', name, '-n', 'team-b');
      minted.push(
        (
          await kubectl('create', 'token', name, '-n', 'team-b', '--audience', audience)
        ).stdout.trim(),
      );
    }
    const connection = connectionFromFile(cluster.kubeconfig);
    const issuer = await ServiceAccountIssuer.discover(clusterGet(connection), audience);
    const authenticator = new ServiceAccountAuthenticator(
      issuer,
      new TokenReviewer(new KubeClient(connection), audience),
      pino({ level: 'silent' }),
    );
    const timed = async (work: () => Promise<unknown>): Promise<number> => {
      const started = performance.now();
      await work();
      return performance.now() - started;
    };
    await issuer.verify(minted[0] as string); // first use compiles the key
    const verify: number[] = [];
    for (let round = 0; round < 5; round++)
      for (const token of minted) verify.push(await timed(() => issuer.verify(token)));
    const first: number[] = [];
    for (const token of minted) {
      const login = await timed(async () => {
        if (!(await authenticator.logIn(token))) throw new Error('a minted token was refused');
      });
      first.push(login);
    }
    const repeated: number[] = [];
    for (const token of minted) repeated.push(await timed(() => authenticator.logIn(token)));
    console.log(
      `registry ServiceAccount token check, ${tokens} distinct tokens, real kube-apiserver:`,
    );
    console.log(`  signature, audience, expiry (cached keys)  ${summary(verify, 'ms', 3)}`);
    console.log(`  first login (signature + TokenReview)      ${summary(first, 'ms', 2)}`);
    console.log(`  repeated login (review cached 5 s)         ${summary(repeated, 'ms', 3)}`);
    return minted[0] as string;
  } finally {
    await cluster.stop();
  }
}

async function main(): Promise<void> {
  console.log(await machineLine());
  const work = await temporaryDirectory('bench-credential-provider');
  try {
    const token = await tokenCheckCost();
    await providerColdStart(work.path, token);
  } finally {
    await work.remove();
  }
}

await main();
