import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { RegistryConfig } from '../config/registry.ts';
import type { Logger } from '../observability/logger.ts';
import { MetricsRegistry } from '../observability/metrics.ts';
import { createRegistryApp } from './http/app.ts';
import { createRegistryServices, type RegistryServices } from './services.ts';
import { temporaryDirectory } from './storage/filesystem/driver.ts';
import { describeStorage, openStorage } from './storage/open.ts';
import { listOrEmpty } from './service/links.ts';
import { setUpAuth } from './auth/setup.ts';
import { Readiness } from './readiness.ts';
import { limitConnections } from './connection-limits.ts';
import { scheduleCollection, type CollectionSchedule } from './gc/schedule.ts';
import { reportUsage } from './service/usage-reports.ts';
import { reloadServerCertificate, type FileWatch } from '../tls/reload.ts';
import { registerCertificateExpiry } from '../observability/certificate-expiry.ts';
import { formatAddress } from '../observability/probes.ts';

export interface RunningRegistry {
  readonly server: Server;
  readonly services: RegistryServices;
  /** The bound address, e.g. `127.0.0.1:5000`. */
  readonly address: string;
  /** Stops accepting, lets in-flight requests finish (up to the shutdown timeout), then closes. */
  stop(): Promise<void>;
}

/**
 * Starts `berth registry`: storage, services and the HTTP server. Before listening, it clears
 * temporary files left by a crash and abandoned uploads past their grace period, and probes
 * storage (then keeps probing) for readiness.
 */
export async function startRegistry(
  config: RegistryConfig,
  logger: Logger,
): Promise<RunningRegistry> {
  const driver = openStorage(config.storage);
  const metrics = new MetricsRegistry();
  metrics.registerProcessMetrics();
  const services = createRegistryServices(driver, config, { metrics, logger });

  // Storage the registry cannot write must not stop it: it reports that on /readyz instead.
  await removeStaleTemporaryFiles(services, logger).catch((error: unknown) =>
    logger.warn({ err: error }, 'stale temporary files not removed'),
  );
  const readiness = new Readiness(driver, logger);
  await readiness.start();
  const purge = async (): Promise<void> => {
    try {
      const removed = await services.uploads.purge(
        new Date(Date.now() - config.uploads.purgeAfter),
      );
      if (removed > 0) logger.info({ removed }, 'abandoned uploads purged');
    } catch (error) {
      logger.error({ err: error }, 'upload purge failed');
    }
  };
  await purge();
  const purgeTimer = setInterval(() => void purge(), config.uploads.purgeInterval).unref();
  // Beside the purge: the collector leaves `_uploads` to it.
  const collection: CollectionSchedule | undefined = config.gc
    ? scheduleCollection(services, config.gc, metrics, logger, () => services.quotas.policy())
    : undefined;

  const authentication = await setUpAuth(config, logger);
  // Quotas follow the live policy, as access does.
  if (authentication) services.quotas.policy = () => authentication.auth.policy.current();
  // Kubernetes mode: each Repository's usage in its status, measured here (the operator
  // never reads storage).
  const usageReports = authentication
    ? reportUsage(
        services.quotas,
        authentication.auth.policy,
        logger,
        config.gc ? { manifests: services.manifests, settings: config.gc } : undefined,
      )
    : undefined;
  const app = createRegistryApp({
    services,
    logger,
    metrics,
    logRequests: config.log.requests,
    readiness: () => readiness.current(),
    auth: authentication?.auth,
  });
  const tls = config.tls
    ? { cert: await readFile(config.tls.certificateFile), key: await readFile(config.tls.keyFile) }
    : undefined;
  const serverOptions = {
    // Node's default (300 s) would cut off a slow multi-gigabyte upload.
    requestTimeout: 0,
    headersTimeout: 60_000,
    keepAliveTimeout: 75_000,
    // Larger socket reads: measured 370 -> 580 MB/s on a 256 MiB push to tmpfs.
    highWaterMark: 1024 * 1024,
  };
  let certificateWatch: FileWatch | undefined;
  let server: Server;
  if (config.tls && tls) {
    const secure = createHttpsServer({ ...serverOptions, ...tls }, app);
    // A renewed certificate (Berth's own or cert-manager's, in the mounted Secret) is served
    // without a restart.
    certificateWatch = reloadServerCertificate(secure, config.tls, tls, logger);
    // Read at scrape, so a renewed certificate shows at the next one.
    registerCertificateExpiry(metrics, [
      { certificate: 'serving', file: config.tls.certificateFile },
    ]);
    server = secure;
  } else {
    server = createServer(serverOptions, app);
  }
  // An idle socket (no bytes either way) is dropped after this long.
  server.setTimeout(10 * 60_000);
  const stopLimits = limitConnections(server, config.limits, metrics, logger);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = formatAddress(server.address());
  logger.info(
    { address, tls: tls !== undefined, storage: describeStorage(config.storage) },
    'registry listening',
  );

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      readiness.shutDown();
      clearInterval(purgeTimer);
      certificateWatch?.stop();
      const collected = collection?.stop();
      stopLimits();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Keep-alive connections become idle as their requests finish; close each as soon as it is.
      const reaper = setInterval(() => server.closeIdleConnections(), 100);
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), config.shutdownTimeout);
      await closed;
      clearInterval(reaper);
      clearTimeout(timer);
      await collected;
      await usageReports?.stop();
      await services.uploads.close();
      services.mirrors.close();
      authentication?.close();
      logger.info('registry stopped');
    })();
    return stopping;
  };
  return { server, services, address, stop };
}

/** Files in the temporary directory older than an hour belong to writes that never finished. */
async function removeStaleTemporaryFiles(
  services: RegistryServices,
  logger: Logger,
): Promise<void> {
  const cutoff = Date.now() - 3_600_000;
  let removed = 0;
  for (const name of await listOrEmpty(services.driver, temporaryDirectory)) {
    const path = `${temporaryDirectory}/${name}`;
    const info = await services.driver.stat(path);
    if (info && info.modifiedAt.getTime() < cutoff) {
      await services.driver.delete(path);
      removed += 1;
    }
  }
  if (removed > 0) logger.info({ removed }, 'stale temporary files removed');
}
