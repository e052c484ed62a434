import { request as httpsRequest, type RequestOptions } from 'node:https';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connectionFromFile, defaultConnection, type ClusterConnection } from './config.ts';

/** An error answer of the API server, with its Status reason and code. */
export class KubeApiError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly body: unknown;

  constructor(code: number, reason: string, message: string, body: unknown) {
    super(message);
    this.name = 'KubeApiError';
    this.code = code;
    this.reason = reason;
    this.body = body;
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof KubeApiError && error.code === 404;
}

export function isConflict(error: unknown): boolean {
  return error instanceof KubeApiError && error.code === 409;
}

/** A Kubernetes object as the client sees it; kinds are typed by the caller. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: unknown[];
    deletionTimestamp?: string;
    creationTimestamp?: string;
    managedFields?: unknown[];
  };
  [field: string]: unknown;
}

export interface ListResult<T> {
  readonly items: T[];
  readonly resourceVersion: string;
}

type Query = Record<string, string | number | boolean | undefined>;

/**
 * A small client over the API server's REST interface: requests, server-side apply and watch
 * streams. It reads credentials from a KubeConfig (client-node) for every request, so rotated
 * ServiceAccount tokens are picked up, and owns its HTTP so that watches have the timeouts and
 * error handling the operator needs.
 */
export class KubeClient {
  private readonly connection: ClusterConnection;
  /**
   * Failed requests and watches so far, by HTTP status (`network` when no answer came): read by
   * the operator's metrics. Expected answers (a 404 that is handled, a 409 that is retried)
   * count too; the status tells them apart.
   */
  readonly errors = new Map<string, number>();

  constructor(connection: ClusterConnection) {
    this.connection = connection;
  }

  static fromFile(file: string): KubeClient {
    return new KubeClient(connectionFromFile(file));
  }

  /** $KUBECONFIG, ~/.kube/config or the in-cluster ServiceAccount, as kubectl finds them. */
  static fromDefault(): KubeClient {
    return new KubeClient(defaultConnection());
  }

  async request<T>(
    method: string,
    path: string,
    options: { query?: Query; body?: unknown; contentType?: string; timeoutMs?: number } = {},
  ): Promise<T> {
    const response = await this.counted(this.send(method, path, options));
    const text = await readText(response);
    const body = text ? (JSON.parse(text) as unknown) : undefined;
    if ((response.statusCode ?? 500) >= 400) throw apiError(response.statusCode ?? 500, body, text);
    return body as T;
  }

  get<T extends KubeObject>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  async list<T extends KubeObject>(path: string, query: Query = {}): Promise<ListResult<T>> {
    const list = await this.request<{ items: T[]; metadata: { resourceVersion: string } }>(
      'GET',
      path,
      { query },
    );
    return { items: list.items, resourceVersion: list.metadata.resourceVersion };
  }

  /**
   * Server-side apply: `object` is this manager's whole intent for the fields it owns. `force`
   * takes over fields another manager set (controllers own what they render).
   */
  apply<T extends KubeObject>(
    path: string,
    object: KubeObject,
    fieldManager: string,
    force = true,
  ): Promise<T> {
    return this.request<T>('PATCH', path, {
      query: { fieldManager, force },
      body: object,
      contentType: 'application/apply-patch+yaml',
    });
  }

  /**
   * JSON merge patch. Put `metadata.resourceVersion` in the patch to make it conditional: the
   * API server answers 409 Conflict when the object changed since that version was read.
   */
  mergePatch<T extends KubeObject>(path: string, patch: unknown, fieldManager: string): Promise<T> {
    return this.request<T>('PATCH', path, {
      query: { fieldManager },
      body: patch,
      contentType: 'application/merge-patch+json',
    });
  }

  async delete(path: string, query: Query = {}): Promise<void> {
    try {
      await this.request('DELETE', path, { query });
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }

  /** Opens a watch stream; the caller reads newline-delimited JSON events from it. */
  async openWatch(path: string, query: Query, signal: AbortSignal): Promise<IncomingMessage> {
    const response = await this.counted(
      this.send('GET', path, { query: { ...query, watch: true } }, signal),
    );
    if ((response.statusCode ?? 500) >= 400) {
      const text = await readText(response);
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
      throw apiError(response.statusCode ?? 500, body, text);
    }
    return response;
  }

  /** The response, its error status counted; a request that got no answer counted as `network`. */
  private async counted(sending: Promise<IncomingMessage>): Promise<IncomingMessage> {
    const count = (code: string) => this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    try {
      const response = await sending;
      if ((response.statusCode ?? 500) >= 400) count(String(response.statusCode ?? 500));
      return response;
    } catch (error) {
      count('network');
      throw error;
    }
  }

  private async send(
    method: string,
    path: string,
    options: { query?: Query; body?: unknown; contentType?: string; timeoutMs?: number },
    signal?: AbortSignal,
  ): Promise<IncomingMessage> {
    // Keep a path prefix of the server URL (an API server behind a proxy at https://host/k8s).
    const url = new URL(
      `${this.connection.server.pathname.replace(/\/$/, '')}${path}`,
      this.connection.server,
    );
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const requestOptions: RequestOptions = { method, headers: { Accept: 'application/json' } };
    await this.connection.applyTo(requestOptions);
    const payload =
      options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    const headers = requestOptions.headers as Record<string, string | number>;
    if (payload) {
      headers['Content-Type'] = options.contentType ?? 'application/json';
      headers['Content-Length'] = payload.length;
    }
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, { ...requestOptions, ...(signal ? { signal } : {}) }, resolve);
      req.on('error', reject);
      if (options.timeoutMs)
        req.setTimeout(options.timeoutMs, () =>
          req.destroy(new Error(`${method} ${path} timed out`)),
        );
      req.end(payload);
    });
  }
}

async function readText(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function apiError(code: number, body: unknown, text: string): KubeApiError {
  const status = body as { reason?: string; message?: string } | undefined;
  return new KubeApiError(
    code,
    status?.reason ?? 'Unknown',
    status?.message ?? (text.slice(0, 500) || `HTTP ${code}`),
    body,
  );
}
