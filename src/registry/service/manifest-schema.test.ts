import { OciError } from '../errors.ts';
import { parseManifest } from './manifest-schema.ts';
import { mediaTypes } from './media-types.ts';

const digest = (c: string) => `sha256:${c.repeat(64)}`;
const image = {
  schemaVersion: 2,
  mediaType: mediaTypes.ociManifest,
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digest('a'), size: 2 },
  layers: [
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digest('b'), size: 3 },
    {
      mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
      digest: digest('c'),
      size: 4,
      urls: ['https://example.com/layer'],
    },
  ],
  subject: { mediaType: mediaTypes.ociManifest, digest: digest('d'), size: 5 },
};

function codeOf(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    return (error as OciError).code;
  }
  return undefined;
}

describe('parseManifest', () => {
  it('lists the blobs an image needs, leaving foreign layers aside', () => {
    const parsed = parseManifest(Buffer.from(JSON.stringify(image)), mediaTypes.ociManifest);
    expect(parsed.kind).toBe('image');
    expect(parsed.blobs.map((d) => d.value)).toEqual([digest('a'), digest('b')]);
    expect(parsed.foreignLayers.map((d) => d.value)).toEqual([digest('c')]);
    expect(parsed.subject?.value).toBe(digest('d'));
    // No artifactType: the referrers API falls back to the config's media type.
    expect(parsed.artifactType).toBe('application/vnd.oci.image.config.v1+json');
  });

  it('lists the manifests an index needs', () => {
    const index = {
      schemaVersion: 2,
      manifests: [{ mediaType: mediaTypes.ociManifest, digest: digest('e'), size: 9 }],
    };
    const parsed = parseManifest(Buffer.from(JSON.stringify(index)), mediaTypes.ociIndex);
    expect(parsed.kind).toBe('index');
    expect(parsed.manifests.map((d) => d.value)).toEqual([digest('e')]);
  });

  it('lets the content decide when the Content-Type is generic', () => {
    const parsed = parseManifest(Buffer.from(JSON.stringify(image)), 'application/json');
    expect(parsed.mediaType).toBe(mediaTypes.ociManifest);
  });

  it.each([
    ['not JSON', '{', mediaTypes.ociManifest],
    ['an array', '[]', mediaTypes.ociManifest],
    [
      'a mediaType that contradicts the Content-Type',
      JSON.stringify(image),
      mediaTypes.dockerManifest,
    ],
    ['a missing config', JSON.stringify({ ...image, config: undefined }), mediaTypes.ociManifest],
    [
      'an uppercase layer digest',
      JSON.stringify({
        ...image,
        layers: [{ ...image.layers[0], digest: `sha256:${'B'.repeat(64)}` }],
      }),
      mediaTypes.ociManifest,
    ],
    [
      'a negative size',
      JSON.stringify({ ...image, layers: [{ ...image.layers[0], size: -1 }] }),
      mediaTypes.ociManifest,
    ],
    ['schema 1', JSON.stringify({ schemaVersion: 1, name: 'x' }), undefined],
    ['an unknown media type', JSON.stringify({ ...image, mediaType: 'text/plain' }), undefined],
  ])('refuses %s with MANIFEST_INVALID', (_label, body, contentType) => {
    expect(codeOf(() => parseManifest(Buffer.from(body), contentType))).toBe('MANIFEST_INVALID');
  });
});
