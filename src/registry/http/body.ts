import type { Request } from 'express';
import { forEachChunk } from '../../util/streams.ts';
import { OciError } from '../errors.ts';

/** Reads a small request body (a manifest) whole, refusing it once it passes `limit` bytes. */
export async function readBody(req: Request, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let total = 0;
  // forEachChunk drains the rest of a refused body, so the 413 still reaches the client.
  await forEachChunk(req, (chunk) => {
    total += chunk.length;
    if (total > limit) throw tooLarge(limit);
    chunks.push(chunk);
    return undefined;
  });
  return Buffer.concat(chunks, total);
}

/** The declared Content-Length, when the request has one. */
export function declaredLength(req: Request): number | undefined {
  const header = req.headers['content-length'];
  if (header === undefined) return undefined;
  const value = Number(header);
  if (!/^\d+$/.test(header) || !Number.isSafeInteger(value)) {
    throw new OciError('SIZE_INVALID', 'malformed Content-Length');
  }
  return value;
}

/** Whether the request carries a body at all (a length above zero, or chunked encoding). */
export function hasBody(req: Request): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return Number(length) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

function tooLarge(limit: number): OciError {
  return new OciError('MANIFEST_TOO_LARGE', `manifest is larger than ${limit} bytes`, {
    detail: { limit },
  });
}
