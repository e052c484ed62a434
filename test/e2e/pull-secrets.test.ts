import { stringify } from 'yaml';
import {
  controlPlaneToolNames,
  startControlPlane,
  type ControlPlane,
} from '../support/control-plane.ts';
import { installBerth, operatorKubeconfig, startOperatorProcess } from '../support/operator.ts';
import { Daemon, temporaryDirectory, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const secretName = 'berth-pull.berth-system.main';

/**
 * The pull-secret controller on a real API server at the edges of what the CRD admits: it
 * rewrites a pull Secret only when the credential is due, never in a loop.
 */
describeWithTools(controlPlaneToolNames, 'pull secrets on a real API server', () => {
  let cluster: ControlPlane;
  let work: Awaited<ReturnType<typeof temporaryDirectory>>;
  let operator: Daemon | undefined;

  beforeAll(async () => {
    cluster = await startControlPlane();
    work = await temporaryDirectory('pull-secrets');
    await installBerth(cluster);
    operator = startOperatorProcess(await operatorKubeconfig(cluster, work.path), [
      '--no-leader-elect',
    ]);
    await cluster.kubectl(['create', 'namespace', 'team-a']);
  });

  afterAll(async () => {
    await operator?.stop();
    await cluster?.stop();
    await work?.remove();
  });

  it('issues once and rotates once at two thirds of the shortest credentialLifetime, even when two endpoints are one host', async () => {
    // externalURL names the node proxy's own host: the Secret holds one entry for both.
    await cluster.kubectl(['apply', '-f', '-'], {
      input: [
        {
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Registry',
          metadata: { name: 'main', namespace: 'berth-system' },
          spec: {
            externalURL: 'https://localhost:5000',
            auth: { credentialLifetime: '60s', tokenTTL: '30s' },
          },
        },
        {
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Repository',
          metadata: { name: 'web', namespace: 'team-a' },
          spec: { registry: { name: 'main', namespace: 'berth-system' } },
        },
      ]
        .map((object) => stringify(object))
        .join('---\n'),
    });

    const versions: string[] = [];
    const record = async (): Promise<void> => {
      const result = await cluster.kubectl(
        ['get', 'secret', secretName, '-n', 'team-a', '-o', 'jsonpath={.metadata.resourceVersion}'],
        { allowFailure: true },
      );
      const version = result.code === 0 ? result.stdout.trim() : '';
      if (version && versions.at(-1) !== version) versions.push(version);
    };
    await waitFor(
      async () => {
        await record();
        return versions.length > 0;
      },
      60_000,
      `the pull Secret (operator: ${operator?.output ?? ''})`,
    );
    const issued = Date.now();
    // 45 s: past the rotation at 40 s, short of the next one at 80 s.
    while (Date.now() - issued < 45_000) {
      await record();
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect({ writes: versions.length }).toEqual({ writes: 2 });
  });
});
