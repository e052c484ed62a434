import { OciError } from './errors.ts';

/** One path component of a repository name (distribution-spec grammar). */
const component = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const repositoryPattern = new RegExp(`^${component}(?:/${component})*$`);
const tagPattern = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Digest grammar; algorithms Berth can verify get a stricter check in parseDigest. */
const digestPattern = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * Longest repository name accepted. Clients limit `host/name` to 255 characters; 200 leaves
 * room for any realistic host:port.
 */
export const maxRepositoryNameLength = 200;

export const supportedDigestAlgorithms = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof supportedDigestAlgorithms;

export interface Digest {
  readonly algorithm: DigestAlgorithm;
  /** Lower-case hex. */
  readonly hex: string;
  /** `algorithm:hex`. */
  readonly value: string;
}

export function isRepositoryName(name: string): boolean {
  return name.length <= maxRepositoryNameLength && repositoryPattern.test(name);
}

export function assertRepositoryName(name: string): string {
  if (!isRepositoryName(name)) {
    throw new OciError('NAME_INVALID', 'invalid repository name', { detail: { name } });
  }
  return name;
}

export function isTag(reference: string): boolean {
  return tagPattern.test(reference);
}

export function isDigestLike(reference: string): boolean {
  return reference.includes(':');
}

/**
 * Parses `algorithm:hex`. Uppercase hex is rejected: image-spec says `[A-F]` MUST NOT be used,
 * and accepting it would give one blob two names.
 */
export function parseDigest(value: string): Digest {
  if (!digestPattern.test(value)) {
    throw new OciError('DIGEST_INVALID', 'invalid digest', { detail: { digest: value } });
  }
  const separator = value.indexOf(':');
  const algorithm = value.slice(0, separator);
  const hex = value.slice(separator + 1);
  if (!(algorithm in supportedDigestAlgorithms)) {
    throw new OciError('DIGEST_INVALID', 'unsupported digest algorithm', {
      detail: { digest: value },
    });
  }
  const length = supportedDigestAlgorithms[algorithm as DigestAlgorithm];
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) {
    throw new OciError(
      'DIGEST_INVALID',
      `invalid ${algorithm} digest: expected ${length} lower-case hex characters`,
      {
        detail: { digest: value },
      },
    );
  }
  return { algorithm: algorithm as DigestAlgorithm, hex, value };
}

/** A manifest reference: a tag or a digest. */
export type ManifestReference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

export function parseManifestReference(reference: string): ManifestReference {
  if (isDigestLike(reference)) return { kind: 'digest', digest: parseDigest(reference) };
  if (!isTag(reference)) {
    throw new OciError('TAG_INVALID', 'invalid tag', { detail: { tag: reference } });
  }
  return { kind: 'tag', tag: reference };
}
