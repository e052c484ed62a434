import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments, stringify } from 'yaml';
import { repositoryRoot } from '../support/cli.ts';
import {
  clusterLayout,
  clusterToolNames,
  removeStaleClusters,
  startCluster,
  type Cluster,
} from '../support/cluster/cluster.ts';
import { importBerthImage, restrictedPodSpec } from '../support/cluster/berth-image.ts';
import { leftovers } from '../support/cluster/teardown.ts';
import { run, waitFor } from '../support/processes.ts';
import { describeWithTools } from '../support/tools.ts';

const exec = promisify(execFile);
const namespace = 'berth-system';
const chart = join(repositoryRoot, 'deploy', 'helm', 'berth');
const pushedImage = 'localhost:5000/team-a/web:1';
/** The shortest lifetime the CRD admits: renewals every 200 s. */
const certificateLifetime = '5m';

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}
interface Pod extends KubeObject {
  spec: { containers: { image: string }[] };
  status: {
    phase: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { restartCount: number; ready: boolean }[];
  };
}

const keyOf = (object: KubeObject) =>
  `${object.kind} ${object.metadata.namespace ?? ''}/${object.metadata.name}`;

/**
 * What must be the same whichever way Berth is installed: for RBAC its rules, role references
 * and subjects, for CRDs their names and schemas, for the operator its pod spec (replicas,
 * account, containers' images, arguments, ports, probes, security). Labels are not compared:
 * Helm adds its own.
 */
function essence(object: KubeObject): unknown {
  const pick = (...fields: string[]) =>
    Object.fromEntries(fields.map((field) => [field, object[field]]));
  switch (object.kind) {
    case 'ClusterRole':
    case 'Role':
      // No rules, whether left out (as written) or null (as the API server returns it).
      return { rules: object.rules ?? [] };
    case 'ClusterRoleBinding':
    case 'RoleBinding':
      return pick('roleRef', 'subjects');
    case 'CustomResourceDefinition': {
      const spec = object.spec as {
        group: string;
        names: unknown;
        scope: string;
        versions: { name: string; served: boolean; storage: boolean; schema: unknown }[];
      };
      return {
        group: spec.group,
        names: spec.names,
        scope: spec.scope,
        versions: spec.versions.map(({ name, served, storage, schema }) => ({
          name,
          served,
          storage,
          schema,
        })),
      };
    }
    case 'Deployment': {
      const spec = object.spec as {
        replicas: number;
        template: {
          spec: {
            serviceAccountName: string;
            securityContext: unknown;
            containers: Record<string, unknown>[];
          };
        };
      };
      const pod = spec.template.spec;
      return {
        replicas: spec.replicas,
        serviceAccountName: pod.serviceAccountName,
        securityContext: pod.securityContext,
        containers: pod.containers.map((container) => ({
          name: container.name,
          image: container.image,
          args: container.args,
          ports: container.ports,
          securityContext: container.securityContext,
          readinessProbe: container.readinessProbe,
          livenessProbe: container.livenessProbe,
        })),
      };
    }
    default:
      return {};
  }
}

/**
 * The Helm chart and certificate renewal on a real cluster: `helm install` gives what
 * `kubectl apply -k deploy/` gives, a Registry becomes Ready and a pod pulls through the node
 * proxy, `helm upgrade` rolls the operator, and with a five-minute serving certificate the pulls
 * through the node proxy keep working across two renewals without a pod restart.
 */
describeWithTools(
  [...clusterToolNames, 'crane', 'helm'],
  'Helm chart and certificate renewal on a real cluster',
  () => {
    let cluster: Cluster;
    let work: string;
    const kubectl = (...args: string[]) => cluster.kubectl(args);
    const json = async <T>(...args: string[]): Promise<T> =>
      JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
    // In the cluster's network namespace, where its API server is, as kubectl runs.
    const helm = (...args: string[]) =>
      cluster.onNode('helm', [...args, '--kubeconfig', cluster.kubeconfig], {
        timeoutMs: 240_000,
      });
    const pods = async (selector: string, inNamespace = namespace): Promise<Pod[]> =>
      (await json<{ items: Pod[] }>('get', 'pods', '-n', inNamespace, '-l', selector)).items;
    const ready = (pod: Pod) =>
      pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    const secretData = async (name: string, key: string) => {
      const secret = await json<{ data: Record<string, string> }>(
        'get',
        'secret',
        name,
        '-n',
        namespace,
      );
      return Buffer.from(secret.data[key] ?? '', 'base64').toString();
    };
    const crane = async (args: string[], credentials?: { username: string; password: string }) => {
      const config = join(work, `docker-${credentials?.username ?? 'anonymous'}`);
      await mkdir(config, { recursive: true });
      const env = { ...process.env, DOCKER_CONFIG: config };
      if (credentials)
        await cluster.onNode(
          'crane',
          [
            'auth',
            'login',
            'localhost:5000',
            '-u',
            credentials.username,
            '-p',
            credentials.password,
          ],
          { env },
        );
      return cluster.onNode('crane', ['--insecure', ...args], { env, allowFailure: true });
    };

    /**
     * The certificate a new TLS connection to the registry Service is shown, verified by
     * Python's default TLS context (plus X509_STRICT, Python 3.13's default) with `caFile` for
     * the Service's DNS name: its SHA-256 fingerprint, or the error.
     */
    const servedFingerprint = async (clusterIP: string, caFile: string) => {
      const script = [
        'import hashlib, socket, ssl, sys',
        'ctx = ssl.create_default_context(cafile=sys.argv[3])',
        'ctx.verify_flags |= ssl.VERIFY_X509_STRICT',
        'with socket.create_connection((sys.argv[1], 5000), timeout=10) as raw:',
        '    with ctx.wrap_socket(raw, server_hostname=sys.argv[2]) as tls:',
        '        print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())',
      ].join('\n');
      const result = await cluster.onNode(
        '/usr/bin/python3',
        ['-c', script, clusterIP, `berth-main.${namespace}.svc`, caFile],
        { allowFailure: true },
      );
      return result.code === 0 ? result.stdout.trim() : `error: ${result.stderr.trim()}`;
    };

    beforeAll(async () => {
      cluster = await startCluster();
      work = join(cluster.root, 'test-helm');
      await mkdir(work, { recursive: true });
      // The image as `npm run image` builds it: berth:<version>, what the chart's default
      // values (image berth, tag = appVersion) name.
      await importBerthImage(cluster);
    }, 900_000);

    afterAll(async () => {
      if (!cluster) return;
      cluster.abandon();
      await removeStaleClusters();
      expect(await leftovers(clusterLayout(cluster.network.name), cluster.network.name)).toEqual(
        [],
      );
    }, 180_000);

    it('helm install with default values: the pods, RBAC and CRDs of kubectl apply -k deploy/', async () => {
      await helm('install', 'berth', chart, '-n', namespace, '--create-namespace', '--wait');
      const kustomized = parseAllDocuments(
        (await kubectl('kustomize', join(repositoryRoot, 'deploy'))).stdout,
      )
        .map((document) => document.toJS() as KubeObject)
        // The release's namespace: helm install --create-namespace makes it, unlabelled.
        .filter((object) => object.kind !== 'Namespace');
      const released = parseAllDocuments(
        (await helm('get', 'manifest', 'berth', '-n', namespace)).stdout,
      )
        .map((document) => document.toJS() as KubeObject | null)
        .filter((object): object is KubeObject => object !== null);
      expect(released.map(keyOf).sort()).toEqual(kustomized.map(keyOf).sort());
      for (const expected of kustomized) {
        const live = await json<KubeObject>(
          'get',
          expected.kind,
          expected.metadata.name,
          ...(expected.metadata.namespace ? ['-n', expected.metadata.namespace] : []),
        );
        if (expected.kind === 'Deployment')
          // The API server fills in the defaults (probe periods, port protocols) on both ways
          // alike; helm-chart.test.ts compares the rendered manifests field for field.
          expect([keyOf(expected), essence(live)]).toMatchObject([
            keyOf(expected),
            essence(expected),
          ]);
        else expect([keyOf(expected), essence(live)]).toEqual([keyOf(expected), essence(expected)]);
      }
      const operators = await pods('app.kubernetes.io/component=operator');
      expect(operators.filter(ready)).toHaveLength(2);
    }, 300_000);

    let registryPods: Pod[] = [];
    let nodeProxyPods: Pod[] = [];
    let clusterIP = '';
    const pullFailures: string[] = [];
    let pulls = 0;
    let pulling: Promise<void> | undefined;
    let stopPulling = false;

    it('a Registry with a 5-minute certificate becomes Ready and a pod pulls through the node proxy', async () => {
      await cluster.kubectl(['apply', '-f', '-'], {
        input: stringify({
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Registry',
          metadata: { name: 'main', namespace },
          spec: {
            storage: { filesystem: { size: '1Gi', reclaimPolicy: 'Retain' } },
            nodeAccess: { mode: 'NodeProxy', port: 5000 },
            pullSecrets: { serviceAccounts: 'All' },
            tls: { certificateLifetime },
          },
        }),
      });
      await kubectl(
        '-n',
        namespace,
        'wait',
        '--for=condition=Ready',
        'registry/main',
        '--timeout=180s',
      );
      await kubectl('create', 'namespace', 'team-a');
      await cluster.kubectl(['apply', '-f', '-'], {
        input: stringify({
          apiVersion: 'berth.dev/v1alpha1',
          kind: 'Repository',
          metadata: { name: 'web', namespace: 'team-a' },
          spec: { registry: { name: 'main', namespace }, visibility: 'Private' },
        }),
      });
      const layout = join(work, 'busybox-layout');
      await mkdir(layout, { recursive: true });
      await run('tar', [
        '-xf',
        join(cluster.root, 'images', 'berth-test-busybox-1.oci.tar'),
        '-C',
        layout,
      ]);
      const admin = {
        username: await secretData('berth-main-admin', 'username'),
        password: await secretData('berth-main-admin', 'password'),
      };
      const pushed = await crane(['push', layout, pushedImage], admin);
      expect(pushed.stderr).not.toMatch(/error/i);
      await waitFor(
        async () =>
          (
            (
              await json<{ imagePullSecrets?: { name: string }[] }>(
                'get',
                'sa',
                'default',
                '-n',
                'team-a',
              )
            ).imagePullSecrets ?? []
          ).length > 0,
        60_000,
        "team-a's pull secret on its default ServiceAccount",
      );
      await cluster.kubectl(['apply', '-f', '-'], {
        input: stringify({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'web', namespace: 'team-a' },
          spec: restrictedPodSpec(pushedImage),
        }),
      });
      await kubectl('-n', 'team-a', 'wait', '--for=condition=Ready', 'pod/web', '--timeout=120s');

      registryPods = await pods(
        'app.kubernetes.io/instance=main,app.kubernetes.io/component=registry',
      );
      nodeProxyPods = await pods(
        'app.kubernetes.io/instance=main,app.kubernetes.io/component=node-proxy',
      );
      expect([registryPods.filter(ready).length, nodeProxyPods.filter(ready).length]).toEqual([
        1, 1,
      ]);
      clusterIP = (
        await json<{ spec: { clusterIP: string } }>('get', 'service', 'berth-main', '-n', namespace)
      ).spec.clusterIP;

      // From now on, pulls through the node proxy without a pause: manifest and every blob, with
      // team-a's pull credential, as the kubelet pulls.
      const secret = await json<{ data: Record<string, string> }>(
        'get',
        'secret',
        'berth-pull.berth-system.main',
        '-n',
        'team-a',
      );
      const auths = JSON.parse(
        Buffer.from(secret.data['.dockerconfigjson'] ?? '', 'base64').toString(),
      ) as {
        auths: Record<string, { username: string; password: string }>;
      };
      const credentials = auths.auths['localhost:5000'] as { username: string; password: string };
      const target = join(work, 'pulled.tar');
      pulling = (async () => {
        while (!stopPulling) {
          const result = await crane(['pull', pushedImage, target], credentials);
          if (result.code === 0) pulls += 1;
          else pullFailures.push(`${new Date().toISOString()} ${result.stderr.trim()}`);
          await new Promise((resolve) => setTimeout(resolve, 1_000));
        }
      })();
      await waitFor(async () => pulls > 0 || pullFailures.length > 0, 60_000, 'a first pull');
      expect(pullFailures).toEqual([]);
    }, 420_000);

    it('helm upgrade with changed values rolls the operator pods', async () => {
      const before = (await pods('app.kubernetes.io/component=operator')).map(
        (pod) => pod.metadata.uid,
      );
      await helm(
        'upgrade',
        'berth',
        chart,
        '-n',
        namespace,
        '--set',
        'resources.requests.cpu=60m',
        '--wait',
      );
      await kubectl(
        '-n',
        namespace,
        'rollout',
        'status',
        'deployment/berth-operator',
        '--timeout=180s',
      );
      await waitFor(
        async () => {
          const now = await pods('app.kubernetes.io/component=operator');
          return (
            now.length === 2 &&
            now.every(ready) &&
            now.every((pod) => !before.includes(pod.metadata.uid))
          );
        },
        120_000,
        'two new operator pods, the old ones gone',
      );
      const deployment = await json<{
        spec: {
          template: { spec: { containers: { resources: { requests: { cpu: string } } }[] } };
        };
      }>('get', 'deployment', 'berth-operator', '-n', namespace);
      expect(deployment.spec.template.spec.containers[0]?.resources.requests.cpu).toBe('60m');
    }, 300_000);

    it('renews the serving certificate twice before it expires: zero failed pulls, no pod restarted', async () => {
      const caFile = join(work, 'ca.crt');
      const served: string[] = [];
      const issued = new Set<string>();
      const problems: string[] = [];
      const look = async () => {
        const ca = await secretData('berth-main-tls', 'ca.crt');
        await writeFile(caFile, ca);
        const certificate = await secretData('berth-main-tls', 'tls.crt');
        issued.add(new X509Certificate(certificate).fingerprint256.replace(/:/g, '').toLowerCase());
        // Each certificate the operator writes passes OpenSSL's strict verification.
        const certificateFile = join(work, 'tls.crt');
        await writeFile(certificateFile, certificate);
        const verified = await exec('openssl', [
          'verify',
          '-x509_strict',
          '-purpose',
          'sslserver',
          '-CAfile',
          caFile,
          certificateFile,
        ]).catch((error: { stdout?: string; stderr?: string }) => error);
        if (verified.stdout?.trim() !== `${certificateFile}: OK`)
          problems.push(`openssl: ${verified.stdout ?? ''} ${verified.stderr ?? ''}`);
        const fingerprint = await servedFingerprint(clusterIP, caFile);
        if (!/^[0-9a-f]{64}$/.test(fingerprint)) problems.push(`python: ${fingerprint}`);
        else if (served.at(-1) !== fingerprint) served.push(fingerprint);
      };
      await look();
      const initial = new X509Certificate(await secretData('berth-main-tls', 'tls.crt'));
      // Two renewals come at two thirds of 5 minutes each (200 s apart); the kubelet brings each
      // to the registry pod at its next sync of the pod (up to about 90 s).
      const deadline = initial.validFromDate.getTime() + 60_000 + 2 * 200_000 + 150_000;
      await waitFor(
        async () => {
          await look();
          if (served.length >= 3 || problems.length > 0) return true;
          await new Promise((resolve) => setTimeout(resolve, 3_000));
          return false;
        },
        Math.max(deadline - Date.now(), 60_000),
        'the registry to serve two renewed certificates',
      );
      expect(problems).toEqual([]);
      // Every certificate served was one the operator issued, each before the last expired.
      for (const fingerprint of served) expect(issued.has(fingerprint)).toBe(true);
      stopPulling = true;
      await pulling;
      expect({ pulls: pulls > 10, failures: pullFailures }).toEqual({ pulls: true, failures: [] });
      const renewals = await json<{ items: { reason: string }[] }>(
        'get',
        'events',
        '-n',
        namespace,
        '--field-selector',
        'involvedObject.kind=Registry,involvedObject.name=main',
      );
      expect(
        renewals.items.filter((event) => event.reason === 'CertificateRenewed').length,
      ).toBeGreaterThanOrEqual(1);
      // The same pods, never restarted: the certificate was reloaded, not the process.
      const restarts = (list: Pod[]) =>
        list.map((pod) => [
          pod.metadata.uid,
          pod.status.containerStatuses?.map((s) => s.restartCount),
        ]);
      expect(
        restarts(
          await pods('app.kubernetes.io/instance=main,app.kubernetes.io/component=registry'),
        ),
      ).toEqual(restarts(registryPods));
      expect(
        restarts(
          await pods('app.kubernetes.io/instance=main,app.kubernetes.io/component=node-proxy'),
        ),
      ).toEqual(restarts(nodeProxyPods));
    }, 720_000);

    it('helm uninstall with crds.keep leaves the CRDs and the Registry volume', async () => {
      stopPulling = true;
      await pulling;
      await helm('uninstall', 'berth', '-n', namespace, '--wait');
      const left = await cluster.kubectl(['get', 'deployment', 'berth-operator', '-n', namespace], {
        allowFailure: true,
      });
      expect(left.stderr).toMatch(/NotFound/);
      const crds = await json<{ items: KubeObject[] }>(
        'get',
        'crd',
        '-l',
        'app.kubernetes.io/part-of=berth',
      );
      expect(crds.items.map((crd) => crd.metadata.name).sort()).toEqual([
        'registries.berth.dev',
        'repositories.berth.dev',
      ]);
      const claim = await json<{ status: { phase: string } }>(
        'get',
        'pvc',
        'berth-main-data',
        '-n',
        namespace,
      );
      expect(claim.status.phase).toBe('Bound');
      expect(
        (await json<KubeObject>('get', 'registry', 'main', '-n', namespace)).metadata.name,
      ).toBe('main');
    }, 240_000);
  },
);
