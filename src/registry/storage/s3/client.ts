import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import aws4 from 'aws4';
import { XMLParser } from 'fast-xml-parser';
import type { S3Credentials } from './credentials.ts';
import {
  bareHostname,
  GetPipeError,
  pipeGet,
  type PipeAnswer,
  type SignedGet,
} from '../../../util/get-pipe.ts';

export interface S3ClientOptions {
  readonly bucket: string;
  /** Base URL of the S3 API, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:7070`. */
  readonly endpoint: string;
  readonly region: string;
  /** `endpoint/bucket/key` instead of `bucket.endpoint/key`. */
  readonly forcePathStyle: boolean;
  readonly credentials: () => S3Credentials;
}

/** An error answer of the S3 API, or a request that got no answer (`status` 0). */
export class S3Error extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = 'S3Error';
    this.status = status;
    this.code = code;
  }
}

export interface ObjectHead {
  readonly size: number;
  readonly modifiedAt: Date;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface Listing {
  readonly keys: { key: string; size: number; modifiedAt: Date }[];
  readonly prefixes: string[];
}

export interface CompletedPart {
  readonly number: number;
  readonly etag: string;
}

interface Request {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';
  key?: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Buffer;
}

/** Requests that failed without an answer, or with one of these, are sent again. */
const retriedStatuses = new Set([500, 502, 503, 504]);
const attempts = 4;
const xml = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  isArray: (name) => ['Contents', 'CommonPrefixes', 'Upload', 'Deleted', 'Error'].includes(name),
});

/**
 * The S3 operations the driver needs, over node's HTTP client with SigV4 signing by `aws4`.
 * Bodies are buffers of at most a part; object content comes back as a stream. Payloads are sent
 * as `UNSIGNED-PAYLOAD`: hashing every part (SHA-256 for the signature, or MD5) would cost more
 * CPU than the upload itself, and the registry verifies the blob's digest as it receives it.
 * Every request is idempotent, so failures without an answer and 5xx answers are retried.
 */
export class S3Client {
  private readonly options: S3ClientOptions;
  private readonly url: URL;
  private readonly agent: HttpAgent;

  constructor(options: S3ClientOptions) {
    this.options = options;
    this.url = new URL(options.endpoint);
    const agentOptions = { keepAlive: true, maxSockets: 64 };
    this.agent =
      this.url.protocol === 'https:' ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  }

  get bucket(): string {
    return this.options.bucket;
  }

  async head(key: string): Promise<ObjectHead | undefined> {
    const response = await this.send({ method: 'HEAD', key }, [404]);
    response.resume();
    if (response.statusCode === 404) return undefined;
    const metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(response.headers)) {
      if (name.startsWith('x-amz-meta-') && typeof value === 'string')
        metadata[name.slice(11)] = value;
    }
    return {
      size: Number(response.headers['content-length'] ?? 0),
      modifiedAt: new Date(response.headers['last-modified'] ?? 0),
      metadata,
    };
  }

  /** The object's bytes as a stream, or undefined when it does not exist. `end` is inclusive. */
  async get(
    key: string,
    range?: { offset: number; end?: number },
  ): Promise<IncomingMessage | undefined> {
    const response = await this.send({ method: 'GET', key, headers: rangeHeaders(range) }, [404]);
    if (response.statusCode === 404) {
      response.resume();
      return undefined;
    }
    return response;
  }

  /**
   * Copies the object's bytes, or the range `offset`..`end` (inclusive), into `destination`
   * (util/get-pipe.ts says why not through node:http); false when the object does not exist.
   * Retried like any request until the first byte is written, never after.
   */
  async pipe(
    key: string,
    destination: Writable,
    range?: { offset: number; end?: number },
  ): Promise<boolean> {
    const request: Request = { method: 'GET', key, headers: rangeHeaders(range) };
    for (let attempt = 1; ; attempt += 1) {
      let answer: PipeAnswer;
      try {
        answer = await pipeGet(this.url, this.sign(request), destination);
      } catch (error) {
        if (!(error instanceof GetPipeError)) throw error;
        if (!error.bodyStarted && error.code !== 'DestinationClosed' && attempt < attempts) {
          await delay(attempt);
          continue;
        }
        throw new S3Error(
          0,
          error.code,
          `S3 endpoint ${this.url.origin} did not send ${key}: ${error.message}`,
          { cause: error },
        );
      }
      if ('copied' in answer) return true;
      if (answer.status === 404) return false;
      if (retriedStatuses.has(answer.status) && attempt < attempts) {
        await delay(attempt);
        continue;
      }
      throw errorOf(answer.status, answer.body, `GET ${key}`);
    }
  }

  async getBuffer(key: string): Promise<Buffer | undefined> {
    const response = await this.get(key);
    return response ? await readBody(response) : undefined;
  }

  /**
   * Writes an object. With `ifNoneMatch`, only when nothing is at `key`: false when something
   * was. Metadata becomes `x-amz-meta-*`.
   */
  async put(
    key: string,
    body: Buffer,
    options: { ifNoneMatch?: boolean; metadata?: Record<string, string> } = {},
  ): Promise<boolean> {
    const headers = metadataHeaders(options.metadata);
    if (options.ifNoneMatch) headers['if-none-match'] = '*';
    for (;;) {
      const response = await this.send({ method: 'PUT', key, body, headers }, [409, 412]);
      response.resume();
      if (response.statusCode === 412) return false;
      // 409 ConditionalRequestConflict: a concurrent conditional write is in progress; AWS says
      // to retry, and the retry sees the winner (412) or wins.
      if (response.statusCode === 409) continue;
      return true;
    }
  }

  async delete(key: string): Promise<void> {
    (await this.send({ method: 'DELETE', key }, [404])).resume();
  }

  /** Deletes up to 1000 keys in one request. */
  async deleteMany(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    const body = Buffer.from(
      `<Delete><Quiet>true</Quiet>${keys.map((key) => `<Object><Key>${escapeXml(key)}</Key></Object>`).join('')}</Delete>`,
    );
    const answer = await this.xmlRequest({
      method: 'POST',
      query: { delete: '' },
      body,
      headers: { 'content-md5': createHash('md5').update(body).digest('base64') },
    });
    const failed = (answer.DeleteResult?.Error ?? []) as { Key: string; Code: string }[];
    const first = failed.find((error) => error.Code !== 'NoSuchKey');
    if (first)
      throw new S3Error(200, first.Code, `S3 refused to delete ${first.Key}: ${first.Code}`);
  }

  /** One page of ListObjectsV2. */
  async listPage(
    prefix: string,
    options: { delimiter?: string; token?: string; maxKeys?: number } = {},
  ): Promise<Listing & { next?: string }> {
    const query: Record<string, string> = { 'list-type': '2', prefix };
    if (options.delimiter) query.delimiter = options.delimiter;
    if (options.token) query['continuation-token'] = options.token;
    if (options.maxKeys) query['max-keys'] = String(options.maxKeys);
    const answer = await this.xmlRequest({ method: 'GET', query });
    const result = answer.ListBucketResult ?? {};
    return {
      keys: ((result.Contents ?? []) as { Key: string; Size: string; LastModified: string }[]).map(
        (entry) => ({
          key: entry.Key,
          size: Number(entry.Size),
          modifiedAt: new Date(entry.LastModified),
        }),
      ),
      prefixes: ((result.CommonPrefixes ?? []) as { Prefix: string }[]).map(
        (entry) => entry.Prefix,
      ),
      ...(result.IsTruncated === 'true' && result.NextContinuationToken
        ? { next: String(result.NextContinuationToken) }
        : {}),
    };
  }

  /** Every page of ListObjectsV2, one at a time. */
  async *list(prefix: string, delimiter?: string): AsyncGenerator<Listing> {
    let token: string | undefined;
    do {
      const page = await this.listPage(prefix, { delimiter, token });
      yield page;
      token = page.next;
    } while (token);
  }

  /** Server-side copy of an object of at most 5 GiB. */
  async copy(source: string, destination: string): Promise<void> {
    await this.xmlRequest({
      method: 'PUT',
      key: destination,
      headers: { 'x-amz-copy-source': `/${this.bucket}/${encodeKey(source)}` },
    });
  }

  async createMultipart(key: string, metadata?: Record<string, string>): Promise<string> {
    const answer = await this.xmlRequest({
      method: 'POST',
      key,
      query: { uploads: '' },
      headers: metadataHeaders(metadata),
    });
    return String(answer.InitiateMultipartUploadResult.UploadId);
  }

  async uploadPart(key: string, uploadId: string, number: number, body: Buffer): Promise<string> {
    const response = await this.send({
      method: 'PUT',
      key,
      query: { partNumber: String(number), uploadId },
      body,
    });
    response.resume();
    return etagOf(response);
  }

  /** A part made of the bytes `offset`..`end` (inclusive) of another object. */
  async uploadPartCopy(
    key: string,
    uploadId: string,
    number: number,
    source: string,
    range: { offset: number; end: number },
  ): Promise<string> {
    const answer = await this.xmlRequest({
      method: 'PUT',
      key,
      query: { partNumber: String(number), uploadId },
      headers: {
        'x-amz-copy-source': `/${this.bucket}/${encodeKey(source)}`,
        'x-amz-copy-source-range': `bytes=${range.offset}-${range.end}`,
      },
    });
    return String(answer.CopyPartResult.ETag);
  }

  async completeMultipart(key: string, uploadId: string, parts: readonly CompletedPart[]) {
    const body = Buffer.from(
      `<CompleteMultipartUpload>${parts
        .map(
          (part) =>
            `<Part><PartNumber>${part.number}</PartNumber><ETag>${escapeXml(part.etag)}</ETag></Part>`,
        )
        .join('')}</CompleteMultipartUpload>`,
    );
    await this.xmlRequest({ method: 'POST', key, query: { uploadId }, body });
  }

  async abortMultipart(key: string, uploadId: string): Promise<void> {
    (await this.send({ method: 'DELETE', key, query: { uploadId } }, [404])).resume();
  }

  /** Multipart uploads in progress whose key starts with `prefix`. */
  async *multipartUploads(prefix: string): AsyncGenerator<{ key: string; uploadId: string }> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const query: Record<string, string> = { uploads: '', prefix };
      if (keyMarker) query['key-marker'] = keyMarker;
      if (uploadIdMarker) query['upload-id-marker'] = uploadIdMarker;
      const result = (await this.xmlRequest({ method: 'GET', query })).ListMultipartUploadsResult;
      for (const upload of (result?.Upload ?? []) as { Key: string; UploadId: string }[]) {
        yield { key: upload.Key, uploadId: upload.UploadId };
      }
      if (result?.IsTruncated !== 'true') return;
      keyMarker = result.NextKeyMarker;
      uploadIdMarker = result.NextUploadIdMarker;
    }
  }

  /** A request whose answer is XML; an `<Error>` in a 200 answer (CopyObject may) throws. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- S3's XML answers, read field by field
  private async xmlRequest(request: Request): Promise<any> {
    const response = await this.send(request);
    const text = (await readBody(response)).toString('utf8');
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as above
    const parsed: any = text.trim() === '' ? {} : xml.parse(text);
    if (parsed.Error) {
      const error = (parsed.Error as { Code?: string; Message?: string }[])[0] ?? {};
      throw new S3Error(
        response.statusCode ?? 200,
        error.Code ?? 'Unknown',
        `S3 ${request.method} failed: ${error.Code ?? 'Unknown'}: ${error.Message ?? ''}`,
      );
    }
    return parsed;
  }

  /**
   * Signs and sends one request, retrying what may be retried. Answers with a status below 300
   * or in `accepted` are returned unread; any other throws S3Error with S3's code and message.
   */
  private async send(request: Request, accepted: readonly number[] = []): Promise<IncomingMessage> {
    for (let attempt = 1; ; attempt += 1) {
      let response: IncomingMessage;
      try {
        response = await this.sendOnce(request);
      } catch (error) {
        if (attempt < attempts) {
          await delay(attempt);
          continue;
        }
        const cause = error as NodeJS.ErrnoException;
        throw new S3Error(
          0,
          cause.code ?? 'NetworkError',
          `S3 endpoint ${this.url.origin} did not answer: ${cause.message}`,
          { cause: error },
        );
      }
      const status = response.statusCode ?? 0;
      if (status < 300 || accepted.includes(status)) return response;
      const text = request.method === 'HEAD' ? '' : (await readBody(response)).toString('utf8');
      if (retriedStatuses.has(status) && attempt < attempts) {
        await delay(attempt);
        continue;
      }
      throw errorOf(status, text, `${request.method} ${request.key ?? `bucket ${this.bucket}`}`);
    }
  }

  /** The request as SigV4 signs it: the Host it names, the path with its query, the headers. */
  private sign(request: Request): SignedGet {
    const { bucket, forcePathStyle, region } = this.options;
    const key = request.key === undefined ? '' : encodeKey(request.key);
    const path = forcePathStyle ? `/${encodeURIComponent(bucket)}/${key}` : `/${key}`;
    const host = forcePathStyle ? this.url.host : `${bucket}.${this.url.host}`;
    const query = Object.entries(request.query ?? {})
      .map(([name, value]) =>
        value === '' ? encodeRfc3986(name) : `${encodeRfc3986(name)}=${encodeRfc3986(value)}`,
      )
      .join('&');
    const headers: Record<string, string> = {
      ...request.headers,
      'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
    };
    if (request.body) {
      headers['content-length'] = String(request.body.length);
    } else if (request.method === 'PUT' || request.method === 'POST') {
      headers['content-length'] = '0';
    }
    const signed = aws4.sign(
      {
        host,
        path: query ? `${path}?${query}` : path,
        method: request.method,
        headers,
        service: 's3',
        region,
      },
      this.options.credentials(),
    );
    return {
      host,
      path: signed.path as string,
      headers: { ...(signed.headers as Record<string, string>), host },
    };
  }

  private sendOnce(request: Request): Promise<IncomingMessage> {
    const signed = this.sign(request);
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const outgoing = send(
        {
          protocol: this.url.protocol,
          hostname: bareHostname(this.url),
          port: this.url.port,
          method: request.method,
          path: signed.path,
          headers: signed.headers,
          agent: this.agent,
        },
        resolve,
      );
      outgoing.once('error', reject);
      outgoing.end(request.body);
    });
  }
}

function errorOf(status: number, text: string, what: string): S3Error {
  const parsed = text ? (xml.parse(text) as { Error?: { Code?: string; Message?: string }[] }) : {};
  const detail = parsed.Error?.[0];
  const code = detail?.Code ?? statusCodes[status] ?? `HTTP${status}`;
  return new S3Error(
    status,
    code,
    `S3 ${what} failed with ${status} ${code}${detail?.Message ? `: ${detail.Message}` : ''}`,
  );
}

/** Codes for answers without a body (HEAD). */
const statusCodes: Record<number, string> = {
  403: 'AccessDenied',
  404: 'NotFound',
  416: 'InvalidRange',
};

/** A Range header for a part of an object; none for the whole of it. */
function rangeHeaders(range?: { offset: number; end?: number }): Record<string, string> {
  return range && (range.offset > 0 || range.end !== undefined)
    ? { range: `bytes=${range.offset}-${range.end ?? ''}` }
    : {};
}

function etagOf(response: IncomingMessage): string {
  const etag = response.headers.etag;
  if (!etag)
    throw new S3Error(response.statusCode ?? 0, 'MissingETag', 'S3 sent no ETag for a part');
  return etag;
}

function metadataHeaders(metadata: Record<string, string> = {}): Record<string, string> {
  return Object.fromEntries(
    Object.entries(metadata).map(([name, value]) => [`x-amz-meta-${name}`, value]),
  );
}

async function readBody(response: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of response as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Each path segment encoded as SigV4 canonicalises it (RFC 3986 unreserved kept). */
export function encodeKey(key: string): string {
  return key.split('/').map(encodeRfc3986).join('/');
}

function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (character) => `%${character.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

function delay(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 50 * 2 ** attempt));
}
