import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { CollectedGauge, type MetricsRegistry } from './metrics.ts';

export const certificateExpiryMetric = 'berth_certificate_expiry_timestamp_seconds';

export interface WatchedCertificate {
  /** What the certificate is to this process: `serving` (its own), `ca` (what it verifies with). */
  readonly certificate: 'serving' | 'ca';
  /** A PEM file; the first certificate in it is the one reported. */
  readonly file: string;
}

/**
 * `berth_certificate_expiry_timestamp_seconds{certificate,file}`: when each certificate file's
 * first certificate stops being valid (its notAfter), in seconds since the epoch, read from the
 * file when scraped, so a renewed certificate (a Secret volume updated under the pod) shows at
 * the next scrape. The file is parsed again only when its modification time or size changed. A
 * file that is missing or not a certificate exports no sample for it; alert on the absence too.
 */
export function registerCertificateExpiry(
  metrics: MetricsRegistry,
  certificates: readonly WatchedCertificate[],
): void {
  const parsed = new Map<string, { stamp: string; notAfter: number }>();
  const expiry = async (file: string): Promise<number | undefined> => {
    try {
      const info = await stat(file);
      const stamp = `${info.mtimeMs}:${info.size}`;
      const known = parsed.get(file);
      if (known?.stamp === stamp) return known.notAfter;
      const notAfter = Date.parse(new X509Certificate(await readFile(file)).validTo) / 1000;
      parsed.set(file, { stamp, notAfter });
      return notAfter;
    } catch {
      parsed.delete(file);
      return undefined;
    }
  };
  metrics.register(
    new CollectedGauge(
      certificateExpiryMetric,
      'When the certificate in the file expires (notAfter), in seconds since the epoch; absent while the file holds none.',
      ['certificate', 'file'],
      async () => {
        const samples = [];
        for (const { certificate, file } of certificates) {
          const notAfter = await expiry(file);
          if (notAfter !== undefined)
            samples.push({ labels: { certificate, file }, value: notAfter });
        }
        return samples;
      },
    ),
  );
}
