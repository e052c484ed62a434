import { ConfigError, loadRegistryConfig, parseRegistryConfig } from './registry.ts';

describe('registry configuration', () => {
  it('has working defaults: loopback, ./data, no authentication', async () => {
    const config = await loadRegistryConfig({});
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 5000 });
    expect(config.storage.filesystem.rootDirectory).toBe('./data');
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
