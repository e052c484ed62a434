import { FailureLimiter, LoginLimiter } from './limiter.ts';

const minute = { maxFailures: 10, windowMillis: 60_000, blockMillis: 60_000 };

describe('FailureLimiter', () => {
  it('keeps a block through a flood of other keys, within its byte bound', () => {
    const limiter = new FailureLimiter({ ...minute, maxBytes: 1024 * 1024 });
    const now = 1_000_000;
    for (let attempt = 0; attempt < 10; attempt += 1) limiter.fail('127.0.0.1 admin', now);
    expect(limiter.retryAfter('127.0.0.1 admin', now)).toBe(60);
    for (let junk = 0; junk < 200_000; junk += 1) limiter.fail(`127.0.0.1 junk-${junk}`, now + 1);
    expect(limiter.bytes).toBeLessThanOrEqual(1024 * 1024);
    expect(limiter.retryAfter('127.0.0.1 admin', now + 2)).toBe(60);
  });

  it('refuses keys it has no room for until entries expire', () => {
    const limiter = new FailureLimiter({ ...minute, maxBytes: 64 * 1024 });
    const now = 1_000_000;
    let key = 0;
    while (limiter.retryAfter(`key-${key}`, now) === undefined) {
      limiter.fail(`key-${key}`, now);
      key += 1;
    }
    expect(key).toBeGreaterThan(100);
    // Full: an unknown key waits until the oldest window ends; a counted key goes on counting.
    expect(limiter.retryAfter('someone-new', now + 1000)).toBe(59);
    expect(limiter.retryAfter('key-0', now + 1000)).toBeUndefined();
    expect(limiter.retryAfter('someone-new', now + 60_001)).toBeUndefined();
  });

  it('blocks a key for blockMillis after maxFailures within the window, and forgets old failures', () => {
    const limiter = new FailureLimiter({ ...minute, maxBytes: 1024 * 1024 });
    for (let attempt = 0; attempt < 9; attempt += 1) limiter.fail('k', 0);
    expect(limiter.retryAfter('k', 0)).toBeUndefined();
    // The window has passed: counting starts again.
    limiter.fail('k', 60_001);
    expect(limiter.retryAfter('k', 60_001)).toBeUndefined();
    for (let attempt = 0; attempt < 9; attempt += 1) limiter.fail('k', 60_002);
    expect(limiter.retryAfter('k', 60_002)).toBe(60);
    expect(limiter.retryAfter('k', 120_002)).toBeUndefined();
  });
});

describe('LoginLimiter', () => {
  it('bounds how many usernames one address may fail with', () => {
    const limiter = new LoginLimiter();
    for (let user = 0; user < 100; user += 1) {
      expect(limiter.retryAfter('10.0.0.1', `junk-${user}`)).toBeUndefined();
      limiter.fail('10.0.0.1', `junk-${user}`);
    }
    expect(limiter.retryAfter('10.0.0.1', 'admin')).toBeGreaterThan(0);
    expect(limiter.retryAfter('10.0.0.2', 'admin')).toBeUndefined();
  });

  it('blocks a username failed from many addresses, everywhere', () => {
    const limiter = new LoginLimiter();
    for (let address = 0; address < 100; address += 1) limiter.fail(`10.0.1.${address}`, 'team-b');
    expect(limiter.retryAfter('10.0.2.1', 'team-b')).toBeGreaterThan(0);
    expect(limiter.retryAfter('10.0.2.1', 'team-c')).toBeUndefined();
  });
});
