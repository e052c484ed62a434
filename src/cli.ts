#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from './config/error.ts';
import type { KubeClient } from './kube/client.ts';
import { firstZodIssue } from './util/zod-issues.ts';

// Each command loads its own modules when it runs: `berth credential-provider` is started by the
// kubelet for every pull it has no cached answer for, and must not pay for the registry's,
// the operator's or the kube client's modules (some 300 ms).
const usage = `usage: berth <command> [flags]     (berth <command> --help prints this)

commands:
  registry     serve the OCI registry (standalone: filesystem storage, 127.0.0.1:5000)
  operator     run the controller for Registry resources: [--image IMAGE] [--kubeconfig FILE]
               [--namespace berth-system] [--metrics-listen 127.0.0.1:8080] [--no-leader-elect]
               [--lease-duration 15s] [--log-level info]; without --image or $BERTH_IMAGE,
               registry pods run the image of the operator's own Pod ($POD_NAMESPACE/$POD_NAME)
  node-proxy   serve the registry on this node's loopback with a blob cache: --listen HOST:PORT
               --upstream URL [--tls-server-name NAME] [--ca-file FILE] [--cache-dir DIR]
               [--cache-size 10Gi] [--log-level info]
  credential   print a namespace credential (the password of a pull secret), signed with the
               registry's key: --namespace NAME [--lifetime 720h] [--config FILE | --storage-dir DIR]
  credential-provider   a kubelet image credential provider: answers a CredentialProviderRequest
               on stdin with the pod's ServiceAccount token for --host HOST[:PORT] (repeatable)
  check        verify a registry's storage: every link names existing content, every
               manifest's blobs are present (--config FILE | --storage-dir DIR [--verify-content])
  gc           remove unreferenced blobs (and, with gc.untagged: delete, untagged manifests) older
               than gc.gracePeriod, and the tags the policy file's retention gives up, printing
               each; safe while registries serve the storage
               (--config FILE | --storage-dir DIR [--dry-run: print, remove nothing])

registry flags:
  --config FILE        YAML configuration (see README.md)
  --listen HOST:PORT   address to listen on (default 127.0.0.1:5000)
  --storage-dir DIR    filesystem storage root (default ./data)
  --log-level LEVEL    fatal|error|warn|info|debug|trace|silent (default info)
  --policy FILE        turn on token authentication with this repository policy (YAML)
  --admin-password-file FILE   the admin's password (else $BERTH_ADMIN_PASSWORD)
  --tls-cert FILE --tls-key FILE   serve HTTPS with this PEM certificate and key
`;

class UsageError extends Error {}

/** `--help` or `-h` among a command's flags: the usage goes to stdout and berth exits 0. */
class HelpRequested extends Error {}

/**
 * Flags only, strictly: an unknown or malformed flag is a usage error with parseArgs' message.
 * Every command also takes `--help`.
 */
function parseFlags<const T extends ParseArgsConfig['options']>(
  args: string[],
  options: T,
): ReturnType<
  typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: false }>
>['values'] {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) throw new HelpRequested();
  delete values.help;
  return values as ReturnType<
    typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: false }>
  >['values'];
}

/** The first line of an error's message: a YAML error goes on with a code frame. */
function firstLine(error: unknown): string {
  return ((error as Error).message ?? String(error)).split('\n')[0]?.replace(/:$/, '') ?? '';
}

/** The cluster the operator talks to; an unusable kubeconfig is one line, not a stack trace. */
async function kubeClient(kubeconfig: string | undefined): Promise<KubeClient> {
  const { KubeClient } = await import('./kube/client.ts');
  try {
    return kubeconfig ? KubeClient.fromFile(kubeconfig) : KubeClient.fromDefault();
  } catch (error) {
    throw new ConfigError(
      kubeconfig
        ? `cannot use --kubeconfig ${kubeconfig}: ${firstLine(error)}`
        : `cannot find the cluster: ${firstLine(error)}; name a kubeconfig with --kubeconfig FILE`,
    );
  }
}

/** The flag that sets the address each server command listens on. */
const listenFlags: Record<string, string> = {
  registry: '--listen',
  'node-proxy': '--listen',
  operator: '--metrics-listen',
};

async function runRegistry(args: string[]): Promise<void> {
  const { loadRegistryConfig } = await import('./config/registry.ts');
  const { createLogger } = await import('./observability/logger.ts');
  const { startRegistry } = await import('./registry/server.ts');
  const values = parseFlags(args, {
    config: { type: 'string' },
    listen: { type: 'string' },
    'storage-dir': { type: 'string' },
    'log-level': { type: 'string' },
    policy: { type: 'string' },
    'admin-password-file': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  });
  const config = await loadRegistryConfig({
    config: values.config,
    listen: values.listen,
    storageDir: values['storage-dir'],
    logLevel: values['log-level'],
    policy: values.policy,
    adminPasswordFile: values['admin-password-file'],
    tlsCertificate: values['tls-cert'],
    tlsKey: values['tls-key'],
  });
  const logger = createLogger(config.log.level, 'berth-registry');
  const registry = await startRegistry(config, logger);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'shutdown requested');
      void registry.stop().then(() => process.exit(0));
    });
  }
}

async function runCredential(args: string[]): Promise<void> {
  const { loadRegistryConfig, registryConfigSchema } = await import('./config/registry.ts');
  const { parseDuration } = await import('./config/units.ts');
  const { openTokenService } = await import('./registry/auth/setup.ts');
  const values = parseFlags(args, {
    namespace: { type: 'string' },
    lifetime: { type: 'string' },
    config: { type: 'string' },
    'storage-dir': { type: 'string' },
  });
  if (!values.namespace) throw new UsageError('credential needs --namespace NAME');
  const config = await loadRegistryConfig({
    config: values.config,
    storageDir: values['storage-dir'],
  });
  const auth = config.auth ?? registryConfigSchema.shape.auth.unwrap().parse({});
  const lifetime =
    values.lifetime === undefined ? auth.credentialLifetime : parseDuration(values.lifetime);
  if (lifetime === undefined)
    throw new UsageError(`--lifetime ${values.lifetime} is not a duration; write e.g. 720h`);
  if (lifetime > auth.credentialLifetime) {
    throw new UsageError(
      `--lifetime ${values.lifetime} is longer than auth.credentialLifetime; retired keys verify only that long`,
    );
  }
  const { tokens } = await openTokenService(config, auth, false);
  process.stdout.write(`${await tokens.issueCredential(values.namespace, lifetime)}\n`);
}

async function runOperator(args: string[]): Promise<void> {
  const { hostname } = await import('node:os');
  const { randomUUID } = await import('node:crypto');
  const { parseDuration } = await import('./config/units.ts');
  const { createLogger } = await import('./observability/logger.ts');
  const { startOperator } = await import('./operator/operator.ts');
  const { imageOfOwnPod } = await import('./operator/own-image.ts');
  const values = parseFlags(args, {
    image: { type: 'string' },
    namespace: { type: 'string', default: process.env.POD_NAMESPACE ?? 'berth-system' },
    kubeconfig: { type: 'string' },
    'metrics-listen': { type: 'string', default: '127.0.0.1:8080' },
    'no-leader-elect': { type: 'boolean', default: false },
    'lease-duration': { type: 'string', default: '15s' },
    'log-level': { type: 'string', default: 'info' },
  });
  const ownPod =
    process.env.POD_NAMESPACE && process.env.POD_NAME
      ? { namespace: process.env.POD_NAMESPACE, name: process.env.POD_NAME }
      : undefined;
  const imageSource = values.image ?? process.env.BERTH_IMAGE ?? ownPod;
  if (!imageSource)
    throw new UsageError(
      'operator needs the image registry pods run: --image, $BERTH_IMAGE, or $POD_NAME and $POD_NAMESPACE (the downward API) to read it from its own Pod',
    );
  const metrics = /^(.*):(\d+)$/.exec(values['metrics-listen']);
  if (!metrics)
    throw new UsageError(`--metrics-listen ${values['metrics-listen']} is not host:port`);
  const lease = parseDuration(values['lease-duration']);
  if (lease === undefined)
    throw new UsageError(`--lease-duration ${values['lease-duration']} is not a duration`);
  const logger = createLogger(values['log-level'], 'berth-operator');
  const client = await kubeClient(values.kubeconfig);
  const image =
    typeof imageSource === 'string' ? imageSource : await imageOfOwnPod(client, imageSource);
  logger.info({ image, fromOwnPod: typeof imageSource !== 'string' }, 'registry image chosen');
  const operator = await startOperator(
    client,
    {
      image,
      namespace: values.namespace,
      identity: `${process.env.POD_NAME ?? hostname()}-${randomUUID().slice(0, 8)}`,
      leaderElection: !values['no-leader-elect'],
      leaseDurationSeconds: Math.max(1, Math.round(lease / 1000)),
      metrics: { host: metrics[1] || '0.0.0.0', port: Number(metrics[2]) },
    },
    logger,
  );
  logger.info({ metrics: operator.metricsAddress }, 'operator started');
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'shutdown requested');
      void operator.stop().then(() => process.exit(0));
    });
  }
}

async function runNodeProxy(args: string[]): Promise<void> {
  const { nodeProxyConfigSchema } = await import('./config/node-proxy.ts');
  const { createLogger } = await import('./observability/logger.ts');
  const { startNodeProxy } = await import('./node-proxy/server.ts');
  const values = parseFlags(args, {
    listen: { type: 'string', default: '127.0.0.1:5000' },
    upstream: { type: 'string' },
    'tls-server-name': { type: 'string' },
    'ca-file': { type: 'string' },
    'cache-dir': { type: 'string', default: './node-proxy-cache' },
    'cache-size': { type: 'string', default: '10Gi' },
    'log-level': { type: 'string', default: 'info' },
  });
  if (!values.upstream)
    throw new UsageError('node-proxy needs --upstream, the registry URL (https://host:port)');
  const parsed = nodeProxyConfigSchema.safeParse({
    listen: values.listen,
    upstream: values.upstream,
    tlsServerName: values['tls-server-name'],
    caFile: values['ca-file'],
    cacheDirectory: values['cache-dir'],
    cacheSize: values['cache-size'],
    logLevel: values['log-level'],
  });
  if (!parsed.success) {
    throw new UsageError(`node-proxy: ${firstZodIssue(parsed.error)}`);
  }
  const logger = createLogger(parsed.data.logLevel, 'berth-node-proxy');
  const proxy = await startNodeProxy(parsed.data, logger);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'shutdown requested');
      void proxy.stop().then(() => process.exit(0));
    });
  }
}

async function runCheck(args: string[]): Promise<void> {
  const { loadRegistryConfig } = await import('./config/registry.ts');
  const { checkConsistency } = await import('./registry/service/consistency.ts');
  const { openStorage } = await import('./registry/storage/open.ts');
  const values = parseFlags(args, {
    config: { type: 'string' },
    'storage-dir': { type: 'string' },
    'verify-content': { type: 'boolean', default: false },
  });
  // The registry's own config file names its storage (S3 included); --storage-dir overrides it.
  const config = await loadRegistryConfig({
    config: values.config,
    storageDir: values['storage-dir'],
  });
  const report = await checkConsistency(openStorage(config.storage), {
    verifyContent: values['verify-content'],
  });
  for (const problem of report.problems) process.stdout.write(`problem: ${problem}\n`);
  process.stdout.write(
    `${report.repositories} repositories, ${report.manifests} manifests, ${report.blobs} blobs checked; ${report.problems.length} problems\n`,
  );
  if (report.problems.length > 0) process.exitCode = 1;
}

async function runGc(args: string[]): Promise<void> {
  const { loadRegistryConfig, gcConfigSchema } = await import('./config/registry.ts');
  const { openStorage } = await import('./registry/storage/open.ts');
  const { createRegistryServices } = await import('./registry/services.ts');
  const { runCollection } = await import('./registry/gc/run.ts');
  const values = parseFlags(args, {
    config: { type: 'string' },
    'storage-dir': { type: 'string' },
    'dry-run': { type: 'boolean', default: false },
  });
  const config = await loadRegistryConfig({
    config: values.config,
    storageDir: values['storage-dir'],
  });
  const services = createRegistryServices(openStorage(config.storage), config);
  const dryRun = values['dry-run'];
  // Retention and immutable tags come from the policy file; Repository objects (Kubernetes
  // mode) are applied by the registry's scheduled collector, which watches them.
  const policyFile = config.auth?.policyFile;
  if (config.auth?.kubernetes) {
    process.stderr.write(
      'berth: retention of Repository objects is applied by the registry (gc in its config); this run keeps every tag\n',
    );
  }
  const policy =
    policyFile && !config.auth?.kubernetes
      ? await (
          await import('./policy/source.ts')
        ).loadPolicyFile(policyFile, { anonymousPull: config.auth?.anonymousPull ?? true })
      : undefined;
  const outcome = await runCollection(
    services.driver,
    services.manifests,
    config.gc ?? gcConfigSchema.parse({}),
    { dryRun, policy },
  );
  if (outcome.result === 'skipped') {
    process.stderr.write('berth: another collector holds the lease on this storage; try later\n');
    process.exitCode = 1;
    return;
  }
  const { report } = outcome;
  const verb = dryRun ? 'would remove' : 'removed';
  for (const { repository, tag, digest } of report.removedTags)
    process.stdout.write(`${verb} tag ${repository}:${tag} ${digest}\n`);
  for (const { repository, digest } of report.removedManifests)
    process.stdout.write(`${verb} manifest ${repository}@${digest}\n`);
  for (const { repository, digest } of report.removedLinks)
    process.stdout.write(`${verb} link ${repository} ${digest}\n`);
  for (const { digest, size } of report.removedBlobs)
    process.stdout.write(`${verb} blob ${digest} ${size}\n`);
  process.stdout.write(
    `${report.removedTags.length} tags, ${report.removedManifests.length} manifests, ${report.removedLinks.length} links, ${report.removedBlobs.length} blobs (${report.bytesFreed} bytes) ${verb}; ${report.restored} restored\n`,
  );
}

async function runCredentialProvider(args: string[]): Promise<void> {
  const { runCredentialProvider: run } = await import('./credential-provider/command.ts');
  process.exitCode = await run(args, {
    stdin: process.stdin,
    write: (text) => process.stdout.write(text),
    error: (text) => process.stderr.write(text),
  });
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'registry':
      return runRegistry(rest);
    case 'check':
      return runCheck(rest);
    case 'gc':
      return runGc(rest);
    case 'operator':
      return runOperator(rest);
    case 'credential':
      return runCredential(rest);
    case 'node-proxy':
      return runNodeProxy(rest);
    case 'credential-provider':
      return runCredentialProvider(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(usage);
      return;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

const argv = process.argv.slice(2);
main(argv).catch((error: unknown) => {
  if (error instanceof HelpRequested) {
    process.stdout.write(usage);
    process.exit(0);
  }
  if (error instanceof UsageError) {
    process.stderr.write(`berth: ${error.message}\n\n${usage}`);
    process.exit(2);
  }
  if (error instanceof ConfigError) {
    process.stderr.write(`berth: ${error.message}\n`);
    process.exit(2);
  }
  // Only a server's own listen fails this way; a storage path it cannot open is another error.
  if ((error as NodeJS.ErrnoException).syscall === 'listen') {
    const flag = listenFlags[argv[0] ?? ''] ?? '--listen';
    process.stderr.write(
      `berth: cannot listen: ${(error as Error).message}; choose another address with ${flag}\n`,
    );
    process.exit(1);
  }
  process.stderr.write(`berth: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
