import { connect as connectTcp, isIP, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import type { Writable } from 'node:stream';
import {
  socketReadBuffers as pipeBuffers,
  blobGetChunksInFlight as chunksInFlight,
} from './buffer-pool.ts';

/**
 * One GET of a blob whose body is copied into a writable through reused buffers: an S3 object
 * for the registry, a registry blob for the node proxy.
 *
 * Why not node:http: its client allocates a new buffer for every read of the socket and hands
 * each through a stream, and that garbage was most of a blob pull's CPU (512 MiB from versitygw
 * on loopback: 700-1300 ms of CPU through `http.request`, 150-180 ms reading into buffers of a
 * pool; 512 MiB from `berth registry` over TLS: 650-1030 ms through `https.request`, 195-210 ms
 * through a TLS socket's `onread`, measured in one run each). A socket's `onread` reads into buffers we give it,
 * but node:http cannot parse from such a socket, so this reads the one answer itself: HTTP/1.1,
 * the status line and headers, then exactly Content-Length bytes. It sends `Connection: close`,
 * so nothing is left on the connection to get wrong; an answer framed any other way is an error.
 */

/** An answer's head, and an error answer's body, are read up to this size. */
const maxHeadBytes = 64 * 1024;
/** A GET with no byte received for this long is abandoned. */
const idleMillis = 60_000;

export interface SignedGet {
  /** host[:port] to connect to, as the signature's Host header names it. */
  readonly host: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** How to reach the server, and who hears of the answer's head. */
export interface GetPipeOptions {
  /** TLS: trust this CA instead of the process's default ones. */
  readonly ca?: Buffer | undefined;
  /** TLS: the name to send (SNI) and verify, when the endpoint is an address, not that name. */
  readonly servername?: string | undefined;
  /** No connection within this long fails the GET with code `ConnectTimeout`. */
  readonly connectTimeoutMillis?: number;
  /** Hears a 2xx answer's status and headers (names in lower case) before its first body byte is written. */
  readonly onHead?: (status: number, headers: ReadonlyMap<string, string>) => void;
}

/** What the server answered: a 2xx whose body was copied, or another status with its body. */
export type PipeAnswer =
  | { readonly status: number; readonly copied: number }
  | { readonly status: number; readonly body: string };

/** The connection failed, or the answer could not be read; `bodyStarted` if a byte was written. */
export class GetPipeError extends Error {
  readonly bodyStarted: boolean;
  readonly code: string;
  constructor(
    code: string,
    message: string,
    bodyStarted: boolean,
    options: { cause?: unknown } = {},
  ) {
    super(message, options);
    this.name = 'GetPipeError';
    this.code = code;
    this.bodyStarted = bodyStarted;
  }
}

/** The host to connect to: URL keeps an IPv6 literal in brackets, a socket wants the address. */
export function bareHostname(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

interface Head {
  readonly status: number;
  readonly headers: ReadonlyMap<string, string>;
}

const headEnd = Buffer.from('\r\n\r\n');

function parseHead(text: string): Head {
  const [statusLine = '', ...lines] = text.split('\r\n');
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!match)
    throw new Error(`not an HTTP/1.1 status line: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0)
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status: Number(match[1]), headers };
}

/**
 * Sends `get` to `endpoint` and copies a 2xx answer's body into `destination`, honouring its
 * backpressure: at most `chunksInFlight` buffers are out with it, plus the one being read into.
 * Resolves once every byte was accepted by the destination; a buffer goes back to the pool when
 * the destination has called back its write or has closed.
 */
export function pipeGet(
  endpoint: URL,
  get: SignedGet,
  destination: Writable,
  options: GetPipeOptions = {},
): Promise<PipeAnswer> {
  if (destination.destroyed)
    return Promise.reject(
      new GetPipeError(
        'DestinationClosed',
        'the client went away before the object was sent',
        false,
      ),
    );
  const buffers = pipeBuffers.borrower();
  return new Promise<PipeAnswer>((resolve, reject) => {
    /** Buffers the destination may still read: each goes back once, when it is done with it. */
    const pending = new Set<Buffer>();
    const giveBack = (buffer: Buffer): void => {
      if (pending.delete(buffer)) buffers.giveBack(buffer);
    };
    let reading = buffers.take();
    let head: Buffer | undefined = Buffer.alloc(0);
    let answer: Head | undefined;
    let remaining = 0;
    let copied = 0;
    let errorBody: Buffer[] = [];
    let settled = false;
    let paused = false;

    const finish = (outcome: PipeAnswer | GetPipeError): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      destination.off('close', destinationClosed);
      buffers.giveBack(reading);
      if (outcome instanceof GetPipeError) reject(outcome);
      else resolve(outcome);
    };
    const fail = (code: string, message: string, cause?: unknown): void =>
      finish(new GetPipeError(code, message, copied > 0, { cause }));
    const destinationClosed = (): void => {
      // A socket's pending writes end with it: what it did not call back is never read.
      for (const buffer of [...pending]) giveBack(buffer);
      fail('DestinationClosed', 'the client went away before the object was sent');
    };

    /** Writes body bytes; false when reading must pause until the destination catches up. */
    const writeBody = (chunk: Buffer, borrowed?: Buffer): boolean => {
      const length = Math.min(chunk.length, remaining);
      if (length === 0) return true;
      remaining -= length;
      copied += length;
      if (borrowed) pending.add(borrowed);
      destination.write(chunk.subarray(0, length), (error) => {
        if (borrowed) giveBack(borrowed);
        if (error) {
          fail(
            'DestinationClosed',
            `the client went away before the object was sent: ${error.message}`,
            error,
          );
          return;
        }
        if (paused && pending.size < chunksInFlight && !settled) {
          paused = false;
          socket.resume();
        }
        if (remaining === 0 && pending.size === 0) finish({ status: answer?.status ?? 0, copied });
      });
      return pending.size < chunksInFlight;
    };

    /** Takes the head once it is complete; what follows it is the first of the body. */
    const readHead = (bytes: Buffer): boolean => {
      head = Buffer.concat([head as Buffer, bytes]);
      const end = head.indexOf(headEnd);
      if (end < 0) {
        if (head.length > maxHeadBytes)
          fail('BadAnswer', `the server sent a head of over ${maxHeadBytes} bytes`);
        return true;
      }
      const rest = head.subarray(end + headEnd.length);
      try {
        answer = parseHead(head.subarray(0, end).toString('latin1'));
      } catch (error) {
        fail(
          'BadAnswer',
          `the server answered what is not HTTP: ${(error as Error).message}`,
          error,
        );
        return true;
      }
      head = undefined;
      const length = answer.headers.get('content-length');
      const encoding = answer.headers.get('transfer-encoding');
      if (length === undefined || !/^\d+$/.test(length) || (encoding && encoding !== 'identity')) {
        if (answer.status < 300) {
          fail(
            'BadAnswer',
            `the server answered ${answer.status} without a Content-Length; Berth reads blobs only so framed`,
          );
          return true;
        }
        // An error answer without a length runs until the connection closes.
        remaining = maxHeadBytes;
      } else {
        remaining = answer.status < 300 ? Number(length) : Math.min(Number(length), maxHeadBytes);
      }
      if (answer.status < 300) options.onHead?.(answer.status, answer.headers);
      if (remaining === 0) {
        finish(
          answer.status < 300
            ? { status: answer.status, copied: 0 }
            : { status: answer.status, body: '' },
        );
        return true;
      }
      return rest.length > 0 ? received(rest) : true;
    };

    /** Body bytes: a 2xx's go to the destination, another answer's are kept (bounded). */
    const received = (bytes: Buffer, borrowed?: Buffer): boolean => {
      if (answer && answer.status < 300) return writeBody(bytes, borrowed);
      const kept = bytes.subarray(0, Math.max(0, Math.min(bytes.length, remaining)));
      errorBody.push(Buffer.from(kept));
      remaining -= kept.length;
      if (remaining <= 0) finishWithError();
      return true;
    };
    const finishWithError = (): void => {
      const body = Buffer.concat(errorBody).toString('utf8');
      errorBody = [];
      finish({ status: answer?.status ?? 0, body });
    };

    const host = bareHostname(endpoint);
    const connection = {
      host,
      port: Number(endpoint.port || (endpoint.protocol === 'https:' ? 443 : 80)),
      onread: {
        buffer: (): Buffer => reading,
        callback: (length: number, buffer: Uint8Array): boolean => {
          if (settled) return false;
          const bytes = Buffer.from(buffer.buffer, buffer.byteOffset, length);
          let more: boolean;
          if (answer) {
            // Body bytes go to the destination in this buffer, so the next read goes into
            // another; bytes past the body are not written, and theirs is read into again.
            more = received(bytes, reading);
            if (pending.has(reading)) reading = buffers.take();
          } else {
            more = readHead(Buffer.from(bytes));
          }
          if (!more && !settled) paused = true;
          return more;
        },
      },
    };
    const servername = options.servername ?? (isIP(host) ? undefined : host);
    const socket: Socket =
      endpoint.protocol === 'https:'
        ? // SNI carries names only (RFC 6066); an address is still checked against the certificate.
          connectTls({
            ...connection,
            ...(servername ? { servername } : {}),
            ...(options.ca ? { ca: options.ca } : {}),
          })
        : connectTcp(connection);
    if (options.connectTimeoutMillis !== undefined) {
      const limit = options.connectTimeoutMillis;
      const timer = setTimeout(
        () => fail('ConnectTimeout', `no connection to ${get.host} within ${limit} ms`),
        limit,
      );
      socket.once(endpoint.protocol === 'https:' ? 'secureConnect' : 'connect', () =>
        clearTimeout(timer),
      );
      socket.once('close', () => clearTimeout(timer));
    }
    socket.setNoDelay(true);
    socket.setTimeout(idleMillis, () =>
      fail('Timeout', `the server sent nothing for ${idleMillis / 1000} s`),
    );
    socket.on('error', (error: NodeJS.ErrnoException) =>
      fail(error.code ?? 'NetworkError', error.message, error),
    );
    socket.on('end', () => {
      if (answer && answer.status >= 300) finishWithError();
      else if (!settled && remaining > 0)
        fail(
          'ConnectionBroken',
          `the server closed the connection with ${remaining} bytes of the answer unsent`,
        );
    });
    destination.once('close', destinationClosed);

    const lines = [`GET ${get.path} HTTP/1.1`, `host: ${get.host}`, 'connection: close'];
    for (const [name, value] of Object.entries(get.headers)) {
      if (name.toLowerCase() !== 'host' && name.toLowerCase() !== 'connection')
        lines.push(`${name}: ${value}`);
    }
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  });
}
