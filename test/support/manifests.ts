import { createHash } from 'node:crypto';

export const ociManifestType = 'application/vnd.oci.image.manifest.v1+json';

export const sha256 = (data: Buffer | string): string =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** An OCI image manifest of `config` and no layers; `annotations` make it unlike any other. */
export function configOnlyManifest(config: Buffer, annotations: Record<string, string>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: ociManifestType,
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256(config),
        size: config.length,
      },
      layers: [],
      annotations,
    }),
  );
}
