import { readFile } from 'node:fs/promises';
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { z } from 'zod';
import type { MirrorConfig } from '../../config/registry.ts';
import { parseChallenge, type Challenge } from './challenge.ts';
import { problemOfStatus, UpstreamError } from './upstream-error.ts';

/** Waiting longer than this for an upstream's headers counts as unreachable. */
const headersTimeoutMillis = 15_000;
/** A body that moves no byte for this long is cut off. */
const idleBodyMillis = 60_000;
const maxRedirects = 5;
/** Tokens are dropped this long before they expire, so one never expires in flight. */
const tokenMarginMillis = 10_000;

const tokenAnswerSchema = z
  .object({
    token: z.string().min(1).optional(),
    access_token: z.string().min(1).optional(),
    expires_in: z.number().positive().optional(),
  })
  .refine((answer) => answer.token ?? answer.access_token, 'has no token');

interface CachedToken {
  readonly value: string;
  readonly expires: number;
}

/**
 * One upstream registry as a client sees it: GET and HEAD of `/v2/` paths, answering the
 * upstream's challenge (Basic, or Docker's token flow: fetch a token for the challenge's scope
 * with the configured login, retry) and following redirects (blob storage elsewhere, without
 * the Authorization header when the host changes). Tokens are kept per scope until they expire.
 */
export class UpstreamClient {
  readonly url: URL;
  private readonly config: MirrorConfig;
  private readonly agents: { http: http.Agent; https: https.Agent };
  private ca: Promise<Buffer | undefined> | undefined;
  private scheme: Challenge['scheme'] | undefined;
  private readonly tokens = new Map<string, CachedToken>();

  constructor(config: MirrorConfig) {
    this.config = config;
    this.url = new URL(config.url);
    this.agents = {
      http: new http.Agent({ keepAlive: true }),
      https: new https.Agent({ keepAlive: true }),
    };
  }

  /** The upstream as logs and errors name it: scheme, host and port only. */
  get name(): string {
    return this.url.origin;
  }

  /**
   * Sends a request for `repository` (its name upstream) and returns a successful answer, body
   * unread. Anything else is an UpstreamError, its body discarded.
   */
  async send(
    method: 'GET' | 'HEAD',
    repository: string,
    path: string,
    headers: OutgoingHttpHeaders = {},
  ): Promise<IncomingMessage> {
    const scope = `repository:${repository}:pull`;
    let response = await this.follow(method, path, headers, await this.authorization(scope));
    if (response.statusCode === 401) {
      const challenge = parseChallenge(header(response, 'www-authenticate'));
      response.resume();
      if (!challenge)
        throw new UpstreamError(this.name, 'denied', 'refused without a challenge', 401);
      this.scheme = challenge.scheme;
      const authorization =
        challenge.scheme === 'basic' ? await this.basic() : await this.fetchToken(challenge, scope);
      response = await this.follow(method, path, headers, authorization);
    }
    const problem = problemOfStatus(response.statusCode ?? 0);
    if (problem) {
      response.resume();
      throw new UpstreamError(
        this.name,
        problem,
        `answered ${response.statusCode} to ${method} ${path}`,
        response.statusCode,
      );
    }
    return response;
  }

  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /** What to send before any challenge, from what the last one asked for. */
  private async authorization(scope: string): Promise<string | undefined> {
    if (this.scheme === 'basic') return this.basic();
    const token = this.tokens.get(scope);
    if (token && token.expires > Date.now()) return `Bearer ${token.value}`;
    return undefined;
  }

  private async basic(): Promise<string | undefined> {
    const login = await this.login();
    if (!login) return undefined;
    return `Basic ${Buffer.from(`${login.username}:${login.password}`).toString('base64')}`;
  }

  /** The configured login, read now so a rotated Secret applies to the next token. */
  private async login(): Promise<{ username: string; password: string } | undefined> {
    const files = this.config.credentials;
    if (!files) return undefined;
    try {
      const [username, password] = await Promise.all([
        readFile(files.usernameFile, 'utf8'),
        readFile(files.passwordFile, 'utf8'),
      ]);
      return { username: username.trim(), password: password.trim() };
    } catch {
      throw new UpstreamError(this.name, 'denied', 'its credential files cannot be read');
    }
  }

  /** Docker's token flow: GET the realm with service and scope, Basic auth when configured. */
  private async fetchToken(challenge: Challenge, fallbackScope: string): Promise<string> {
    const { realm, service } = challenge.params;
    if (!realm)
      throw new UpstreamError(this.name, 'denied', 'its Bearer challenge has no realm', 401);
    const scope = challenge.params.scope ?? fallbackScope;
    const target = new URL(realm);
    if (service) target.searchParams.set('service', service);
    target.searchParams.set('scope', scope);
    const basic = await this.basic();
    const response = await this.request('GET', target, {}, basic);
    const problem = problemOfStatus(response.statusCode ?? 0);
    if (problem) {
      response.resume();
      throw new UpstreamError(
        this.name,
        problem === 'not-found' ? 'denied' : problem,
        `its token endpoint answered ${response.statusCode}`,
        response.statusCode,
      );
    }
    let answer: z.infer<typeof tokenAnswerSchema>;
    try {
      answer = tokenAnswerSchema.parse(
        JSON.parse((await readBody(response, 64 * 1024)).toString('utf8')),
      );
    } catch {
      throw new UpstreamError(this.name, 'bad-response', 'its token endpoint sent no token');
    }
    const value = (answer.token ?? answer.access_token) as string;
    const lifetime = Math.max(60, answer.expires_in ?? 60) * 1000;
    this.tokens.set(scope, { value, expires: Date.now() + lifetime - tokenMarginMillis });
    if (scope !== fallbackScope)
      this.tokens.set(fallbackScope, this.tokens.get(scope) as CachedToken);
    return `Bearer ${value}`;
  }

  private async follow(
    method: string,
    path: string,
    headers: OutgoingHttpHeaders,
    authorization: string | undefined,
  ): Promise<IncomingMessage> {
    let target = new URL(path, this.url);
    let credentials = authorization;
    for (let hop = 0; ; hop++) {
      const response = await this.request(method, target, headers, credentials);
      const location = header(response, 'location');
      const status = response.statusCode ?? 0;
      if (![301, 302, 303, 307, 308].includes(status) || !location) return response;
      response.resume();
      if (hop === maxRedirects)
        throw new UpstreamError(this.name, 'bad-response', 'redirected too often', status);
      const next = new URL(location, target);
      // Credentials are for the registry; storage it redirects to gets a signed URL instead.
      if (next.host !== target.host) credentials = undefined;
      target = next;
    }
  }

  private async request(
    method: string,
    target: URL,
    headers: OutgoingHttpHeaders,
    authorization: string | undefined,
  ): Promise<IncomingMessage> {
    const secure = target.protocol === 'https:';
    const ca = secure ? await this.caCertificates() : undefined;
    const options: https.RequestOptions = {
      method,
      headers: { ...headers, ...(authorization ? { authorization } : {}) },
      agent: secure ? this.agents.https : this.agents.http,
      ...(ca ? { ca } : {}),
    };
    return new Promise((resolve, reject) => {
      const request = (secure ? https : http).request(target, options, (response) => {
        clearTimeout(timer);
        response.setTimeout(idleBodyMillis, () =>
          response.destroy(new UpstreamError(this.name, 'unreachable', 'stopped sending')),
        );
        resolve(response);
      });
      const timer = setTimeout(
        () =>
          request.destroy(new UpstreamError(this.name, 'unreachable', 'did not answer in time')),
        headersTimeoutMillis,
      );
      request.on('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          error instanceof UpstreamError
            ? error
            : new UpstreamError(
                this.name,
                'unreachable',
                `cannot be reached (${error.code ?? error.message})`,
              ),
        );
      });
      request.end();
    });
  }

  private caCertificates(): Promise<Buffer | undefined> {
    const file = this.config.tls?.caFile;
    if (!file) return Promise.resolve(undefined);
    this.ca ??= readFile(file);
    return this.ca;
  }
}

function header(response: IncomingMessage, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The whole body of a small answer; more than `maxBytes` is a bad response. */
export async function readBody(response: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      response.destroy();
      throw new Error(`body larger than ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
