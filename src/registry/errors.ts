import { StorageUnavailableError, type StorageUnavailableReason } from './storage/driver.ts';

/**
 * The catalogue of OCI distribution error codes. Every protocol error Berth sends is built from
 * this table, so a code always travels with the same HTTP status and default message.
 */
export const ociErrorCodes = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  // Not in the spec's table, but what distribution and real clients use for bad chunk ranges.
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  RANGE_INVALID: { status: 416, message: 'invalid content range' },
  UNKNOWN: { status: 500, message: 'unknown error' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
} as const satisfies Record<string, { status: number; message: string }>;

export type OciErrorCode = keyof typeof ociErrorCodes;

/** A protocol error: what the HTTP layer turns into an OCI error body. */
export class OciError extends Error {
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers, e.g. WWW-Authenticate on 401 or Retry-After on 429. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: OciErrorCode,
    message?: string,
    options: {
      detail?: unknown;
      headers?: Record<string, string>;
      cause?: unknown;
      status?: number;
    } = {},
  ) {
    const entry = ociErrorCodes[code];
    super(message ?? entry.message, { cause: options.cause });
    this.name = 'OciError';
    this.code = code;
    // A few answers keep the code but need another status (413 for an oversized manifest).
    this.status = options.status ?? entry.status;
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
 * How each storage failure is answered. Full storage is 507 Insufficient Storage (RFC 4918):
 * the request was fine and a retry will not help until an operator makes room, which a 503
 * would not say. Storage that refuses writes by its setup is 503, as while it is not ready.
 */
const storageAnswers: Record<StorageUnavailableReason, { status: number; message: string }> = {
  StorageFull: { status: 507, message: 'registry storage is full' },
  StorageNotWritable: {
    status: 503,
    message: 'registry storage is unavailable: StorageNotWritable',
  },
  StorageProbeFailed: {
    status: 503,
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
      error: new OciError('UNAVAILABLE', answer.message, {
        detail: { reason: error.reason },
        cause: error,
        status: answer.status,
      }),
      unexpected: true,
    };
  }
  return { error: new OciError('UNKNOWN', undefined, { cause: error }), unexpected: true };
}
