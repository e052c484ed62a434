import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCertificateAuthority } from '../tls/certificates.ts';
import { registerCertificateExpiry } from './certificate-expiry.ts';
import {
  CollectedCounter,
  CollectedGauge,
  Counter,
  Gauge,
  Histogram,
  MetricsRegistry,
} from './metrics.ts';
import { registerVolumeUsage } from './volume-usage.ts';

describe('MetricsRegistry on prom-client', () => {
  it('writes counters, gauges and histograms with labels in declared order', async () => {
    const metrics = new MetricsRegistry();
    const requests = metrics.register(
      new Counter('t_requests_total', 'Requests.', ['route', 'method', 'status']),
    );
    requests.inc({ status: '404', method: 'GET', route: 'tags' });
    requests.inc({ status: '404', method: 'GET', route: 'tags' }, 2);
    metrics.register(new Gauge('t_up', 'Up.', () => 1));
    metrics.register(new Gauge('t_absent', 'Absent.', () => Number.NaN));
    const durations = metrics.register(
      new Histogram('t_duration_seconds', 'Latency.', ['route'], [0.1, 1]),
    );
    durations.observe({ route: 'blob' }, 0.5);
    const text = await metrics.render();
    expect(text).toContain('# TYPE t_requests_total counter');
    expect(text).toContain('t_requests_total{route="tags",method="GET",status="404"} 3');
    expect(text).toContain('t_up 1');
    expect(text).toContain('# TYPE t_absent gauge');
    expect(text).not.toMatch(/^t_absent /m);
    expect(text).toContain('t_duration_seconds_bucket{le="0.1",route="blob"} 0');
    expect(text).toContain('t_duration_seconds_bucket{le="1",route="blob"} 1');
    expect(text).toContain('t_duration_seconds_count{route="blob"} 1');
    expect(metrics.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
  });

  it('reads collected samples when scraped: exactly those there are', async () => {
    const metrics = new MetricsRegistry();
    let samples = [{ labels: { code: '404' }, value: 2 }];
    metrics.register(new CollectedCounter('t_errors_total', 'Errors.', ['code'], () => samples));
    metrics.register(new CollectedGauge('t_earliest', 'Earliest.', [], () => []));
    expect(await metrics.render()).toContain('t_errors_total{code="404"} 2');
    samples = [];
    const text = await metrics.render();
    expect(text).not.toMatch(/^t_errors_total/m);
    expect(text).not.toMatch(/^t_earliest /m);
  });

  it('refuses a second metric of the same name', () => {
    const metrics = new MetricsRegistry();
    metrics.register(new Counter('t_twice_total', 'Once.'));
    expect(() => metrics.register(new Counter('t_twice_total', 'Twice.'))).toThrow(
      'A metric with the name t_twice_total has already been registered.',
    );
  });

  it('exports the process and Node.js metrics of prom-client', async () => {
    const metrics = new MetricsRegistry();
    metrics.registerProcessMetrics();
    const text = await metrics.render();
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_eventloop_lag_seconds',
      'nodejs_gc_duration_seconds',
    ])
      expect(text).toContain(`# TYPE ${name} `);
  });

  it('reports a certificate file’s expiry, follows a renewal, and drops a missing file', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'berth-cert-expiry-'));
    try {
      const file = join(directory, 'ca.crt');
      const first = createCertificateAuthority('first', 3_600_000);
      await writeFile(file, first.certificatePem);
      const metrics = new MetricsRegistry();
      registerCertificateExpiry(metrics, [{ certificate: 'ca', file }]);
      const value = async (): Promise<number | undefined> => {
        const line = (await metrics.render())
          .split('\n')
          .find((entry) => entry.startsWith('berth_certificate_expiry_timestamp_seconds{'));
        return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
      };
      const hour = await value();
      // X.509 times have whole seconds.
      expect(Math.abs((hour as number) - (Date.now() + 3_600_000) / 1000)).toBeLessThan(5);
      await writeFile(file, createCertificateAuthority('second', 7_200_000).certificatePem);
      expect(Math.abs(((await value()) as number) - (Date.now() + 7_200_000) / 1000)).toBeLessThan(
        5,
      );
      await rm(file);
      expect(await value()).toBeUndefined();
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('reports the capacity and available bytes of a directory’s filesystem', async () => {
    const metrics = new MetricsRegistry();
    registerVolumeUsage(metrics, tmpdir());
    const text = await metrics.render();
    const capacity = Number(/^berth_registry_storage_capacity_bytes (\d+)$/m.exec(text)?.[1]);
    const available = Number(/^berth_registry_storage_available_bytes (\d+)$/m.exec(text)?.[1]);
    expect(capacity).toBeGreaterThan(0);
    expect(available).toBeGreaterThanOrEqual(0);
    expect(available).toBeLessThanOrEqual(capacity);
  });
});
