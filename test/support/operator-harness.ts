import { request as httpsRequest, type RequestOptions } from 'node:https';
import { stringify } from 'yaml';
import { connectionFromFile } from '../../src/kube/config.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';
import { installBerth, operatorKubeconfig, startOperatorProcess } from './operator.ts';
import { Daemon, temporaryDirectory } from './processes.ts';

export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
}

export interface EventObject {
  involvedObject: { kind: string; name: string; namespace: string; uid: string };
  type: string;
  reason: string;
  message: string;
  count?: number;
  source?: { component?: string };
}

/**
 * A real API server with Berth installed as users install it, namespaces made, and kubectl
 * helpers: what the operator e2e suites share. The operator itself is started by each suite.
 */
export interface OperatorHarness {
  readonly cluster: ControlPlane;
  /** A kubeconfig with the operator's ServiceAccount token (deploy/'s RBAC). */
  readonly kubeconfig: string;
  getJson<T>(args: string[]): Promise<T>;
  /** `kubectl apply` of the objects, as YAML documents. */
  apply(...objects: unknown[]): Promise<unknown>;
  /** The Events about one object with this reason. */
  events(namespace: string, name: string, reason: string): Promise<EventObject[]>;
  /** One of a kind's conditions, read from the API server. */
  condition(
    kind: string,
    name: string,
    namespace: string,
    type: string,
  ): Promise<Condition | undefined>;
  /**
   * Plays the kubelet and the Deployment controller, which do not run here: the registry
   * Deployment of a Registry reports all the pods it wants ready.
   */
  markRegistryPodsReady(namespace: string, registry: string): Promise<void>;
  /** `berth operator` with a short Lease, as the suites run it. */
  startOperator(args?: readonly string[]): Daemon;
  /** A list as the API server's Table (what kubectl get prints), e.g. of `/apis/berth.dev/v1alpha1/registries`. */
  table(path: string): Promise<Table>;
  stop(): Promise<void>;
}

export interface Table {
  columnDefinitions: { name: string; priority: number }[];
  rows: { cells: unknown[]; object: { metadata: { name: string; namespace?: string } } }[];
}

/** A GET as kubectl get sends it, asking the API server for a meta.k8s.io Table. */
async function serverTable(kubeconfig: string, path: string): Promise<Table> {
  const connection = connectionFromFile(kubeconfig);
  const url = new URL(path, connection.server);
  const options: RequestOptions = {
    method: 'GET',
    headers: { Accept: 'application/json;as=Table;v=v1;g=meta.k8s.io' },
  };
  await connection.applyTo(options);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, options, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if ((response.statusCode ?? 500) >= 400) reject(new Error(`${path}: ${text}`));
        else resolve(JSON.parse(text) as Table);
      });
      response.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The cells of each row by column name, `-o wide` columns included. */
export function tableRows(table: Table): Record<string, unknown>[] {
  return table.rows.map((row) =>
    Object.fromEntries(
      table.columnDefinitions.map((column, index) => [column.name, row.cells[index]]),
    ),
  );
}

export async function startOperatorHarness(
  name: string,
  namespaces: readonly string[],
): Promise<OperatorHarness> {
  const cluster = await startControlPlane();
  const work = await temporaryDirectory(name);
  await installBerth(cluster);
  const kubeconfig = await operatorKubeconfig(cluster, work.path);
  for (const namespace of namespaces) await cluster.kubectl(['create', 'namespace', namespace]);
  const getJson = async <T>(args: string[]): Promise<T> =>
    JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
  return {
    cluster,
    kubeconfig,
    getJson,
    apply: (...objects) =>
      cluster.kubectl(['apply', '-f', '-'], {
        input: objects.map((object) => stringify(object)).join('---\n'),
      }),
    events: async (namespace, object, reason) =>
      (
        await getJson<{ items: EventObject[] }>([
          'get',
          'events',
          '-n',
          namespace,
          '--field-selector',
          `involvedObject.name=${object},reason=${reason}`,
        ])
      ).items,
    condition: async (kind, object, namespace, type) =>
      (
        await getJson<{ status?: { conditions?: Condition[] } }>([
          'get',
          kind,
          object,
          '-n',
          namespace,
        ])
      ).status?.conditions?.find((condition) => condition.type === type),
    markRegistryPodsReady: async (namespace, registry) => {
      const deployment = await getJson<{
        metadata: { generation: number };
        spec: { replicas?: number };
      }>(['get', 'deployment', `berth-${registry}`, '-n', namespace]);
      const replicas = deployment.spec.replicas ?? 1;
      await cluster.kubectl([
        'patch',
        'deployment',
        `berth-${registry}`,
        '-n',
        namespace,
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify({
          status: {
            replicas,
            readyReplicas: replicas,
            updatedReplicas: replicas,
            availableReplicas: replicas,
            observedGeneration: deployment.metadata.generation,
          },
        }),
      ]);
    },
    startOperator: (args = []) =>
      startOperatorProcess(kubeconfig, ['--lease-duration', '3s', ...args]),
    table: (path) => serverTable(cluster.kubeconfig, path),
    stop: async () => {
      await cluster.stop();
      await work.remove();
    },
  };
}
