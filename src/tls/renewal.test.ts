import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, issueServingCertificate } from './certificates.ts';
import { splitCertificates } from './pem.ts';
import { caLifetimeFactor, planCertificates, type CertificatePlan } from './renewal.ts';

const minute = 60_000;
const lifetime = 30 * minute;
const request = {
  caName: 'test CA',
  commonName: 'berth-main.berth-system',
  names: ['berth-main', 'berth-main.berth-system.svc', 'localhost', '127.0.0.1'],
  lifetimeMillis: lifetime,
};
const start = new Date('2030-01-01T00:00:00Z');
const at = (minutes: number) => new Date(start.getTime() + minutes * minute);

function servingOf(plan: CertificatePlan): X509Certificate {
  return new X509Certificate(plan.serving.certificatePem);
}

function bundleOf(plan: CertificatePlan): X509Certificate[] {
  return splitCertificates(plan.ca.certificatePem).map((pem) => new X509Certificate(pem));
}

/** Whether a client trusting `plan`'s bundle accepts `serving`. */
function trusts(plan: CertificatePlan, serving: X509Certificate): boolean {
  return bundleOf(plan).some((ca) => serving.checkIssued(ca) && serving.verify(ca.publicKey));
}

describe('planCertificates', () => {
  it('makes a CA and a certificate at first, then keeps them until two thirds of the lifetime', () => {
    const first = planCertificates({}, request, start);
    expect(first.renewed).toBe('ca');
    expect(servingOf(first).validToDate).toEqual(at(30));
    expect(bundleOf(first)).toHaveLength(1);
    // Renewal at two thirds: 20 minutes in.
    expect(first.nextAt).toEqual(at(20));

    const kept = planCertificates(first, request, at(19));
    expect(kept.renewed).toBe('none');
    expect(kept.serving).toEqual(first.serving);
    expect(kept.ca).toEqual(first.ca);
    expect(kept.nextAt).toEqual(at(20));

    const renewed = planCertificates(kept, request, at(20));
    expect(renewed.renewed).toBe('serving');
    expect(renewed.ca).toEqual(first.ca);
    expect(renewed.serving.certificatePem).not.toBe(first.serving.certificatePem);
    expect(servingOf(renewed).validToDate).toEqual(at(50));
    expect(renewed.nextAt).toEqual(at(40));
    expect(trusts(renewed, servingOf(renewed))).toBe(true);
  });

  it('rolls the CA with overlap: trusted before it signs, the old one kept until it expires', () => {
    let plan = planCertificates({}, request, start);
    const firstCa = bundleOf(plan)[0] as X509Certificate;
    // The CA lives 8 lifetimes (240 min) and is due at two thirds of that (160 min).
    expect(firstCa.validToDate).toEqual(at(30 * caLifetimeFactor));
    let now = 0;
    let rolled: { at: number; plan: CertificatePlan } | undefined;
    // Follow the renewals the plan asks for, as the operator's requeue does.
    while (!rolled) {
      const previous = plan;
      now = (plan.nextAt.getTime() - start.getTime()) / minute;
      plan = planCertificates(plan, request, at(now));
      // Clients that took the previous bundle accept the new certificate: no failed pull.
      expect(trusts(previous, servingOf(plan))).toBe(true);
      if (plan.renewed === 'ca') rolled = { at: now, plan };
    }
    expect(rolled.at).toBe(160);
    const [newCa, oldCa] = bundleOf(rolled.plan);
    expect(oldCa?.fingerprint256).toBe(firstCa.fingerprint256);
    expect(newCa?.fingerprint256).not.toBe(firstCa.fingerprint256);
    // This renewal is still signed by the old CA; the next one by the new CA.
    expect(servingOf(rolled.plan).checkIssued(firstCa)).toBe(true);
    const next = planCertificates(rolled.plan, request, rolled.plan.nextAt);
    expect(next.renewed).toBe('serving');
    expect(servingOf(next).checkIssued(newCa as X509Certificate)).toBe(true);
    expect(trusts(rolled.plan, servingOf(next))).toBe(true);
    // The old CA leaves the bundle when it expires (240 min), and the plan looks then.
    let late = next;
    for (let step = 0; step < 10 && bundleOf(late).length > 1; step++)
      late = planCertificates(late, request, late.nextAt);
    expect(late.nextAt.getTime()).toBeGreaterThan(firstCa.validToDate.getTime());
    expect(bundleOf(late).map((ca) => ca.fingerprint256)).toEqual([newCa?.fingerprint256]);
  });

  it('replaces a certificate whose key, names or issuer do not fit, and a shortened lifetime at once', () => {
    const first = planCertificates({}, request, start);
    const otherKey = planCertificates(
      { ca: first.ca, serving: { ...first.serving, privateKeyPem: first.ca.privateKeyPem } },
      request,
      at(1),
    );
    expect(otherKey.renewed).toBe('serving');
    const moreNames = planCertificates(
      first,
      { ...request, names: [...request.names, 'x'] },
      at(1),
    );
    expect(moreNames.renewed).toBe('serving');
    expect(servingOf(moreNames).checkHost('x')).toBe('x');
    const stranger = createCertificateAuthority('stranger', lifetime * 8, start);
    const foreign = planCertificates(
      {
        ca: first.ca,
        serving: issueServingCertificate(stranger, 'x', request.names, lifetime, start),
      },
      request,
      at(1),
    );
    expect(foreign.renewed).toBe('serving');
    expect(trusts(foreign, servingOf(foreign))).toBe(true);
    // From 30 minutes to 6: the 30-minute certificate is due at 4 minutes (two thirds of 6).
    const shorter = { ...request, lifetimeMillis: 6 * minute };
    expect(planCertificates(first, shorter, at(3)).renewed).toBe('none');
    expect(planCertificates(first, shorter, at(4)).renewed).toBe('serving');
  });

  it('starts over with a new CA when the stored CA has expired or its key is lost', () => {
    const first = planCertificates({}, request, start);
    const expired = planCertificates(first, request, at(30 * caLifetimeFactor + 1));
    expect(expired.renewed).toBe('ca');
    expect(bundleOf(expired)).toHaveLength(1);
    const lost = planCertificates(
      { ca: { ...first.ca, privateKeyPem: first.serving.privateKeyPem }, serving: first.serving },
      request,
      at(1),
    );
    expect(lost.renewed).toBe('ca');
    expect(trusts(lost, servingOf(lost))).toBe(true);
  });
});
