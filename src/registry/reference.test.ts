import { isRepositoryName, parseDigest, parseManifestReference } from './reference.ts';
import { OciError } from './errors.ts';

const hex = 'a'.repeat(64);

describe('repository names', () => {
  it.each(['library/ubuntu', 'a', 'team-a/web', 'a__b/c.d/e--f', 'x/y/z/w'])(
    'accepts %s',
    (name) => {
      expect(isRepositoryName(name)).toBe(true);
    },
  );
  it.each([
    '',
    'A',
    'Team/web',
    'a/../b',
    '..',
    'a//b',
    '/a',
    'a/',
    '%2e%2e',
    'a_',
    '-a',
    'a' + '/b'.repeat(100),
  ])('rejects %s', (name) => {
    expect(isRepositoryName(name)).toBe(false);
  });
});

describe('digests', () => {
  it('parses a sha256 digest', () => {
    expect(parseDigest(`sha256:${hex}`)).toEqual({
      algorithm: 'sha256',
      hex,
      value: `sha256:${hex}`,
    });
  });
  it.each([
    `sha256:${'A'.repeat(64)}`,
    'sha256:abc',
    'md5:abcd',
    `sha256:${hex}0`,
    'sha256:',
    ':abc',
    'totallywrong',
  ])('rejects %s with DIGEST_INVALID', (value) => {
    expect(() => parseDigest(value)).toThrow(OciError);
    try {
      parseDigest(value);
    } catch (error) {
      expect((error as OciError).code).toBe('DIGEST_INVALID');
    }
  });
});

describe('manifest references', () => {
  it('tells tags from digests', () => {
    expect(parseManifestReference('v1.0')).toEqual({ kind: 'tag', tag: 'v1.0' });
    expect(parseManifestReference(`sha256:${hex}`).kind).toBe('digest');
  });
  it('rejects a tag that is too long or starts badly', () => {
    expect(() => parseManifestReference('a'.repeat(129))).toThrow(/invalid tag/);
    expect(() => parseManifestReference('.INVALID_MANIFEST_NAME')).toThrow(/invalid tag/);
  });
});
