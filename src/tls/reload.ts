import { readFile, stat } from 'node:fs/promises';
import type { Server as HttpsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { Logger } from '../observability/logger.ts';

/**
 * How often mounted certificate files are looked at. The kubelet replaces a Secret volume's
 * files by swapping its `..data` symlink, which no inotify watch on the file itself sees; a stat
 * of two files every couple of seconds sees it and costs nothing.
 */
export const reloadIntervalMillis = 2_000;

export interface FileWatch {
  stop(): void;
}

/** What identifies a file's current content without reading it: device, inode, size, mtime. */
async function signature(paths: readonly string[]): Promise<string> {
  const parts = await Promise.all(
    paths.map(async (path) => {
      try {
        const info = await stat(path);
        return `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}`;
      } catch {
        return 'missing';
      }
    }),
  );
  return parts.join('|');
}

/**
 * Calls `changed` whenever the files look different from the last time it returned true, and at
 * the first look (the caller compares content, so nothing written between its own read and the
 * first look is missed). A `changed` that returns false (files not consistent yet) is called
 * again at the next look. Never two calls at once.
 */
export function watchFiles(
  paths: readonly string[],
  changed: () => Promise<boolean>,
  intervalMillis = reloadIntervalMillis,
): FileWatch {
  let seen: string | undefined;
  let busy = false;
  const look = async () => {
    if (busy) return;
    busy = true;
    try {
      const now = await signature(paths);
      if (now !== seen && (await changed())) seen = now;
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void look(), intervalMillis).unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * Serves the certificate and key in these files, re-read when they change: new connections get
 * the new certificate, connections open already keep theirs. A certificate and key that do not
 * match (one file replaced, the other not yet) are not taken; the old pair serves until they do.
 */
export function reloadServerCertificate(
  server: HttpsServer,
  files: { readonly certificateFile: string; readonly keyFile: string },
  loaded: { cert: Buffer; key: Buffer },
  logger: Logger,
  intervalMillis = reloadIntervalMillis,
): FileWatch {
  let current = loaded;
  return watchFiles(
    [files.certificateFile, files.keyFile],
    async () => {
      let next: { cert: Buffer; key: Buffer };
      try {
        next = { cert: await readFile(files.certificateFile), key: await readFile(files.keyFile) };
      } catch (error) {
        logger.warn({ err: error }, 'tls certificate files not readable; serving the loaded one');
        return false;
      }
      if (next.cert.equals(current.cert) && next.key.equals(current.key)) return true;
      try {
        createSecureContext(next);
      } catch (error) {
        logger.warn(
          { err: error },
          'tls certificate and key do not match yet; serving the old one',
        );
        return false;
      }
      server.setSecureContext(next);
      current = next;
      logger.info({ file: files.certificateFile }, 'tls certificate reloaded');
      return true;
    },
    intervalMillis,
  );
}
