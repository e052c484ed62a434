import { OciError } from '../errors.ts';
import type { BlobRange } from '../service/blobs.ts';

/**
 * The `Content-Range` of a PATCH chunk: `<start>-<end>`, inclusive, optionally over a total
 * (`/<size>` or `/*`). The spec has no `bytes` unit here, but some clients send one, so it is
 * accepted. Anything else, an end before the start, or a total the range does not fit in is
 * RANGE_INVALID (416).
 */
export function parseChunkRange(
  header: string | undefined,
): { start: number; length: number } | undefined {
  if (header === undefined || header === '') return undefined;
  const match = /^(?:bytes[= ])?(\d+)-(\d+)(?:\/(\d+|\*))?$/.exec(header.trim());
  if (!match)
    throw new OciError(
      'RANGE_INVALID',
      `malformed Content-Range "${header}"; expected <start>-<end>`,
    );
  const start = Number(match[1]);
  const end = Number(match[2]);
  const total = match[3] === undefined || match[3] === '*' ? undefined : Number(match[3]);
  if (!Number.isSafeInteger(end) || (total !== undefined && !Number.isSafeInteger(total)))
    throw new OciError('RANGE_INVALID', `Content-Range ${header} is out of range`);
  if (end < start)
    throw new OciError('RANGE_INVALID', `Content-Range ${header} ends before it starts`);
  if (total !== undefined && end >= total)
    throw new OciError('RANGE_INVALID', `Content-Range ${header} ends past its total`);
  return { start, length: end - start + 1 };
}

/**
 * The `Range` of a blob GET, as RFC 9110 (section 14) has it. A header that is not a valid
 * `bytes` range set (another unit, garbage, a range ending before it starts) is ignored: the
 * whole blob. A valid set with no satisfiable range (each starts at or past the end, or is a
 * zero-length suffix) is RANGE_INVALID, 416 with `Content-Range: bytes *\/<size>`. One
 * satisfiable range is served; several are answered with the whole blob, which the RFC allows,
 * as is a suffix of an empty blob (there is no byte to name).
 */
export function parseByteRange(header: string | undefined, size: number): BlobRange | undefined {
  if (header === undefined) return undefined;
  const specs = byteRangeSet(header);
  if (!specs) return undefined;
  const satisfiable = specs.flatMap((spec) => {
    if (spec.first === undefined)
      return spec.suffix > 0 ? [{ start: Math.max(0, size - spec.suffix), end: size - 1 }] : [];
    return spec.first < size
      ? [{ start: spec.first, end: Math.min(spec.last ?? size - 1, size - 1) }]
      : [];
  });
  const [only, ...more] = satisfiable;
  if (!only) throw unsatisfiable(size);
  return more.length === 0 && only.end >= only.start ? only : undefined;
}

type RangeSpec =
  { first: number; last?: number; suffix?: never } | { first?: never; suffix: number };

/**
 * The specs of `bytes=<range-set>`, with the unit's case ignored and empty list elements
 * skipped; undefined unless every element is `first-[last]` (last not below first) or
 * `-suffix`.
 */
function byteRangeSet(header: string): RangeSpec[] | undefined {
  const match = /^bytes=(.*)$/i.exec(header.trim());
  if (!match) return undefined;
  const specs: RangeSpec[] = [];
  for (const element of (match[1] as string).split(',').map((part) => part.trim())) {
    if (element === '') continue;
    const range = /^(\d*)-(\d*)$/.exec(element);
    if (!range || (range[1] === '' && range[2] === '')) return undefined;
    if (range[1] === '') {
      specs.push({ suffix: Number(range[2]) });
      continue;
    }
    const first = Number(range[1]);
    if (range[2] === '') {
      specs.push({ first });
      continue;
    }
    const last = Number(range[2]);
    if (last < first) return undefined;
    specs.push({ first, last });
  }
  return specs.length > 0 ? specs : undefined;
}

/**
 * Whether a Range applies to this request (RFC 9110 section 13.1.5 and 14.2): only GET has
 * ranges, and an If-Range names the representation they must be of. Berth's validator is the
 * strong ETag of the blob (it sends no Last-Modified, so a date never matches).
 */
export function rangeApplies(method: string, ifRange: string | undefined, etag: string): boolean {
  return method === 'GET' && (ifRange === undefined || ifRange.trim() === etag);
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
    throw new OciError('REQUEST_UNSUPPORTED', `query parameter ${name} must appear once`);
  }
  return value;
}
