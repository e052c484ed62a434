import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { repositoryRoot } from '../support/cli.ts';
import { run } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

interface PodSpec {
  containers: { command: string[]; args: string[]; securityContext: unknown }[];
  volumes: { hostPath: { path: string } }[];
  securityContext: unknown;
  automountServiceAccountToken: boolean;
}

describeWithTools(['helm'], 'the chart’s credential provider DaemonSet', (tools) => {
  const chart = join(repositoryRoot, 'deploy', 'helm', 'berth');
  const helm = (...args: string[]) =>
    run(tools.helm as string, args, { allowFailure: true, timeoutMs: 60_000 });

  it('renders nothing unless enabled', async () => {
    const rendered = await helm('template', 't', chart, '-n', 'berth-system');
    expect(rendered.code).toBe(0);
    expect(rendered.stdout).not.toMatch(/berth-credential-provider/);
  });

  it('renders deploy/credential-provider’s DaemonSet, with the hosts and audience of the values', async () => {
    const rendered = await helm(
      'template',
      't',
      chart,
      '-n',
      'berth-system',
      '--set',
      'credentialProvider.enabled=true',
      '--set',
      'credentialProvider.hosts={localhost:5001}',
      '--set',
      'credentialProvider.audience=berth.dev/images/edge',
      '--show-only',
      'templates/credential-provider.yaml',
    );
    // helm notes the chart's files/crds symlink on stderr; the render itself must succeed.
    expect(rendered.code).toBe(0);
    const [daemonSet] = parseAllDocuments(rendered.stdout).map(
      (document) => document.toJS() as { spec: { template: { spec: PodSpec } } },
    );
    const shipped = parse(
      await readFile(
        join(repositoryRoot, 'deploy', 'credential-provider', 'daemonset.yaml'),
        'utf8',
      ),
    ) as { spec: { template: { spec: PodSpec } } };
    const pod = daemonSet?.spec.template.spec as PodSpec;
    const plain = shipped.spec.template.spec;
    expect(pod.containers[0]?.command).toEqual(plain.containers[0]?.command);
    expect(pod.containers[0]?.securityContext).toEqual(plain.containers[0]?.securityContext);
    expect(pod.securityContext).toEqual(plain.securityContext);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.volumes[0]?.hostPath.path).toBe(plain.volumes[0]?.hostPath.path);
    expect(pod.containers[0]?.args).toEqual([
      '--bin-dir=/host/bin',
      '--config-file=/host/credential-provider-config.yaml',
      '--host=localhost:5001',
      '--audience=berth.dev/images/edge',
      '--cache-type=Token',
      '--wait',
    ]);
  });

  it('refuses to render without an audience or a host, and a cache type the kubelet lacks', async () => {
    const noAudience = await helm(
      'template',
      't',
      chart,
      '--set',
      'credentialProvider.enabled=true',
      '--set',
      'credentialProvider.audience=',
    );
    expect(noAudience.code).not.toBe(0);
    expect(noAudience.stderr).toMatch(
      /credentialProvider\.audience: the Registry's token audience/,
    );
    const badCache = await helm(
      'template',
      't',
      chart,
      '--set',
      'credentialProvider.cacheType=Image',
    );
    expect(badCache.code).not.toBe(0);
    expect(badCache.stderr).toMatch(/cacheType/);
  });
});
