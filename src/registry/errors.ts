import { StorageUnavailableError, type StorageUnavailableReason } from './storage/driver.ts';

/**
 * The catalogue of errors Berth answers with. Every protocol error is built from one entry, so an
 * entry always travels with the same HTTP status, wire code and default message; no throw may
 * choose another status. Most entries are an OCI distribution code of the same name; the rest
 * answer with a spec code but a status of their own (a 413 for an oversized manifest), and are
 * named for what they report.
 */
export const ociErrorCatalogue = {
  BLOB_UNKNOWN: { code: 'BLOB_UNKNOWN', status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { code: 'BLOB_UPLOAD_INVALID', status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: {
    code: 'BLOB_UPLOAD_UNKNOWN',
    status: 404,
    message: 'blob upload unknown to registry',
  },
  DIGEST_INVALID: {
    code: 'DIGEST_INVALID',
    status: 400,
    message: 'provided digest did not match uploaded content',
  },
  MANIFEST_BLOB_UNKNOWN: {
    code: 'MANIFEST_BLOB_UNKNOWN',
    status: 400,
    message: 'manifest references a blob unknown to registry',
  },
  MANIFEST_INVALID: { code: 'MANIFEST_INVALID', status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: {
    code: 'MANIFEST_UNKNOWN',
    status: 404,
    message: 'manifest unknown to registry',
  },
  NAME_INVALID: { code: 'NAME_INVALID', status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: {
    code: 'NAME_UNKNOWN',
    status: 404,
    message: 'repository name not known to registry',
  },
  SIZE_INVALID: {
    code: 'SIZE_INVALID',
    status: 400,
    message: 'provided length did not match content length',
  },
  TAG_INVALID: { code: 'TAG_INVALID', status: 400, message: 'manifest tag did not match URI' },
  UNAUTHORIZED: { code: 'UNAUTHORIZED', status: 401, message: 'authentication required' },
  DENIED: { code: 'DENIED', status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { code: 'UNSUPPORTED', status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { code: 'TOOMANYREQUESTS', status: 429, message: 'too many requests' },
  // Not in the spec's table, but what distribution and real clients use for bad chunk ranges.
  PAGINATION_NUMBER_INVALID: {
    code: 'PAGINATION_NUMBER_INVALID',
    status: 400,
    message: 'invalid number of results requested',
  },
  RANGE_INVALID: { code: 'RANGE_INVALID', status: 416, message: 'invalid content range' },
  UNKNOWN: { code: 'UNKNOWN', status: 500, message: 'unknown error' },
  UNAVAILABLE: { code: 'UNAVAILABLE', status: 503, message: 'service unavailable' },
  // A request the registry understands but will not take in that form (a repeated query
  // parameter, too many scopes, an unknown grant): the client's fault, so 400, not 405.
  REQUEST_UNSUPPORTED: { code: 'UNSUPPORTED', status: 400, message: 'the request is unsupported' },
  MANIFEST_TOO_LARGE: { code: 'SIZE_INVALID', status: 413, message: 'manifest is too large' },
  // Full storage is 507 Insufficient Storage (RFC 4918): the request was fine and a retry will
  // not help until an operator makes room, which a 503 would not say.
  STORAGE_FULL: { code: 'UNAVAILABLE', status: 507, message: 'registry storage is full' },
  // A push past a Repository's quota.size: what Harbor answers too. The client may not store
  // more there until content is deleted, which is what 403 DENIED says.
  QUOTA_EXCEEDED: { code: 'DENIED', status: 403, message: 'repository quota exceeded' },
} as const satisfies Record<string, { code: string; status: number; message: string }>;

/** An entry of the catalogue: what a throw names. */
export type OciErrorKind = keyof typeof ociErrorCatalogue;
/** A code on the wire, as the distribution spec names it. */
export type OciErrorCode = (typeof ociErrorCatalogue)[OciErrorKind]['code'];

/** A protocol error: what the HTTP layer turns into an OCI error body. */
export class OciError extends Error {
  readonly kind: OciErrorKind;
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers, e.g. WWW-Authenticate on 401 or Retry-After on 429. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    kind: OciErrorKind,
    message?: string,
    options: { detail?: unknown; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    const entry = ociErrorCatalogue[kind];
    super(message ?? entry.message, { cause: options.cause });
    this.name = 'OciError';
    this.kind = kind;
    this.code = entry.code;
    this.status = entry.status;
    this.detail = options.detail;
    this.headers = options.headers ?? {};
  }

  /** The wire form: `{"errors":[{"code","message","detail"}]}`. */
  toBody(): { errors: { code: string; message: string; detail?: unknown }[] } {
    const error: { code: string; message: string; detail?: unknown } = {
      code: this.code,
      message: this.message,
    };
    if (this.detail !== undefined) error.detail = this.detail;
    return { errors: [error] };
  }
}

/** Whether an error is an OciError of one of the given codes. */
export function isOciError(error: unknown, ...codes: OciErrorCode[]): error is OciError {
  return error instanceof OciError && (codes.length === 0 || codes.includes(error.code));
}

/**
 * How each storage failure is answered: full storage is STORAGE_FULL (507); storage that
 * refuses writes by its setup is UNAVAILABLE (503), as while it is not ready.
 */
const storageAnswers: Record<
  StorageUnavailableReason,
  { kind: 'STORAGE_FULL' | 'UNAVAILABLE'; message: string }
> = {
  StorageFull: { kind: 'STORAGE_FULL', message: 'registry storage is full' },
  StorageNotWritable: {
    kind: 'UNAVAILABLE',
    message: 'registry storage is unavailable: StorageNotWritable',
  },
  StorageProbeFailed: {
    kind: 'UNAVAILABLE',
    message: 'registry storage is unavailable: StorageProbeFailed',
  },
};

/**
 * Maps any thrown value to an OciError. Storage that refuses the registry becomes UNAVAILABLE
 * with its reason (see storageAnswers); anything else becomes UNKNOWN (500). Both are the
 * server's fault and are flagged so that the HTTP layer logs them once; their message, which may
 * name server paths, never reaches the client.
 */
export function toOciError(error: unknown): { error: OciError; unexpected: boolean } {
  if (error instanceof OciError) return { error, unexpected: false };
  if (error instanceof StorageUnavailableError) {
    const answer = storageAnswers[error.reason];
    return {
      error: new OciError(answer.kind, answer.message, {
        detail: { reason: error.reason },
        cause: error,
      }),
      unexpected: true,
    };
  }
  return { error: new OciError('UNKNOWN', undefined, { cause: error }), unexpected: true };
}
