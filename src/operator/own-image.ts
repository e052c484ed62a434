import { z } from 'zod';
import { ConfigError } from '../config/registry.ts';
import type { KubeClient } from '../kube/client.ts';

/** The part of the operator's own Pod that names its image. */
const ownPodSchema = z.object({
  spec: z.object({
    containers: z.array(z.object({ name: z.string(), image: z.string().min(1) })),
  }),
});

/** The container whose image the operator's pod runs it from; the first when none is named so. */
const operatorContainer = 'operator';

/**
 * The image the operator itself runs, read once from its own Pod (`POD_NAMESPACE`/`POD_NAME`
 * from the downward API, which cannot expose an image): registry and node-proxy pods then run
 * whatever image a kustomize `images:` override or a rollout gave the operator. Read once: a new
 * image means a new operator Pod. Failing is a ConfigError (the install lacks the RBAC or the
 * downward API), so the process exits with the reason rather than a stack.
 */
export async function imageOfOwnPod(
  client: KubeClient,
  pod: { readonly namespace: string; readonly name: string },
): Promise<string> {
  let object: unknown;
  try {
    object = await client.get(`/api/v1/namespaces/${pod.namespace}/pods/${pod.name}`);
  } catch (error) {
    throw new ConfigError(
      `cannot read this operator's Pod ${pod.namespace}/${pod.name} to learn its image (${(error as Error).message}); grant get on pods in ${pod.namespace} (deploy/rbac.yaml) or pass --image`,
    );
  }
  const containers = ownPodSchema.safeParse(object).data?.spec.containers ?? [];
  const container =
    containers.find((candidate) => candidate.name === operatorContainer) ?? containers[0];
  if (!container)
    throw new ConfigError(`Pod ${pod.namespace}/${pod.name} names no container image`);
  return container.image;
}
