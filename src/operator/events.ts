import { randomUUID } from 'node:crypto';
import type { Logger } from '../observability/logger.ts';
import { isNotFound, type KubeClient, type KubeObject } from '../kube/client.ts';

/** An Event repeated within this long is counted on the Event already recorded. */
const repeatWindowMillis = 10 * 60_000;
/** Recorded Events remembered for counting repeats; the oldest is forgotten first. */
const rememberedEvents = 1024;

interface RecordedEvent {
  readonly name: string;
  readonly namespace: string;
  count: number;
  lastSeen: number;
  /** The write of this Event in flight, so that repeats are counted in order. */
  written: Promise<void>;
}

/**
 * Kubernetes Events for what a person must see (`kubectl describe` shows them). As client-go's
 * recorder does, the same type, reason and message about the same object within ten minutes is
 * one Event whose `count` and `lastTimestamp` grow, not a new Event. Failures to record are
 * logged and otherwise ignored: an event is never worth failing a reconcile.
 */
export class EventRecorder {
  private readonly client: KubeClient;
  private readonly component: string;
  private readonly logger: Logger;
  /** By object, type, reason and message; in the order they were last seen. */
  private readonly recent = new Map<string, RecordedEvent>();

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
    const key = [
      object.metadata.uid ?? `${object.kind}/${namespace}/${object.metadata.name}`,
      type,
      reason,
      message,
    ].join('\n');
    const now = Date.now();
    const previous = this.recent.get(key);
    this.recent.delete(key);
    const entry: RecordedEvent =
      previous && now - previous.lastSeen < repeatWindowMillis
        ? previous
        : {
            name: `${object.metadata.name}.${randomUUID().slice(0, 8)}`,
            namespace,
            count: 0,
            lastSeen: now,
            written: Promise.resolve(),
          };
    entry.lastSeen = now;
    this.recent.set(key, entry);
    for (const [oldest] of this.recent) {
      if (this.recent.size <= rememberedEvents) break;
      this.recent.delete(oldest);
    }
    const write = entry.written.then(async () => {
      try {
        if (entry.count > 0 && (await this.countRepeat(entry))) return;
        await this.create(entry, object, type, reason, message);
      } catch (error) {
        this.logger.warn({ err: error, reason }, 'event not recorded');
      }
    });
    entry.written = write;
    await write;
  }

  /** Adds one to a recorded Event; false when it is gone (expired), so a new one is made. */
  private async countRepeat(entry: RecordedEvent): Promise<boolean> {
    try {
      await this.client.mergePatch(
        `/api/v1/namespaces/${entry.namespace}/events/${entry.name}`,
        { count: entry.count + 1, lastTimestamp: new Date().toISOString() },
        this.component,
      );
      entry.count += 1;
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  private async create(
    entry: RecordedEvent,
    object: KubeObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void> {
    const now = new Date().toISOString();
    await this.client.request('POST', `/api/v1/namespaces/${entry.namespace}/events`, {
      body: {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name: entry.name, namespace: entry.namespace },
        involvedObject: {
          apiVersion: object.apiVersion,
          kind: object.kind,
          name: object.metadata.name,
          namespace: entry.namespace,
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
    entry.count = 1;
  }
}
