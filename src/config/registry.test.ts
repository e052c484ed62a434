import { ConfigError, loadRegistryConfig, parseRegistryConfig } from './registry.ts';

describe('registry configuration', () => {
  it('has working defaults: loopback, ./data, no authentication', async () => {
    const config = await loadRegistryConfig({});
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 5000 });
    expect(config.storage.filesystem?.rootDirectory).toBe('./data');
    expect(config.uploads.purgeAfter).toBe(24 * 3_600_000);
    expect(config.auth).toBeUndefined();
    expect(config.limits).toEqual({
      maxConnections: 1024,
      clientTimeout: 60_000,
      minClientRate: 1024,
    });
    expect(Object.isFrozen(config.uploads)).toBe(true);
  });

  it('turns authentication on with --policy, with token defaults', async () => {
    const config = await loadRegistryConfig({
      policy: 'policy.yaml',
      adminPasswordFile: 'admin.pw',
      listen: ':5001',
    });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 5001 });
    expect(config.auth).toMatchObject({
      policyFile: 'policy.yaml',
      adminPasswordFile: 'admin.pw',
      tokenTTL: 300_000,
      anonymousPull: true,
      service: 'berth-registry',
    });
  });

  it('names the field and what is expected', () => {
    expect(() =>
      parseRegistryConfig({ uploads: { purgeAfter: '1 day' } }, 'registry.yaml'),
    ).toThrow(/invalid registry.yaml:\n {2}uploads.purgeAfter: "1 day" is not a duration/);
    expect(() => parseRegistryConfig({ listen: 'localhost' }, 'flags')).toThrow(
      /listen: expected host:port/,
    );
    expect(() => parseRegistryConfig({ uploads: { purgeInterval: '0s' } }, 'x')).toThrow(
      /longer than zero/,
    );
    expect(() => parseRegistryConfig({ unknown: 1 }, 'x')).toThrow(ConfigError);
  });
});

describe('storage.s3', () => {
  const s3 = { bucket: 'images', endpoint: 'http://127.0.0.1:7070', forcePathStyle: true };

  it('takes a bucket, endpoint, region, path style and prefix', () => {
    const config = parseRegistryConfig({ storage: { s3: { ...s3, prefix: 'registry' } } }, 'test');
    expect(config.storage).toEqual({ s3: { ...s3, region: 'us-east-1', prefix: 'registry' } });
  });

  it('refuses credentials in the file, both storages at once, and auth without a key file', () => {
    expect(() =>
      parseRegistryConfig({ storage: { s3: { ...s3, accessKey: 'k' } } }, 'test'),
    ).toThrow(/storage\.s3: Unrecognized key: "accessKey"/);
    expect(() =>
      parseRegistryConfig({ storage: { s3, filesystem: { rootDirectory: '/d' } } }, 'test'),
    ).toThrow(/set exactly one of storage.filesystem and storage.s3/);
    expect(() => parseRegistryConfig({ storage: { s3 }, auth: {} }, 'test')).toThrow(
      /auth.signingKeyFile: is required with storage.s3/,
    );
    expect(() =>
      parseRegistryConfig({ storage: { s3: { ...s3, prefix: 'a/../b' } } }, 'test'),
    ).toThrow(/prefix: must not hold/);
  });
});
