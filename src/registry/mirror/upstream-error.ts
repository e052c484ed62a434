import { OciError } from '../errors.ts';

/** Why an upstream could not answer; the label of the upstream-errors metric. */
export type UpstreamProblem =
  'unreachable' | 'rate-limited' | 'server-error' | 'denied' | 'not-found' | 'bad-response';

/**
 * An upstream that did not give what was asked. Its message names the upstream and what went
 * wrong, never credentials; `toOciError` is what a client sees when nothing is cached.
 */
export class UpstreamError extends Error {
  readonly problem: UpstreamProblem;
  readonly upstream: string;
  readonly status: number | undefined;

  constructor(upstream: string, problem: UpstreamProblem, message: string, status?: number) {
    super(`upstream ${upstream}: ${message}`);
    this.upstream = upstream;
    this.problem = problem;
    this.status = status;
  }

  /** Whether serving what is cached is the right answer (the upstream is down or busy). */
  get transient(): boolean {
    return (
      this.problem === 'unreachable' ||
      this.problem === 'rate-limited' ||
      this.problem === 'server-error'
    );
  }

  toOciError(unknown: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN'): OciError {
    const detail = { upstream: this.upstream, problem: this.problem, status: this.status };
    if (this.problem === 'not-found') return new OciError(unknown, this.message, { detail });
    if (this.problem === 'rate-limited')
      return new OciError('TOOMANYREQUESTS', this.message, { detail });
    return new OciError('UNAVAILABLE', this.message, { detail });
  }
}

/** The problem an upstream's status stands for; undefined for a success. */
export function problemOfStatus(status: number): UpstreamProblem | undefined {
  if (status >= 200 && status < 300) return undefined;
  if (status === 404) return 'not-found';
  if (status === 429) return 'rate-limited';
  if (status === 401 || status === 403) return 'denied';
  if (status >= 500) return 'server-error';
  return 'bad-response';
}
