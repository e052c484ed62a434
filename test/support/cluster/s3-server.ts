import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Daemon, ExitedError, waitFor } from '../processes.ts';
import { s3Tool } from '../s3.ts';
import { findTool } from '../tools.ts';
import type { Cluster } from './cluster.ts';
import { clusterNetwork } from './node-config.ts';

/** An S3 server on the cluster's node, reachable from pods at the node's address. */
export interface NodeS3Server {
  /** `http://<node IP>:<port>`: what a Registry's storage.s3.endpoint names. */
  readonly endpoint: string;
  readonly bucket: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** The server's last output lines, for failure messages. */
  output(): string;
  /** Kills the server; its data stays under the cluster's root, which teardown removes. */
  stop(): Promise<void>;
}

/**
 * Starts versitygw (posix backend) inside the cluster's network namespace, listening on the node
 * IP, with its data under `<cluster root>/s3` and one empty bucket.
 */
export async function startNodeS3Server(
  cluster: Cluster,
  options: { port?: number; bucket?: string } = {},
): Promise<NodeS3Server> {
  const binary = findTool(s3Tool);
  if (!binary) throw new Error(`${s3Tool} is not installed; run test/tools/install.sh`);
  const port = options.port ?? 7070;
  const bucket = options.bucket ?? 'images';
  const data = join(cluster.root, 's3');
  await mkdir(join(data, bucket), { recursive: true });
  const accessKeyId = 'berth-cluster';
  const secretAccessKey = 'berth-cluster-secret';
  const address = `${clusterNetwork.nodeIp}:${port}`;
  // --keep-alive: registry pods keep their S3 connections open, as they would with AWS S3.
  const [command, args] = cluster.network.wrap(binary, [
    '--port',
    address,
    '--keep-alive',
    'posix',
    data,
  ]);
  const daemon = new Daemon(command, args, {
    ...process.env,
    ROOT_ACCESS_KEY: accessKeyId,
    ROOT_SECRET_KEY: secretAccessKey,
  });
  const endpoint = `http://${address}`;
  try {
    // The address exists only inside the namespace: probe from there.
    await waitFor(
      async () => {
        if (!daemon.running) throw new ExitedError(`${s3Tool} exited: ${daemon.output}`);
        const probe = await cluster.onNode('curl', ['-s', '-o', '/dev/null', endpoint], {
          allowFailure: true,
          timeoutMs: 5000,
        });
        return probe.code === 0;
      },
      30_000,
      `${s3Tool} on ${address}`,
    );
  } catch (error) {
    await daemon.stop('SIGKILL');
    throw error;
  }
  return {
    endpoint,
    bucket,
    accessKeyId,
    secretAccessKey,
    output: () => daemon.output.slice(-3000),
    async stop() {
      await daemon.stop('SIGKILL');
    },
  };
}
