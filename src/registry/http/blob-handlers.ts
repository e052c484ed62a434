import { isOciError, OciError } from '../errors.ts';
import { assertRepositoryName, parseDigest } from '../reference.ts';
import type { HandlerContext } from './context.ts';
import type { RouteOf } from './routes.ts';
import { parseByteRange, parseChunkRange, queryString, rangeApplies } from './headers.ts';
import { declaredLength, hasBody } from './body.ts';

type BlobRoute = RouteOf<'blob'>;
type UploadsRoute = RouteOf<'uploads'>;
type UploadRoute = RouteOf<'upload'>;

/**
 * GET and HEAD /v2/<name>/blobs/<digest>. A GET with a single satisfiable `Range: bytes=` is
 * answered 206, one with no satisfiable range 416 (see parseByteRange).
 */
export async function getBlob(ctx: HandlerContext, route: BlobRoute): Promise<void> {
  const { req, res, services } = ctx;
  const { name } = route;
  const digest = parseDigest(route.digest);
  const mirrored = services.mirrors.resolve(name);
  let size: number;
  try {
    size = await services.blobs.stat(name, digest);
  } catch (error) {
    if (!mirrored || !isOciError(error, 'BLOB_UNKNOWN')) throw error;
    if (req.method === 'HEAD') {
      size = await services.mirrors.headBlob(mirrored, digest);
    } else {
      const { streamed } = await services.mirrors.fetchBlob(mirrored, digest, res);
      if (streamed !== undefined) {
        ctx.traffic.sent += streamed;
        return;
      }
      // Another pull fetched it meanwhile: it is in storage now.
      size = await services.blobs.stat(name, digest);
    }
  }
  const etag = `"${digest.value}"`;
  const range = rangeApplies(req.method, req.get('If-Range'), etag)
    ? parseByteRange(req.headers.range, size)
    : undefined;
  res.setHeader('Docker-Content-Digest', digest.value);
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('ETag', etag);
  res.setHeader('Cache-Control', 'max-age=31536000');
  if (range) {
    res.status(206);
    res.setHeader('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
    res.setHeader('Content-Length', range.end - range.start + 1);
  } else {
    res.status(200);
    res.setHeader('Content-Length', size);
  }
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  await services.blobs.send(digest, res, range);
  const sent = Number(res.getHeader('Content-Length'));
  ctx.traffic.sent += sent;
  if (mirrored) services.mirrors.servedFromStorage(mirrored, sent);
  res.end();
}

export async function deleteBlob(ctx: HandlerContext, route: BlobRoute): Promise<void> {
  const { name } = route;
  const digest = parseDigest(route.digest);
  await ctx.services.manifests.deleteBlob(name, digest);
  ctx.res.status(202).setHeader('Content-Length', 0).end();
}

/**
 * POST /v2/<name>/blobs/uploads/: a cross-repository mount (`mount` with `from`), a monolithic
 * upload (`digest` with a body), or a new upload session.
 */
export async function startUpload(ctx: HandlerContext, route: UploadsRoute): Promise<void> {
  const { req, services } = ctx;
  const { name } = route;
  const mount = queryString(req.query.mount, 'mount');
  const from = queryString(req.query.from, 'from');
  const digestParam = queryString(req.query.digest, 'digest');

  if (mount !== undefined && from !== undefined) {
    const digest = parseDigest(mount);
    const source = assertRepositoryName(from);
    // A mount reads the source: without pull there, fall back to an ordinary upload.
    const mayReadSource = ctx.access?.can(source, 'pull') ?? true;
    if (mayReadSource && (await services.blobs.mount(name, source, digest))) {
      sendBlobCreated(ctx, name, digest.value);
      return;
    }
  }
  if (digestParam !== undefined) {
    const digest = parseDigest(digestParam);
    const id = await services.uploads.start(name);
    const length = declaredLength(req);
    try {
      await services.uploads.complete(
        name,
        id,
        digest,
        req,
        length === undefined ? {} : { length },
      );
    } catch (error) {
      // A monolithic upload has no session the client knows of: leave nothing behind.
      await services.uploads.cancel(name, id).catch(() => undefined);
      throw error;
    }
    ctx.traffic.received += length ?? 0;
    sendBlobCreated(ctx, name, digest.value);
    return;
  }
  const id = await services.uploads.start(name);
  sendUploadAccepted(ctx, name, id, 0);
}

/** PATCH an upload: one chunk, with or without Content-Range (docker streams one without). */
export async function patchUpload(ctx: HandlerContext, route: UploadRoute): Promise<void> {
  const { req, services } = ctx;
  const { name } = route;
  const range = parseChunkRange(req.headers['content-range']);
  const length = declaredLength(req);
  if (range && length !== undefined && range.length !== length) {
    throw new OciError(
      'RANGE_INVALID',
      `Content-Range covers ${range.length} bytes but Content-Length is ${length}`,
    );
  }
  const expectLength = range?.length ?? length;
  const { size, received } = await services.uploads.append(name, route.id, req, {
    ...(range ? { start: range.start } : {}),
    ...(expectLength !== undefined ? { length: expectLength } : {}),
  });
  ctx.traffic.received += received;
  sendUploadAccepted(ctx, name, route.id, size);
}

/** PUT an upload with `?digest=`: an optional last chunk, then the blob is committed. */
export async function completeUpload(ctx: HandlerContext, route: UploadRoute): Promise<void> {
  const { req, services } = ctx;
  const { name } = route;
  const digestParam = queryString(req.query.digest, 'digest');
  if (digestParam === undefined)
    throw new OciError('DIGEST_INVALID', 'the digest query parameter is required');
  const digest = parseDigest(digestParam);
  const range = parseChunkRange(req.headers['content-range']);
  const length = declaredLength(req);
  if (hasBody(req)) {
    const expectLength = range?.length ?? length;
    await services.uploads.complete(name, route.id, digest, req, {
      ...(range ? { start: range.start } : {}),
      ...(expectLength !== undefined ? { length: expectLength } : {}),
    });
    ctx.traffic.received += length ?? 0;
  } else {
    await services.uploads.complete(name, route.id, digest);
  }
  sendBlobCreated(ctx, name, digest.value);
}

export async function getUploadStatus(ctx: HandlerContext, route: UploadRoute): Promise<void> {
  const { name } = route;
  const size = await ctx.services.uploads.status(name, route.id);
  sendUploadAccepted(ctx, name, route.id, size, 204);
}

export async function cancelUpload(ctx: HandlerContext, route: UploadRoute): Promise<void> {
  const { name } = route;
  await ctx.services.uploads.cancel(name, route.id);
  ctx.res.status(204).end();
}

function sendBlobCreated(ctx: HandlerContext, name: string, digest: string): void {
  ctx.res
    .status(201)
    .setHeader('Location', `/v2/${name}/blobs/${digest}`)
    .setHeader('Docker-Content-Digest', digest)
    .setHeader('Content-Length', 0)
    .end();
}

/** 202 (or 204 for a status GET) with where to send the next chunk and what has arrived. */
function sendUploadAccepted(
  ctx: HandlerContext,
  name: string,
  id: string,
  size: number,
  status = 202,
): void {
  ctx.res
    .status(status)
    .setHeader('Location', `/v2/${name}/blobs/uploads/${id}`)
    // distribution's convention: an empty upload reports 0-0.
    .setHeader('Range', `0-${size > 0 ? size - 1 : 0}`)
    .setHeader('Docker-Upload-UUID', id)
    .setHeader('Content-Length', 0)
    .end();
}
