import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCertificateAuthority, issueServingCertificate } from './certificates.ts';

const day = 86_400_000;

describe('certificates', () => {
  const ca = createCertificateAuthority('berth-test-ca', 365 * day);
  const serving = issueServingCertificate(
    ca,
    'berth-main',
    ['berth-main.berth-system.svc', 'localhost', '127.0.0.1'],
    90 * day,
  );

  it('makes a CA that signs a serving certificate Node verifies', () => {
    const caCertificate = new X509Certificate(ca.certificatePem);
    const certificate = new X509Certificate(serving.certificatePem);
    expect(caCertificate.ca).toBe(true);
    expect(certificate.ca).toBe(false);
    expect(certificate.verify(caCertificate.publicKey)).toBe(true);
    expect(certificate.checkIssued(caCertificate)).toBe(true);
    expect(certificate.checkHost('berth-main.berth-system.svc')).toBe(
      'berth-main.berth-system.svc',
    );
    expect(certificate.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(certificate.checkHost('evil.example.com')).toBeUndefined();
  });

  it('passes openssl verify for TLS serving', () => {
    const directory = mkdtempSync(join(tmpdir(), 'berth-certs-'));
    try {
      writeFileSync(join(directory, 'ca.crt'), ca.certificatePem);
      writeFileSync(join(directory, 'tls.crt'), serving.certificatePem);
      const output = execFileSync('openssl', [
        'verify',
        '-purpose',
        'sslserver',
        '-CAfile',
        join(directory, 'ca.crt'),
        join(directory, 'tls.crt'),
      ]).toString();
      expect(output.trim()).toBe(`${join(directory, 'tls.crt')}: OK`);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
