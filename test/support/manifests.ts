import { createHash } from 'node:crypto';

export const ociManifestType = 'application/vnd.oci.image.manifest.v1+json';

export const sha256 = (data: Buffer | string): string =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** An OCI image manifest of `config` and `layers`; `annotations` make it unlike any other. */
export function imageManifest(
  config: Buffer,
  layers: readonly Buffer[],
  annotations?: Record<string, string>,
): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: ociManifestType,
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256(config),
        size: config.length,
      },
      layers: layers.map((layer) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: sha256(layer),
        size: layer.length,
      })),
      ...(annotations ? { annotations } : {}),
    }),
  );
}

/** An OCI image manifest of `config` and no layers; `annotations` make it unlike any other. */
export function configOnlyManifest(config: Buffer, annotations: Record<string, string>): Buffer {
  return imageManifest(config, [], annotations);
}
