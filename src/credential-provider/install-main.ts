#!/usr/bin/env node
// The credential provider's installer, run by deploy/credential-provider's DaemonSet on every
// node: `node dist/credential-provider/install.js --bin-dir DIR --config-file FILE --host H
// [--host H...] --audience A [--cache-type Token|ServiceAccount] [--wait]`.
import { parseArgs } from 'node:util';
import { createLogger } from '../observability/logger.ts';
import { install, installOptionsSchema } from './install.ts';
import { zodIssues } from '../util/zod-issues.ts';

const usage = `usage: install-main --bin-dir DIR --config-file FILE --host HOST[:PORT] [--host ...]
  --audience AUDIENCE [--cache-type Token|ServiceAccount] [--wait]`;

const logger = createLogger('info', 'credential-provider-install');

function fail(message: string): never {
  process.stderr.write(`berth credential-provider install: ${message}\n${usage}\n`);
  process.exit(2);
}

let values;
try {
  values = parseArgs({
    args: process.argv.slice(2),
    options: {
      'bin-dir': { type: 'string' },
      'config-file': { type: 'string' },
      host: { type: 'string', multiple: true },
      audience: { type: 'string' },
      'cache-type': { type: 'string' },
      wait: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (error) {
  fail((error as Error).message);
}
const options = installOptionsSchema.safeParse({
  binDir: values['bin-dir'],
  configFile: values['config-file'],
  hosts: values.host ?? [],
  audience: values.audience,
  ...(values['cache-type'] !== undefined ? { cacheType: values['cache-type'] } : {}),
});
if (!options.success) fail(zodIssues(options.error).join('; '));

const installed = await install(options.data);
logger.info(
  { launcher: installed.launcher, runtime: installed.runtime, config: installed.configFile },
  'credential provider installed',
);
if (values.wait) {
  // A DaemonSet's container must keep running; what it installed stays when it stops.
  const timer = setInterval(() => undefined, 1 << 30);
  for (const signal of ['SIGTERM', 'SIGINT'] as const)
    process.once(signal, () => {
      clearInterval(timer);
      logger.info({ signal }, 'installer stopping');
    });
}
