import {
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { isIP } from 'node:net';
import {
  bitString,
  boolean,
  explicit,
  implicit,
  integer,
  octetString,
  oid,
  sequence,
  set,
  time,
  utf8String,
} from './der.ts';

/**
 * X.509 certificates for the operator-managed CA and the registry's serving certificate: ECDSA
 * P-256 keys, SHA-256 signatures, PEM out. Node can verify certificates but not write them, and
 * this is all a registry needs.
 */
export interface IssuedCertificate {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

const ecdsaWithSha256 = sequence(oid('1.2.840.10045.4.3.2'));

function name(commonName: string): Buffer {
  return sequence(set(sequence(oid('2.5.4.3'), utf8String(commonName))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [boolean(true)] : []), octetString(value));
}

function toPem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function fromPem(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

interface Subject {
  readonly commonName: string;
  readonly publicKey: KeyObject;
  readonly ca: boolean;
  readonly dnsNames?: readonly string[];
  readonly validForMillis: number;
}

function build(subject: Subject, issuerName: string, issuerKey: KeyObject, now: Date): Buffer {
  const serial = randomBytes(16);
  serial[0] = (serial[0] as number) & 0x7f;
  const keyUsage = subject.ca
    ? Buffer.from([0x03, 0x02, 0x01, 0x06]) // keyCertSign, cRLSign
    : Buffer.from([0x03, 0x02, 0x05, 0xa0]); // digitalSignature, keyEncipherment
  const extensions = [
    extension('2.5.29.19', true, subject.ca ? sequence(boolean(true)) : sequence()),
    extension('2.5.29.15', true, keyUsage),
  ];
  if (!subject.ca) {
    extensions.push(extension('2.5.29.37', false, sequence(oid('1.3.6.1.5.5.7.3.1'))));
    const alternatives = (subject.dnsNames ?? []).map((value) =>
      isIP(value) === 4
        ? implicit(7, Buffer.from(value.split('.').map(Number)))
        : implicit(2, Buffer.from(value, 'ascii')),
    );
    extensions.push(extension('2.5.29.17', false, sequence(...alternatives)));
  }
  const notBefore = new Date(now.getTime() - 5 * 60_000);
  const tbs = sequence(
    explicit(0, integer(Buffer.from([2]))),
    integer(serial),
    ecdsaWithSha256,
    name(issuerName),
    sequence(time(notBefore), time(new Date(now.getTime() + subject.validForMillis))),
    name(subject.commonName),
    subject.publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, sequence(...extensions)),
  );
  const signature = sign('sha256', tbs, issuerKey);
  return sequence(tbs, ecdsaWithSha256, bitString(signature));
}

/** A self-signed CA. */
export function createCertificateAuthority(
  commonName: string,
  validForMillis: number,
  now = new Date(),
): IssuedCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = build(
    { commonName, publicKey, ca: true, validForMillis },
    commonName,
    privateKey,
    now,
  );
  return {
    certificatePem: toPem('CERTIFICATE', der),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/** A serving certificate for `dnsNames` (and IPv4 addresses), signed by `ca`. */
export function issueServingCertificate(
  ca: IssuedCertificate,
  commonName: string,
  dnsNames: readonly string[],
  validForMillis: number,
  now = new Date(),
): IssuedCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const caKey = createPrivateKey(ca.privateKeyPem);
  const caName = commonNameOf(ca.certificatePem);
  const der = build(
    { commonName, publicKey, ca: false, dnsNames, validForMillis },
    caName,
    caKey,
    now,
  );
  return {
    certificatePem: toPem('CERTIFICATE', der),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

function commonNameOf(certificatePem: string): string {
  const subject = new X509Certificate(fromPem(certificatePem)).subject;
  return /CN=([^\n]+)/.exec(subject)?.[1] ?? 'berth';
}
