import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCertificateAuthority, issueServingCertificate } from './certificates.ts';

const day = 86_400_000;

/** What `openssl x509 -text` says of an extension, e.g. "X509v3 Key Usage: critical". */
function extensionText(pem: string, name: string): string {
  const text = execFileSync('openssl', ['x509', '-noout', '-ext', name], { input: pem }).toString();
  return text.replace(/\s+/g, ' ').trim();
}

describe('certificates', () => {
  const ca = createCertificateAuthority('berth-test-ca', 365 * day);
  const serving = issueServingCertificate(
    ca,
    'berth-main',
    ['berth-main.berth-system.svc', 'localhost', '127.0.0.1', '::1', 'fd00::a:1'],
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
    expect(certificate.checkIP('::1')).toBe('::1');
    expect(certificate.checkIP('fd00:0:0:0:0:0:a:1')).toBe('fd00:0:0:0:0:0:a:1');
    expect(certificate.checkHost('evil.example.com')).toBeUndefined();
    expect(certificate.checkHost('127.0.0.1')).toBeUndefined();
  });

  it('passes openssl verify -x509_strict for TLS serving', () => {
    const directory = mkdtempSync(join(tmpdir(), 'berth-certs-'));
    try {
      writeFileSync(join(directory, 'ca.crt'), ca.certificatePem);
      writeFileSync(join(directory, 'tls.crt'), serving.certificatePem);
      const output = execFileSync('openssl', [
        'verify',
        '-x509_strict',
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

  it('carries key identifiers, IP SANs and key usage that fits ECDSA keys', () => {
    const caKeyId = extensionText(ca.certificatePem, 'subjectKeyIdentifier').split(': ')[1];
    expect(caKeyId).toMatch(/^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    expect(extensionText(ca.certificatePem, 'authorityKeyIdentifier')).toContain(caKeyId);
    expect(extensionText(ca.certificatePem, 'basicConstraints')).toBe(
      'X509v3 Basic Constraints: critical CA:TRUE, pathlen:0',
    );
    expect(extensionText(ca.certificatePem, 'keyUsage')).toBe(
      'X509v3 Key Usage: critical Certificate Sign, CRL Sign',
    );

    const pem = serving.certificatePem;
    expect(extensionText(pem, 'authorityKeyIdentifier')).toContain(caKeyId);
    expect(extensionText(pem, 'subjectKeyIdentifier')).not.toContain(caKeyId);
    // ECDSA keys sign; keyEncipherment is for RSA key transport and strict clients refuse it.
    expect(extensionText(pem, 'keyUsage')).toBe('X509v3 Key Usage: critical Digital Signature');
    expect(extensionText(pem, 'extendedKeyUsage')).toBe(
      'X509v3 Extended Key Usage: TLS Web Server Authentication',
    );
    expect(extensionText(pem, 'basicConstraints')).toBe(
      'X509v3 Basic Constraints: critical CA:FALSE',
    );
    expect(extensionText(pem, 'subjectAltName')).toBe(
      'X509v3 Subject Alternative Name: DNS:berth-main.berth-system.svc, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:FD00:0:0:0:0:0:A:1',
    );
  });

  it('never outlives the CA that signs it, and writes dates after 2049 as GeneralizedTime', () => {
    const short = createCertificateAuthority('short', 10 * day);
    const leaf = issueServingCertificate(short, 'x', ['x'], 90 * day);
    expect(new X509Certificate(leaf.certificatePem).validToDate).toEqual(
      new X509Certificate(short.certificatePem).validToDate,
    );
    const long = createCertificateAuthority('long', 40 * 365 * day);
    expect(new X509Certificate(long.certificatePem).validToDate.getUTCFullYear()).toBeGreaterThan(
      2050,
    );
    const dump = execFileSync('openssl', ['asn1parse'], { input: long.certificatePem }).toString();
    expect(dump).toMatch(/UTCTIME/);
    expect(dump).toMatch(/GENERALIZEDTIME/);
  });
});
