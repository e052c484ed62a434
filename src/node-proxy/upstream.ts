import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';

/** Headers that describe one connection, not the message; a proxy must not forward them. */
const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
]);

/**
 * The registry Service as the node proxy reaches it: one keep-alive connection pool, TLS verified
 * against the operator's CA. The client's headers, Authorization included, go through untouched.
 */
export class Upstream {
  readonly url: URL;
  private readonly agent: HttpAgent | HttpsAgent;

  constructor(url: URL, ca: Buffer | undefined) {
    this.url = url;
    this.agent =
      url.protocol === 'https:'
        ? new HttpsAgent({ keepAlive: true, maxSockets: 128, ...(ca ? { ca } : {}) })
        : new HttpAgent({ keepAlive: true, maxSockets: 128 });
  }

  /**
   * Sends a request upstream; `body` (the client's request) is streamed when given. Resolves with
   * the response once its headers arrive; the caller consumes or discards the body.
   */
  send(
    method: string,
    path: string,
    headers: IncomingHttpHeaders,
    body?: NodeJS.ReadableStream,
  ): Promise<IncomingMessage> {
    const outgoing: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) {
      if (value !== undefined && !hopByHop.has(name)) outgoing[name] = value;
    }
    outgoing.host = this.url.host;
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const request = send(
        new URL(path, this.url),
        { method, headers: outgoing, agent: this.agent },
        resolve,
      );
      request.on('error', reject);
      if (body) {
        body.pipe(request);
        body.on('error', (error) => request.destroy(error));
      } else {
        request.end();
      }
    });
  }

  /**
   * Response headers for the client: hop-by-hop ones dropped, and the registry's own address in
   * the token realm and Location replaced by the address the client used (`http://<host>`), so
   * the client keeps talking to its node's proxy.
   */
  clientHeaders(headers: IncomingHttpHeaders, clientHost: string): OutgoingHttpHeaders {
    const result: OutgoingHttpHeaders = {};
    const origin = this.url.origin;
    const local = `http://${clientHost}`;
    const rewritten = new Set(['www-authenticate', 'location']);
    const rewrite = (text: string) => text.split(origin).join(local);
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined || hopByHop.has(name)) continue;
      if (rewritten.has(name)) {
        result[name] = Array.isArray(value) ? value.map(rewrite) : rewrite(String(value));
      } else {
        result[name] = value;
      }
    }
    return result;
  }

  close(): void {
    this.agent.destroy();
  }
}
