/** The object a failed request was about, as status messages and Events name it. */
export interface ObjectReference {
  readonly kind: string;
  readonly namespace?: string | undefined;
  readonly name: string;
}

/** Longest API message carried into a condition or an Event; the log keeps the whole error. */
const maxMessageLength = 1000;

/**
 * A request about one object that the API server refused or that did not reach it. Its message
 * names the object and carries the API's own message, so a condition or an Event built from it
 * says what to fix; `cause` keeps the original error for the log.
 */
export class ApplyError extends Error {
  readonly object: ObjectReference;

  constructor(action: string, object: ObjectReference, cause: unknown) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    const name = object.namespace ? `${object.namespace}/${object.name}` : object.name;
    super(
      `cannot ${action} ${object.kind} ${name}: ${
        detail.length > maxMessageLength ? `${detail.slice(0, maxMessageLength)}…` : detail
      }`,
      { cause },
    );
    this.name = 'ApplyError';
    this.object = object;
  }
}

/** Runs one request about `object`; a failure becomes an ApplyError naming it. */
export async function about<T>(
  action: string,
  object: ObjectReference,
  request: () => Promise<T>,
): Promise<T> {
  try {
    return await request();
  } catch (error) {
    throw new ApplyError(action, object, error);
  }
}
