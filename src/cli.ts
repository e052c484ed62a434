#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadRegistryConfig, registryConfigSchema } from './config/registry.ts';
import { parseDuration } from './config/units.ts';
import { openTokenService } from './registry/auth/setup.ts';
import { createLogger } from './observability/logger.ts';
import { startRegistry } from './registry/server.ts';
import { checkConsistency } from './registry/service/consistency.ts';
import { FilesystemDriver } from './registry/storage/filesystem/driver.ts';

const usage = `usage: berth <command> [flags]

commands:
  registry     serve the OCI registry (standalone: filesystem storage, 127.0.0.1:5000)
  credential   print a namespace credential (the password of a pull secret), signed with the
               registry's key: --namespace NAME [--lifetime 720h] [--config FILE | --storage-dir DIR]
  check        verify a registry's storage: every link names existing content, every
               manifest's blobs are present (--storage-dir DIR [--verify-content])

registry flags:
  --config FILE        YAML configuration (see README.md)
  --listen HOST:PORT   address to listen on (default 127.0.0.1:5000)
  --storage-dir DIR    filesystem storage root (default ./data)
  --log-level LEVEL    fatal|error|warn|info|debug|trace|silent (default info)
  --policy FILE        turn on token authentication with this repository policy (YAML)
  --admin-password-file FILE   the admin's password (else $BERTH_ADMIN_PASSWORD)
`;

class UsageError extends Error {}

async function runRegistry(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: 'string' },
        listen: { type: 'string' },
        'storage-dir': { type: 'string' },
        'log-level': { type: 'string' },
        policy: { type: 'string' },
        'admin-password-file': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const config = await loadRegistryConfig({
    config: values.config,
    listen: values.listen,
    storageDir: values['storage-dir'],
    logLevel: values['log-level'],
    policy: values.policy,
    adminPasswordFile: values['admin-password-file'],
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
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        namespace: { type: 'string' },
        lifetime: { type: 'string' },
        config: { type: 'string' },
        'storage-dir': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
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

async function runCheck(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        'storage-dir': { type: 'string', default: './data' },
        'verify-content': { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const report = await checkConsistency(new FilesystemDriver(values['storage-dir']), {
    verifyContent: values['verify-content'],
  });
  for (const problem of report.problems) process.stdout.write(`problem: ${problem}\n`);
  process.stdout.write(
    `${report.repositories} repositories, ${report.manifests} manifests, ${report.blobs} blobs checked; ${report.problems.length} problems\n`,
  );
  if (report.problems.length > 0) process.exitCode = 1;
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'registry':
      return runRegistry(rest);
    case 'check':
      return runCheck(rest);
    case 'credential':
      return runCredential(rest);
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

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError) {
    process.stderr.write(`berth: ${error.message}\n\n${usage}`);
    process.exit(2);
  }
  if (error instanceof ConfigError) {
    process.stderr.write(`berth: ${error.message}\n`);
    process.exit(2);
  }
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE' || code === 'EACCES') {
    process.stderr.write(
      `berth: cannot listen: ${(error as Error).message}; choose another address with --listen\n`,
    );
    process.exit(1);
  }
  process.stderr.write(`berth: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
