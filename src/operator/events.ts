import { randomUUID } from 'node:crypto';
import type { Logger } from '../observability/logger.ts';
import type { KubeClient, KubeObject } from '../kube/client.ts';

/**
 * Kubernetes Events for what a person must see (`kubectl describe` shows them). Failures to
 * record are logged and otherwise ignored: an event is never worth failing a reconcile.
 */
export class EventRecorder {
  private readonly client: KubeClient;
  private readonly component: string;
  private readonly logger: Logger;

  constructor(client: KubeClient, component: string, logger: Logger) {
    this.client = client;
    this.component = component;
    this.logger = logger;
  }

  async record(
    object: KubeObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void> {
    const namespace = object.metadata.namespace ?? 'default';
    const now = new Date().toISOString();
    try {
      await this.client.request('POST', `/api/v1/namespaces/${namespace}/events`, {
        body: {
          apiVersion: 'v1',
          kind: 'Event',
          metadata: { name: `${object.metadata.name}.${randomUUID().slice(0, 8)}`, namespace },
          involvedObject: {
            apiVersion: object.apiVersion,
            kind: object.kind,
            name: object.metadata.name,
            namespace,
            uid: object.metadata.uid,
            resourceVersion: object.metadata.resourceVersion,
          },
          type,
          reason,
          message,
          source: { component: this.component },
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
          reportingComponent: this.component,
        },
      });
    } catch (error) {
      this.logger.warn({ err: error, reason }, 'event not recorded');
    }
  }
}
