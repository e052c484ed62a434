import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyRing } from './keys.ts';
import { InvalidTokenError, TokenService } from './tokens.ts';

const settings = {
  issuer: 'berth',
  service: 'berth-registry',
  tokenTtlMillis: 300_000,
  credentialLifetimeMillis: 3_600_000,
};

describe('KeyRing', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'berth-keys-'));
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('creates a key file readable only by its owner, and loads the same keys again', async () => {
    const file = join(directory, 'keys.json');
    const ring = await KeyRing.open(file, {
      rotateAfterMillis: 86_400_000,
      keepRetiredForMillis: 3_600_000,
    });
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const again = await KeyRing.open(file, {
      rotateAfterMillis: 86_400_000,
      keepRetiredForMillis: 3_600_000,
    });
    expect(again.kids).toEqual(ring.kids);
  });

  it('rotates with overlap: a retired key verifies until everything it signed has expired', async () => {
    const file = join(directory, 'keys.json');
    const options = { rotateAfterMillis: 86_400_000, keepRetiredForMillis: 3_600_000 };
    const ring = await KeyRing.open(file, options);
    const tokens = new TokenService(ring, settings);
    const credential = await tokens.issueCredential('team-a');
    const oldKid = ring.active.kid;

    await ring.rotate(new Date());
    expect(ring.active.kid).not.toBe(oldKid);
    expect(await tokens.verifyCredential(credential)).toBe('team-a');
    // New tokens carry the new kid.
    const fresh = await tokens.issueCredential('team-a');
    expect(JSON.parse(Buffer.from(fresh.split('.')[0] as string, 'base64url').toString()).kid).toBe(
      ring.active.kid,
    );

    // Past the overlap the retired key is gone, and what it signed no longer verifies.
    await ring.rotateIfDue(new Date(Date.now() + options.keepRetiredForMillis + 1000));
    expect(ring.kids).not.toContain(oldKid);
    await expect(tokens.verifyCredential(credential)).rejects.toBeInstanceOf(InvalidTokenError);
    expect(await tokens.verifyCredential(fresh)).toBe('team-a');
  });

  it('rotates on its own once the active key is old enough', async () => {
    const ring = await KeyRing.open(join(directory, 'keys.json'), {
      rotateAfterMillis: 1000,
      keepRetiredForMillis: 3_600_000,
    });
    const first = ring.active.kid;
    expect(await ring.rotateIfDue(new Date(Date.now() + 2000))).toBe(true);
    expect(ring.kids).toEqual([first, ring.active.kid]);
  });
});
