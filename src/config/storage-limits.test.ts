import { ConfigError, parseRegistryConfig } from './registry.ts';

describe('limits.storage', () => {
  it('reads sizes and leaves both limits unset by default', () => {
    expect(parseRegistryConfig({}, 'test').limits.storage).toBeUndefined();
    const config = parseRegistryConfig(
      { limits: { storage: { size: '500Gi', minFree: '5Gi' } } },
      'test',
    );
    expect(config.limits.storage).toEqual({ size: 500 * 1024 ** 3, minFree: 5 * 1024 ** 3 });
  });

  it('refuses minFree on S3, where there is no volume to measure, saying what to use', () => {
    expect(() =>
      parseRegistryConfig(
        {
          storage: { s3: { bucket: 'images' } },
          limits: { storage: { minFree: '5Gi' } },
        },
        'test',
      ),
    ).toThrow(
      new ConfigError(
        'invalid test:\n  limits.storage.minFree: applies to storage.filesystem only: a bucket has no free space to measure; use limits.storage.size',
      ),
    );
  });
});
