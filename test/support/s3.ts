import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { S3Driver } from '../../src/registry/storage/s3/driver.ts';
import { Daemon, ExitedError, freePort, temporaryDirectory, waitFor } from './processes.ts';
import { startBerth, startDistribution, type RegistryProcess } from './registries.ts';
import { findTool } from './tools.ts';

/** The S3 server the tests use: versitygw (Apache-2.0) with its posix backend. */
export const s3Tool = 'versitygw';

export interface S3Server {
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** Environment for a process that talks to this server (credentials, no AWS_CA_BUNDLE). */
  readonly env: NodeJS.ProcessEnv;
  /** Creates an empty bucket and returns its name. */
  createBucket(): Promise<string>;
  /** Removes a bucket and everything in it, behind the server's back (a bench between rounds). */
  removeBucket(name: string): Promise<void>;
  /** A driver on `bucket`, as `berth registry` would build it. */
  driver(bucket: string, options?: { prefix?: string; partBytes?: number }): S3Driver;
  stop(): Promise<void>;
}

let buckets = 0;

/**
 * Starts versitygw on a loopback port over a fresh temporary directory (under `parent` when
 * given, e.g. /dev/shm), where a bucket is a directory. Stopping it removes the directory.
 * `keepAlive` keeps client connections open between requests, as AWS S3 does.
 */
export async function startS3Server(
  options: { parent?: string; keepAlive?: boolean } = {},
): Promise<S3Server> {
  const binary = findTool(s3Tool);
  if (!binary) throw new Error(`${s3Tool} is not installed; run test/tools/install.sh`);
  const directory = options.parent
    ? await (async () => {
        const path = await mkdtemp(join(options.parent as string, 'berth-s3-'));
        return { path, remove: () => rm(path, { recursive: true, force: true }) };
      })()
    : await temporaryDirectory('s3');
  const port = await freePort();
  const accessKeyId = 'berth-test';
  const secretAccessKey = 'berth-test-secret';
  const environment = {
    ...process.env,
    ROOT_ACCESS_KEY: accessKeyId,
    ROOT_SECRET_KEY: secretAccessKey,
  };
  const daemon = new Daemon(
    binary,
    [
      '--port',
      `127.0.0.1:${port}`,
      // versitygw closes every connection after one answer unless told otherwise; AWS S3 keeps
      // them open, and a client's cost per request depends on it.
      ...(options.keepAlive ? ['--keep-alive'] : []),
      'posix',
      directory.path,
    ],
    environment,
  );
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      async () => {
        if (!daemon.running) throw new ExitedError(`${s3Tool} exited: ${daemon.output}`);
        await fetch(endpoint);
        return true;
      },
      30_000,
      s3Tool,
    );
  } catch (error) {
    await daemon.stop('SIGKILL');
    await directory.remove();
    throw error;
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AWS_ACCESS_KEY_ID: accessKeyId,
    AWS_SECRET_ACCESS_KEY: secretAccessKey,
  };
  delete env.AWS_CA_BUNDLE;
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    env,
    async createBucket() {
      buckets += 1;
      const name = `bucket-${process.pid}-${buckets}`;
      await mkdir(join(directory.path, name));
      return name;
    },
    async removeBucket(name) {
      await rm(join(directory.path, name), { recursive: true, force: true });
    },
    driver(bucket, options = {}) {
      return new S3Driver({
        bucket,
        endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: () => ({ accessKeyId, secretAccessKey }),
        ...options,
      });
    },
    async stop() {
      await daemon.stop();
      await directory.remove();
    },
  };
}

/** Starts `berth registry` on `bucket` of `server`, configured through a config file. */
export async function startBerthOnS3(
  server: S3Server,
  bucket: string,
  options: { prefix?: string; extraArgs?: string[]; port?: number; built?: boolean } = {},
): Promise<RegistryProcess & { configFile: string; removeConfig: () => Promise<void> }> {
  const directory = await temporaryDirectory('s3-config');
  const configFile = join(directory.path, 'registry.yaml');
  await writeFile(
    configFile,
    JSON.stringify({
      storage: {
        s3: {
          bucket,
          endpoint: server.endpoint,
          region: 'us-east-1',
          forcePathStyle: true,
          ...(options.prefix ? { prefix: options.prefix } : {}),
        },
      },
    }),
  );
  const registry = await startBerth(undefined, {
    ...(options.port ? { port: options.port } : {}),
    ...(options.built ? { built: true } : {}),
    extraArgs: ['--config', configFile, ...(options.extraArgs ?? [])],
    env: server.env,
  });
  return { ...registry, configFile, removeConfig: directory.remove };
}

/** Starts CNCF distribution (Debian's docker-registry) on `bucket`, as registry:2 users run it. */
export async function startDistributionOnS3(
  server: S3Server,
  bucket: string,
  configDir: string,
  options: { prefix?: string } = {},
): Promise<RegistryProcess> {
  const settings = [
    `bucket: ${bucket}`,
    'region: us-east-1',
    `regionendpoint: "${server.endpoint}"`,
    'forcepathstyle: true',
    'secure: false',
    `accesskey: ${server.accessKeyId}`,
    `secretkey: ${server.secretAccessKey}`,
    ...(options.prefix ? [`rootdirectory: ${options.prefix}`] : []),
  ];
  return startDistribution(undefined, configDir, {
    yaml: [`  s3: {${settings.join(', ')}}`, '  redirect: {disable: true}'],
    // Its Go SDK fails on AWS_CA_BUNDLE with a plain-HTTP endpoint: server.env drops it.
    env: server.env,
  });
}
