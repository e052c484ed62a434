/** PEM framing (RFC 7468) for certificates and bundles of them. */
export function toPem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** The DER of the first PEM block in `pem`. */
export function fromPem(pem: string): Buffer {
  const block = /-----BEGIN [A-Z ]+-----([^-]+)-----END [A-Z ]+-----/.exec(pem);
  if (!block) throw new Error('no PEM block');
  return Buffer.from((block[1] as string).replace(/\s+/g, ''), 'base64');
}

/** Every certificate of a PEM bundle, each as its own PEM, in order. */
export function splitCertificates(pem: string): string[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)].map(
    (match) => `${match[0]}\n`,
  );
}

export function firstCertificate(pem: string): string {
  const first = splitCertificates(pem)[0];
  if (!first) throw new Error('no certificate in the PEM');
  return first;
}
