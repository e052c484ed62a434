/**
 * Starts the test cluster by hand and keeps it until Ctrl-C (or SIGTERM), for exploring and
 * debugging: `npm run cluster`. Prints how to reach it; removes everything when stopped.
 */
import { startCluster } from './cluster.ts';

const cluster = await startCluster();
const enter = `nsenter --net=${cluster.network.path}`;
process.stdout.write(
  [
    `cluster up in ${cluster.root}`,
    `kubectl: ${enter} kubectl --kubeconfig ${cluster.kubeconfig} get nodes`,
    `shell on the node: ${enter} bash`,
    'Ctrl-C stops it and removes everything',
    '',
  ].join('\n'),
);
const stop = (): void => {
  cluster.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`teardown failed: ${String(error)}\n`);
      process.exit(1);
    },
  );
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
