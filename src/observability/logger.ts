import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The process logger: JSON lines on stdout, timestamped in RFC 3339 (UTC), as Kubernetes
 * components and log collectors expect. Credentials never reach it: request logging records
 * method, path, status and sizes only, and `redact` covers any header object logged by mistake.
 */
export function createLogger(level: string, name: string): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        '*.authorization',
        '*.Authorization',
        '*.password',
        '*.token',
        'headers.authorization',
      ],
      censor: '[redacted]',
    },
  });
}
