import { createPrivateKey, X509Certificate } from 'node:crypto';
import * as pkijs from 'pkijs';
import { isIP } from 'node:net';
import {
  clockSkewMillis,
  createCertificateAuthority,
  issueServingCertificate,
  type IssuedCertificate,
} from './certificates.ts';
import { splitCertificates } from './pem.ts';

/**
 * When Berth's own CA and serving certificate are renewed. Pure: the stored certificates and the
 * time in, the certificates to store and when to look again out.
 *
 * - The serving certificate is renewed at two thirds of its lifetime (as namespace credentials
 *   are), so the old one stays valid for a third while kubelets bring the new one to the pods.
 * - The CA lives `caLifetimeFactor` serving lifetimes and is renewed at two thirds of that, always
 *   together with a serving renewal: the new CA is added in front of the old one in `ca.crt`
 *   while that renewal's certificate is still signed by the old one, and only the next renewal
 *   (two thirds of a serving lifetime later) is signed by the new CA. Node proxies trust the new
 *   CA before any certificate they are shown needs it. The old CA stays in `ca.crt` until it
 *   expires.
 */
export const caLifetimeFactor = 8;

export interface StoredCertificates {
  /** `ca.crt` (the signing CA first, then older ones still trusted) and `ca.key`, if stored. */
  readonly ca?: IssuedCertificate | undefined;
  /** `tls.crt` and `tls.key`, if stored. */
  readonly serving?: IssuedCertificate | undefined;
}

export interface CertificateRequest {
  /** The CA's common name, when one is made. */
  readonly caName: string;
  /** The serving certificate's common name and its DNS names and IP addresses. */
  readonly commonName: string;
  readonly names: readonly string[];
  /** The serving certificate's lifetime. */
  readonly lifetimeMillis: number;
}

export interface CertificatePlan {
  /** What to store: the CA bundle and key, the serving certificate and key. */
  readonly ca: IssuedCertificate;
  readonly serving: IssuedCertificate;
  /** What changed: nothing, the serving certificate, or the CA (with a serving certificate). */
  readonly renewed: 'none' | 'serving' | 'ca';
  /** When the plan must be made again: the serving certificate's renewal, or an old CA's expiry. */
  readonly nextAt: Date;
}

/** No renewal comes sooner than this after an issue, whatever a certificate's dates say. */
const minimumRenewalMillis = 10_000;

/** When a certificate issued at notBefore + skew for `lifetime` is due. */
function renewalTime(certificate: X509Certificate, lifetimeMillis: number): Date {
  const issuedAt = certificate.validFromDate.getTime() + clockSkewMillis;
  const own = certificate.validToDate.getTime() - issuedAt;
  const lifetime = Math.min(own, lifetimeMillis);
  return new Date(issuedAt + Math.max((lifetime * 2) / 3, minimumRenewalMillis));
}

function parse(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

/** Written with the key identifiers strict verifiers require (not a certificate from before). */
function hasKeyIdentifiers(certificate: X509Certificate): boolean {
  const ids = (pkijs.Certificate.fromBER(certificate.raw).extensions ?? []).map((e) => e.extnID);
  return (
    ids.includes(pkijs.id_SubjectKeyIdentifier) && ids.includes(pkijs.id_AuthorityKeyIdentifier)
  );
}

function covers(certificate: X509Certificate, names: readonly string[]): boolean {
  return names.every((name) =>
    isIP(name) ? certificate.checkIP(name) !== undefined : certificate.checkHost(name) === name,
  );
}

export function planCertificates(
  stored: StoredCertificates,
  request: CertificateRequest,
  now = new Date(),
): CertificatePlan {
  const caLifetime = request.lifetimeMillis * caLifetimeFactor;
  const usable = (certificate: X509Certificate) => certificate.validToDate > now;
  const bundle = splitCertificates(stored.ca?.certificatePem ?? '')
    .map((pem) => ({ pem, certificate: parse(pem) }))
    .filter((entry): entry is { pem: string; certificate: X509Certificate } =>
      Boolean(entry.certificate && usable(entry.certificate)),
    );
  const signing = bundle[0];
  const signingValid =
    stored.ca !== undefined &&
    signing !== undefined &&
    signing.certificate.ca &&
    stored.ca.certificatePem.startsWith(signing.pem.trim()) &&
    matchesKey(signing.certificate, stored.ca.privateKeyPem);
  const issue = (ca: IssuedCertificate) =>
    issueServingCertificate(ca, request.commonName, request.names, request.lifetimeMillis, now);

  if (!signingValid || !stored.ca) {
    // No CA that can sign: a new one, and a certificate from it. Nothing trusted the old one any
    // more (expired, or its key lost), so there is nothing to overlap with.
    const ca = createCertificateAuthority(request.caName, caLifetime, now);
    const serving = issue(ca);
    return { ca, serving, renewed: 'ca', nextAt: nextLook(serving, [], request) };
  }
  const trusted = bundle.map((entry) => entry.certificate);
  const servingCertificate = stored.serving ? parse(stored.serving.certificatePem) : undefined;
  const servingValid =
    stored.serving !== undefined &&
    servingCertificate !== undefined &&
    !servingCertificate.ca &&
    matchesKey(servingCertificate, stored.serving.privateKeyPem) &&
    trusted.some(
      (ca) => servingCertificate.checkIssued(ca) && servingCertificate.verify(ca.publicKey),
    ) &&
    covers(servingCertificate, request.names) &&
    hasKeyIdentifiers(servingCertificate) &&
    now < renewalTime(servingCertificate, request.lifetimeMillis);
  const currentBundle: IssuedCertificate = {
    certificatePem: bundle.map((entry) => entry.pem).join(''),
    privateKeyPem: stored.ca.privateKeyPem,
  };
  if (servingValid && stored.serving) {
    return {
      ca: currentBundle,
      serving: stored.serving,
      renewed: 'none',
      nextAt: nextLook(servingCertificate, trusted.slice(1), request),
    };
  }
  const serving = issue(currentBundle);
  const caDue =
    now >= renewalTime(signing.certificate, caLifetime) ||
    !hasKeyIdentifiers(signing.certificate) ||
    signing.certificate.validToDate.getTime() - now.getTime() < request.lifetimeMillis;
  if (!caDue)
    return {
      ca: currentBundle,
      serving,
      renewed: 'serving',
      nextAt: nextLook(new X509Certificate(serving.certificatePem), trusted.slice(1), request),
    };
  const next = createCertificateAuthority(request.caName, caLifetime, now);
  return {
    ca: {
      certificatePem: next.certificatePem + currentBundle.certificatePem,
      privateKeyPem: next.privateKeyPem,
    },
    serving,
    renewed: 'ca',
    nextAt: nextLook(new X509Certificate(serving.certificatePem), trusted, request),
  };
}

function nextLook(
  serving: X509Certificate | IssuedCertificate,
  olderCAs: readonly X509Certificate[],
  request: CertificateRequest,
): Date {
  const certificate =
    serving instanceof X509Certificate ? serving : new X509Certificate(serving.certificatePem);
  const times = [
    renewalTime(certificate, request.lifetimeMillis).getTime(),
    ...olderCAs.map((ca) => ca.validToDate.getTime()),
  ];
  return new Date(Math.min(...times));
}

/** Whether `pem` is the private key of `certificate`; a key that does not parse is not. */
function matchesKey(certificate: X509Certificate, pem: string): boolean {
  try {
    return certificate.checkPrivateKey(createPrivateKey(pem));
  } catch {
    return false;
  }
}
