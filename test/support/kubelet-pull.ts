import { getObject, type ControlPlane } from './control-plane.ts';
import { run, type RunResult } from './processes.ts';

interface DockerConfig {
  auths?: Record<string, { username?: string; password?: string; auth?: string }>;
}

export interface KubeletPull {
  /** The Secret whose entry matched the image's host, if any. */
  readonly secret: string | undefined;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly result: RunResult;
}

/**
 * Pulls an image the way the kubelet does for a pod: reads the pod's ServiceAccount, its
 * imagePullSecrets, each dockerconfigjson Secret, and takes the credential whose key is the
 * image's host; then asks the container runtime to pull through CRI (`crictl pull --creds`).
 * Without a matching credential it pulls anonymously, as the kubelet would.
 */
export async function pullAsKubelet(
  cluster: ControlPlane,
  crictl: { binary: string; socket: string },
  pod: { namespace: string; serviceAccount: string; image: string },
): Promise<KubeletPull> {
  const host = pod.image.slice(0, pod.image.indexOf('/'));
  const account = await getObject<{ imagePullSecrets?: { name: string }[] }>(
    cluster,
    'serviceaccount',
    pod.serviceAccount,
    pod.namespace,
  );
  let found: { secret: string; username: string; password: string } | undefined;
  for (const { name } of account.imagePullSecrets ?? []) {
    const secret = await cluster.kubectl(
      ['get', 'secret', name, '-n', pod.namespace, '-o', 'json'],
      { allowFailure: true },
    );
    // A listed Secret that does not exist is skipped, as the kubelet does.
    if (secret.code !== 0) continue;
    const { type, data } = JSON.parse(secret.stdout) as {
      type: string;
      data?: Record<string, string>;
    };
    if (type !== 'kubernetes.io/dockerconfigjson' || !data?.['.dockerconfigjson']) continue;
    const config = JSON.parse(
      Buffer.from(data['.dockerconfigjson'], 'base64').toString('utf8'),
    ) as DockerConfig;
    const entry = config.auths?.[host];
    if (entry?.username && entry.password) {
      found = { secret: name, username: entry.username, password: entry.password };
      break;
    }
  }
  const result = await run(
    crictl.binary,
    [
      ...criEndpoints(crictl.socket),
      '--timeout',
      '60s',
      'pull',
      ...(found ? ['--creds', `${found.username}:${found.password}`] : []),
      pod.image,
    ],
    { allowFailure: true },
  );
  return {
    secret: found?.secret,
    username: found?.username,
    password: found?.password,
    result,
  };
}

/** crictl's flags to talk to the containerd listening on `socket`, for images and runtime. */
export function criEndpoints(socket: string): string[] {
  return ['--runtime-endpoint', `unix://${socket}`, '--image-endpoint', `unix://${socket}`];
}

/** Removes a pulled image, so the next pull goes to the registry again. */
export async function removeImage(
  crictl: { binary: string; socket: string },
  image: string,
): Promise<void> {
  await run(crictl.binary, [...criEndpoints(crictl.socket), 'rmi', image], { allowFailure: true });
}
