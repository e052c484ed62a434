import { z } from 'zod';
import { OciError } from '../errors.ts';
import { parseDigest, type Digest } from '../reference.ts';
import { imageManifestTypes, indexManifestTypes, mediaTypes } from './media-types.ts';
import { firstZodIssue } from '../../util/zod-issues.ts';

const mediaTypePattern =
  /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

const descriptorSchema = z.object({
  mediaType: z.string().regex(mediaTypePattern, 'not a media type'),
  digest: z.string(),
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  artifactType: z.string().regex(mediaTypePattern, 'not a media type').optional(),
  platform: z.record(z.string(), z.unknown()).optional(),
});

export type Descriptor = z.infer<typeof descriptorSchema>;

const imageManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().regex(mediaTypePattern, 'not a media type').optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

const indexManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().regex(mediaTypePattern, 'not a media type').optional(),
  manifests: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

/** A manifest after validation: what it references, and how to describe it as a referrer. */
export interface ParsedManifest {
  readonly mediaType: string;
  readonly kind: 'image' | 'index';
  /** Blobs that must be in the repository (config and distributable layers). */
  readonly blobs: readonly Digest[];
  /** Layers whose content may be elsewhere; checked only if the registry has them. */
  readonly foreignLayers: readonly Digest[];
  /** Manifests that must be in the repository (index children). */
  readonly manifests: readonly Digest[];
  readonly subject: Digest | undefined;
  /** `artifactType`, else the config's media type (the referrers API's rule). */
  readonly artifactType: string | undefined;
  readonly annotations: Readonly<Record<string, string>> | undefined;
}

/**
 * Validates manifest bytes pushed with `contentType` (parameters already stripped). The
 * content type decides the kind; a `mediaType` field, when present, must agree with it.
 */
export function parseManifest(bytes: Buffer, contentType: string | undefined): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid('manifest is not valid JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw invalid('manifest must be a JSON object');
  const fields = json as Record<string, unknown>;
  const declared = typeof fields.mediaType === 'string' ? fields.mediaType : undefined;
  // A client may send a generic Content-Type (application/json); then the content decides.
  const pushedType = contentType && isManifestType(contentType) ? contentType : undefined;
  const mediaType = pushedType ?? inferMediaType(fields);
  if (declared !== undefined && pushedType !== undefined && declared !== pushedType) {
    throw invalid(`manifest mediaType ${declared} does not match Content-Type ${contentType}`);
  }
  if (imageManifestTypes.has(mediaType)) return parseImage(fields, mediaType);
  if (indexManifestTypes.has(mediaType)) return parseIndex(fields, mediaType);
  if (mediaType === mediaTypes.dockerSchema1Signed || mediaType === mediaTypes.dockerSchema1) {
    throw new OciError(
      'MANIFEST_INVALID',
      'Docker schema 1 manifests are not accepted; push schema 2 or OCI',
    );
  }
  throw invalid(`unsupported manifest media type ${mediaType}`);
}

function parseImage(fields: Record<string, unknown>, mediaType: string): ParsedManifest {
  const manifest = check(imageManifestSchema, fields);
  const layers = manifest.layers.map((layer) => ({ layer, digest: descriptorDigest(layer) }));
  return {
    mediaType,
    kind: 'image',
    blobs: [
      descriptorDigest(manifest.config),
      ...layers.filter(({ layer }) => !layer.urls?.length).map(({ digest }) => digest),
    ],
    foreignLayers: layers.filter(({ layer }) => layer.urls?.length).map(({ digest }) => digest),
    manifests: [],
    subject: manifest.subject ? descriptorDigest(manifest.subject) : undefined,
    artifactType: manifest.artifactType ?? manifest.config.mediaType,
    annotations: manifest.annotations,
  };
}

function parseIndex(fields: Record<string, unknown>, mediaType: string): ParsedManifest {
  const manifest = check(indexManifestSchema, fields);
  return {
    mediaType,
    kind: 'index',
    blobs: [],
    foreignLayers: [],
    manifests: manifest.manifests.map(descriptorDigest),
    subject: manifest.subject ? descriptorDigest(manifest.subject) : undefined,
    artifactType: manifest.artifactType,
    annotations: manifest.annotations,
  };
}

function isManifestType(mediaType: string): boolean {
  return (
    imageManifestTypes.has(mediaType) ||
    indexManifestTypes.has(mediaType) ||
    mediaType === mediaTypes.dockerSchema1Signed ||
    mediaType === mediaTypes.dockerSchema1
  );
}

/** The media type of stored manifest bytes that carry no recorded Content-Type. */
export function inferMediaType(fields: Record<string, unknown>): string {
  if (typeof fields.mediaType === 'string') return fields.mediaType;
  if (fields.schemaVersion === 1) return mediaTypes.dockerSchema1Signed;
  if (Array.isArray(fields.manifests)) return mediaTypes.ociIndex;
  return mediaTypes.ociManifest;
}

function check<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw invalid(firstZodIssue(result.error, 'manifest'));
  }
  return result.data;
}

function descriptorDigest(descriptor: Descriptor): Digest {
  try {
    return parseDigest(descriptor.digest);
  } catch {
    throw invalid(`invalid descriptor digest ${descriptor.digest}`);
  }
}

function invalid(message: string): OciError {
  return new OciError('MANIFEST_INVALID', message);
}
