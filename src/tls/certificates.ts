import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  type KeyObject,
} from 'node:crypto';
import { isIP } from 'node:net';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { firstCertificate, fromPem, toPem } from './pem.ts';

/**
 * X.509 certificates for the operator-managed CA and the registry's serving certificate: ECDSA
 * P-256 keys, SHA-256 signatures, PEM out, with the extensions strict verifiers (OpenSSL's
 * -x509_strict, Python's default context, Go's crypto/x509) require: subject and authority key
 * identifiers, IP addresses as iPAddress SANs, key usage that fits an ECDSA key. pkijs builds the
 * structures; node:crypto signs the to-be-signed bytes, so issuing stays synchronous (WebCrypto,
 * which pkijs and @peculiar/x509 sign with, is asynchronous only).
 */
export interface IssuedCertificate {
  /** PEM; for a CA, the signing certificate first, then any older CAs still trusted. */
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

/** notBefore is this far in the past, so a node whose clock is a little behind accepts it. */
export const clockSkewMillis = 60_000;

const ecdsaWithSha256 = '1.2.840.10045.4.3.2';

function commonName(value: string): pkijs.RelativeDistinguishedNames {
  return new pkijs.RelativeDistinguishedNames({
    typesAndValues: [
      new pkijs.AttributeTypeAndValue({
        type: '2.5.4.3',
        value: new asn1js.Utf8String({ value }),
      }),
    ],
  });
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
function keyIdentifier(info: pkijs.PublicKeyInfo): Buffer {
  return createHash('sha1').update(info.subjectPublicKey.valueBlock.valueHexView).digest();
}

/** RFC 5280 dates: UTCTime through 2049, GeneralizedTime from 2050. */
function time(value: Date): pkijs.Time {
  const type = value.getUTCFullYear() >= 2050 ? pkijs.TimeType.GeneralizedTime : 0;
  return new pkijs.Time({ type, value });
}

function extension(extnID: string, critical: boolean, value: { toSchema(): asn1js.AsnType }) {
  return new pkijs.Extension({
    extnID,
    critical,
    extnValue: value.toSchema().toBER(false),
  });
}

function rawExtension(extnID: string, critical: boolean, value: asn1js.AsnType) {
  return new pkijs.Extension({ extnID, critical, extnValue: value.toBER(false) });
}

/** keyUsage as a named bit list (DER: trailing zero bits dropped, their count recorded). */
function keyUsage(...bits: number[]): asn1js.BitString {
  let value = 0;
  for (const bit of bits) value |= 0x80 >> bit;
  const unusedBits = 7 - Math.max(...bits);
  return new asn1js.BitString({ valueHex: new Uint8Array([value]).buffer, unusedBits });
}

const digitalSignature = 0;
const keyCertSign = 5;
const cRLSign = 6;

/** An address as iPAddress octets (4 for IPv4, 16 for IPv6). */
function addressOctets(address: string): Uint8Array {
  if (isIP(address) === 4) return new Uint8Array(address.split('.').map(Number));
  const [head = '', tail] = address.split('::');
  const groups = (part: string) => (part === '' ? [] : part.split(':'));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const missing = 8 - left.length - right.length;
  const all = [...left, ...Array<string>(tail === undefined ? 0 : missing).fill('0'), ...right];
  const bytes = new Uint8Array(16);
  all.forEach((group, index) => {
    const value = parseInt(group, 16);
    bytes[index * 2] = value >> 8;
    bytes[index * 2 + 1] = value & 0xff;
  });
  return bytes;
}

interface Subject {
  readonly commonName: string;
  readonly publicKey: KeyObject;
  readonly ca: boolean;
  readonly names?: readonly string[];
  readonly validForMillis: number;
}

interface Issuer {
  readonly name: pkijs.RelativeDistinguishedNames;
  readonly keyIdentifier: Buffer;
  /** A certificate never outlives the CA that signed it. */
  readonly notAfter?: Date;
}

/** The DER of a certificate for `subject`, signed with `signingKey` (the issuer's, or its own). */
function build(subject: Subject, issuer: Issuer | 'self', signingKey: KeyObject, now: Date) {
  const certificate = new pkijs.Certificate();
  const publicKeyInfo = pkijs.PublicKeyInfo.fromBER(
    subject.publicKey.export({ type: 'spki', format: 'der' }),
  );
  const subjectKeyId = keyIdentifier(publicKeyInfo);
  const issuerName = issuer === 'self' ? commonName(subject.commonName) : issuer.name;
  const authorityKeyId = issuer === 'self' ? subjectKeyId : issuer.keyIdentifier;
  // Positive and minimal: the top bit clear, the top byte never zero.
  const serial = randomBytes(16);
  serial[0] = ((serial[0] as number) & 0x7f) | 0x40;
  const notAfter = new Date(
    Math.min(
      now.getTime() + subject.validForMillis,
      (issuer !== 'self' && issuer.notAfter?.getTime()) || Infinity,
    ),
  );

  certificate.version = 2;
  certificate.serialNumber = new asn1js.Integer({ valueHex: new Uint8Array(serial).buffer });
  certificate.signature = new pkijs.AlgorithmIdentifier({ algorithmId: ecdsaWithSha256 });
  certificate.signatureAlgorithm = new pkijs.AlgorithmIdentifier({ algorithmId: ecdsaWithSha256 });
  certificate.issuer = issuerName;
  certificate.subject = commonName(subject.commonName);
  certificate.notBefore = time(new Date(now.getTime() - clockSkewMillis));
  certificate.notAfter = time(notAfter);
  certificate.subjectPublicKeyInfo = publicKeyInfo;
  const extensions = [
    extension(
      pkijs.id_BasicConstraints,
      true,
      new pkijs.BasicConstraints(subject.ca ? { cA: true, pathLenConstraint: 0 } : {}),
    ),
    rawExtension(
      pkijs.id_KeyUsage,
      true,
      subject.ca ? keyUsage(keyCertSign, cRLSign) : keyUsage(digitalSignature),
    ),
    rawExtension(
      pkijs.id_SubjectKeyIdentifier,
      false,
      new asn1js.OctetString({ valueHex: new Uint8Array(subjectKeyId).buffer }),
    ),
    extension(
      pkijs.id_AuthorityKeyIdentifier,
      false,
      new pkijs.AuthorityKeyIdentifier({
        keyIdentifier: new asn1js.OctetString({ valueHex: new Uint8Array(authorityKeyId).buffer }),
      }),
    ),
  ];
  if (!subject.ca) {
    extensions.push(
      extension(
        pkijs.id_ExtKeyUsage,
        false,
        new pkijs.ExtKeyUsage({ keyPurposes: ['1.3.6.1.5.5.7.3.1'] }),
      ),
      extension(
        pkijs.id_SubjectAltName,
        false,
        new pkijs.GeneralNames({
          names: (subject.names ?? []).map((value) =>
            isIP(value)
              ? new pkijs.GeneralName({
                  type: 7,
                  value: new asn1js.OctetString({ valueHex: addressOctets(value).buffer }),
                })
              : new pkijs.GeneralName({ type: 2, value }),
          ),
        }),
      ),
    );
  }
  certificate.extensions = extensions;
  const tbs = certificate.encodeTBS().toBER(false);
  certificate.tbsView = new Uint8Array(tbs);
  // node:crypto's ECDSA signature is DER (Ecdsa-Sig-Value), the form X.509 carries.
  certificate.signatureValue = new asn1js.BitString({
    valueHex: new Uint8Array(sign('sha256', Buffer.from(tbs), signingKey)).buffer,
  });
  // Framed around the very bytes signed (tbsView), not a second encoding of them.
  return Buffer.from(certificate.toSchema(false).toBER(false));
}

function newKeyPair() {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

/** A self-signed CA. */
export function createCertificateAuthority(
  name: string,
  validForMillis: number,
  now = new Date(),
): IssuedCertificate {
  const { privateKey, publicKey } = newKeyPair();
  const der = build(
    { commonName: name, publicKey, ca: true, validForMillis },
    'self',
    privateKey,
    now,
  );
  return {
    certificatePem: toPem('CERTIFICATE', der),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/**
 * A serving certificate for DNS names and IP addresses (v4 or v6), signed by `ca` (the first
 * certificate of its PEM, whose key `ca.privateKeyPem` is); it ends no later than that CA.
 */
export function issueServingCertificate(
  ca: IssuedCertificate,
  name: string,
  names: readonly string[],
  validForMillis: number,
  now = new Date(),
): IssuedCertificate {
  const { privateKey, publicKey } = newKeyPair();
  const caKey = createPrivateKey(ca.privateKeyPem);
  const caCertificate = pkijs.Certificate.fromBER(fromPem(firstCertificate(ca.certificatePem)));
  const caKeyInfo = pkijs.PublicKeyInfo.fromBER(
    createPublicKey(caKey).export({ type: 'spki', format: 'der' }),
  );
  const der = build(
    { commonName: name, publicKey, ca: false, names, validForMillis },
    {
      name: caCertificate.subject,
      keyIdentifier: keyIdentifier(caKeyInfo),
      notAfter: caCertificate.notAfter.value,
    },
    caKey,
    now,
  );
  return {
    certificatePem: toPem('CERTIFICATE', der),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}
