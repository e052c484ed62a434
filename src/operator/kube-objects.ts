import type { KubeObject } from '../kube/client.ts';

/** The fields of built-in objects the controllers read from caches and API responses. */

export interface SecretObject extends KubeObject {
  type?: string;
  data?: Record<string, string>;
}

export interface ServiceAccountObject extends KubeObject {
  imagePullSecrets?: { name?: string }[];
}

export interface ServiceObject extends KubeObject {
  spec?: { clusterIP?: string };
}

export interface DeploymentObject extends KubeObject {
  spec?: { replicas?: number };
  status?: { readyReplicas?: number; updatedReplicas?: number; observedGeneration?: number };
}

export interface DaemonSetObject extends KubeObject {
  status?: { desiredNumberScheduled?: number; numberReady?: number; observedGeneration?: number };
}
