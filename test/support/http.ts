import { request } from 'node:http';
import { connect } from 'node:net';

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/**
 * An HTTP request with the path sent exactly as given (fetch would resolve `..` and re-encode),
 * for probing how the registry treats hostile input.
 */
export async function rawRequest(
  host: string,
  method: string,
  path: string,
  options: {
    headers?: Record<string, string | number>;
    body?: Buffer | string;
    /** The loopback address to send from, for limits kept per client address. */
    localAddress?: string;
  } = {},
): Promise<RawResponse> {
  const [hostname, port] = host.split(':');
  return new Promise((resolve, reject) => {
    const req = request(
      {
        hostname,
        port: Number(port),
        method,
        path,
        headers: options.headers,
        localAddress: options.localAddress,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The first OCI error code of a response body. */
export function errorCode(response: RawResponse): string | undefined {
  try {
    return (JSON.parse(response.body.toString()) as { errors: { code: string }[] }).errors[0]?.code;
  } catch {
    return undefined;
  }
}

/**
 * Sends request headers that promise `declaredLength` body bytes, then only `sentBytes` of
 * them, and drops the connection: a client that dies mid-upload.
 */
export async function abandonUpload(
  host: string,
  method: string,
  path: string,
  declaredLength: number,
  body: Buffer,
  extraHeaders: Record<string, string> = {},
): Promise<void> {
  const [hostname, port] = host.split(':');
  await new Promise<void>((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      const headers = Object.entries({ ...extraHeaders, 'Content-Length': String(declaredLength) })
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('');
      socket.write(`${method} ${path} HTTP/1.1\r\nHost: ${host}\r\n${headers}\r\n`);
      socket.write(body, () => {
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 100);
      });
    });
    socket.on('error', reject);
  });
}

/**
 * Sends a body with a declared Content-Length in two parts, the second `pauseMs` later: a slow
 * client whose request is still in flight while the test does something else. Resolves to the
 * response status.
 */
export function sendSlowly(
  host: string,
  method: string,
  path: string,
  body: Buffer,
  firstPartBytes: number,
  pauseMs: number,
): Promise<number> {
  const [hostname, port] = host.split(':');
  return new Promise((resolve, reject) => {
    const req = request(
      { hostname, port: Number(port), method, path, headers: { 'Content-Length': body.length } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.write(body.subarray(0, firstPartBytes));
    setTimeout(() => req.end(body.subarray(firstPartBytes)), pauseMs);
  });
}
