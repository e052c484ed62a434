import { OciError } from '../errors.ts';
import type { BlobRange } from '../service/blobs.ts';

/**
 * The `Content-Range` of a PATCH chunk: `<start>-<end>`, inclusive. The spec has no `bytes`
 * unit here, but some clients send one, so it is accepted.
 */
export function parseChunkRange(
  header: string | undefined,
): { start: number; length: number } | undefined {
  if (header === undefined || header === '') return undefined;
  const match = /^(?:bytes[= ])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!match)
    throw new OciError(
      'RANGE_INVALID',
      `malformed Content-Range "${header}"; expected <start>-<end>`,
    );
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (end < start)
    throw new OciError('RANGE_INVALID', `Content-Range ${header} ends before it starts`);
  return { start, length: end - start + 1 };
}

/**
 * The `Range` of a blob GET. Only one `bytes=` range is served (what every client sends);
 * anything else is answered with the whole blob, as RFC 9110 allows. Throws RANGE_INVALID when
 * the range lies outside the blob.
 */
export function parseByteRange(header: string | undefined, size: number): BlobRange | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    // Suffix range: the last N bytes.
    const suffix = Number(match[2]);
    if (suffix === 0) throw unsatisfiable(size);
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
    if (Number(match[2] || size) < start) return undefined;
  }
  if (start >= size) throw unsatisfiable(size);
  return { start, end };
}

function unsatisfiable(size: number): OciError {
  return new OciError('RANGE_INVALID', 'requested range not satisfiable', {
    headers: { 'Content-Range': `bytes */${size}` },
  });
}

/** A Content-Type without parameters, lower-cased. */
export function bareMediaType(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const bare = header.split(';', 1)[0]?.trim().toLowerCase();
  return bare || undefined;
}

/** The `n` of a paginated list: a non-negative integer, at most `max`. */
export function parsePageSize(value: unknown, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !/^\d{1,9}$/.test(value)) {
    throw new OciError('PAGINATION_NUMBER_INVALID', 'n must be a non-negative integer', {
      detail: { n: value },
    });
  }
  return Math.min(Number(value), max);
}

/** A single-valued query parameter; repeated ones are a client error. */
export function queryString(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') {
    throw new OciError('UNSUPPORTED', `query parameter ${name} must appear once`, { status: 400 });
  }
  return value;
}
