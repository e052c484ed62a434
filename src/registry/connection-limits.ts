import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../observability/logger.ts';
import { Counter, type MetricsRegistry } from '../observability/metrics.ts';

export interface ConnectionLimits {
  readonly maxConnections: number;
  /** How long a client may move fewer than `minClientRate` bytes a second while awaited. */
  readonly clientTimeout: number;
  readonly minClientRate: number;
}

interface Watched {
  /** The request the connection serves now (or served last, on an idle keep-alive connection). */
  request: IncomingMessage;
  /** Since when every check found the registry waiting on this client, and what had moved then. */
  awaitedSince: number | undefined;
  movedThen: number;
}

/**
 * Bounds what clients can hold: at most `maxConnections` connections (Node closes the others as
 * soon as they are accepted), and none held by a client that makes the registry wait on it. The
 * registry waits on a client while a request body is being read and none of it is left unread,
 * or while response bytes sit in the socket because the client does not take them. A client
 * awaited for `clientTimeout` that moved less than `minClientRate` bytes a second over that time
 * is disconnected; what the registry itself is slow at (storage, hashing) never counts against
 * it. There is deliberately no limit on a request's total time: a healthy multi-gigabyte upload
 * takes as long as it takes. Returns a function that stops the checks.
 */
export function limitConnections(
  server: Server,
  limits: ConnectionLimits,
  metrics: MetricsRegistry,
  logger: Logger,
): () => void {
  const refused = metrics.register(
    new Counter(
      'berth_registry_connections_refused_total',
      'Connections closed by the registry: over maxConnections, or a client too slow.',
      ['reason'],
    ),
  );
  server.maxConnections = limits.maxConnections;
  server.on('drop', () => refused.inc({ reason: 'max_connections' }));

  const watched = new Map<Socket, Watched>();
  server.on('request', (request: IncomingMessage) => {
    const socket = request.socket;
    const entry = watched.get(socket);
    if (entry) {
      entry.request = request;
      entry.awaitedSince = undefined;
      return;
    }
    watched.set(socket, { request, awaitedSince: undefined, movedThen: 0 });
    socket.once('close', () => watched.delete(socket));
  });

  // A few checks per timeout, so that a streak of waiting is seen to last the whole timeout.
  const timer = setInterval(
    () => {
      const now = Date.now();
      for (const [socket, entry] of watched) {
        if (socket.destroyed) continue;
        if (!awaitsClient(socket, entry.request)) {
          entry.awaitedSince = undefined;
          continue;
        }
        const moved = bytesMoved(socket);
        if (entry.awaitedSince === undefined) {
          entry.awaitedSince = now;
          entry.movedThen = moved;
          continue;
        }
        const waited = now - entry.awaitedSince;
        if (waited < limits.clientTimeout) continue;
        if (moved - entry.movedThen >= (limits.minClientRate * waited) / 1000) {
          entry.awaitedSince = now;
          entry.movedThen = moved;
          continue;
        }
        refused.inc({ reason: 'slow_client' });
        logger.info(
          {
            method: entry.request.method,
            remoteAddress: socket.remoteAddress,
            waitedMs: waited,
            movedBytes: moved - entry.movedThen,
          },
          'slow client disconnected',
        );
        socket.destroy();
      }
    },
    Math.max(100, limits.clientTimeout / 4),
  ).unref();
  return () => clearInterval(timer);
}

/** Whether the registry, to go on with this connection, needs the client to send or to read. */
function awaitsClient(socket: Socket, request: IncomingMessage): boolean {
  // Bytes accepted but not yet written: the kernel's buffer is full because nobody reads.
  if (socket.writableLength > 0) return true;
  // A body being read (not paused for storage) with nothing of it waiting to be processed.
  return !request.complete && request.readableFlowing === true && request.readableLength === 0;
}

/** Bytes the socket received, plus those it handed to the kernel (written and acknowledged). */
function bytesMoved(socket: Socket): number {
  return socket.bytesRead + (socket.bytesWritten - socket.writableLength);
}
