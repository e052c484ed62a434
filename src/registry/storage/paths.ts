import type { Digest } from '../reference.ts';

/**
 * The storage layout, shared with CNCF distribution so that a registry:2 volume can be served as
 * it is (and the other way round):
 *
 *   /docker/registry/v2/
 *     blobs/<alg>/<first two hex>/<hex>/data            content, shared by all repositories
 *     repositories/<name>/
 *       _layers/<alg>/<hex>/link                        blob is part of this repository
 *       _manifests/revisions/<alg>/<hex>/link           manifest is part of this repository
 *       _manifests/revisions/<alg>/<hex>/berth-media-type   pushed Content-Type (Berth only)
 *       _manifests/tags/<tag>/current/link              what the tag points at
 *       _manifests/tags/<tag>/index/<alg>/<hex>/link    every manifest the tag has pointed at
 *       _referrers/<alg>/<subject hex>/<alg>/<hex>/link manifests whose subject is that digest (Berth only)
 *       _uploads/<id>/data                              bytes received so far
 *       _uploads/<id>/startedat                         RFC 3339 start time
 *
 * A `link` file holds a digest string (`sha256:<hex>`), no newline.
 */
const root = '/docker/registry/v2';

export const paths = {
  root,
  repositories: `${root}/repositories`,
  blobData: (digest: Digest) =>
    `${root}/blobs/${digest.algorithm}/${digest.hex.slice(0, 2)}/${digest.hex}/data`,
  blobDirectory: (digest: Digest) =>
    `${root}/blobs/${digest.algorithm}/${digest.hex.slice(0, 2)}/${digest.hex}`,
  blobsRoot: `${root}/blobs`,
  repository: (name: string) => `${root}/repositories/${name}`,
  layerLink: (name: string, digest: Digest) =>
    `${root}/repositories/${name}/_layers/${digest.algorithm}/${digest.hex}/link`,
  layerDirectory: (name: string, digest: Digest) =>
    `${root}/repositories/${name}/_layers/${digest.algorithm}/${digest.hex}`,
  manifestsRoot: (name: string) => `${root}/repositories/${name}/_manifests`,
  revisionDirectory: (name: string, digest: Digest) =>
    `${root}/repositories/${name}/_manifests/revisions/${digest.algorithm}/${digest.hex}`,
  revisionLink: (name: string, digest: Digest) =>
    `${root}/repositories/${name}/_manifests/revisions/${digest.algorithm}/${digest.hex}/link`,
  revisionMediaType: (name: string, digest: Digest) =>
    `${root}/repositories/${name}/_manifests/revisions/${digest.algorithm}/${digest.hex}/berth-media-type`,
  tagsRoot: (name: string) => `${root}/repositories/${name}/_manifests/tags`,
  tagDirectory: (name: string, tag: string) =>
    `${root}/repositories/${name}/_manifests/tags/${tag}`,
  tagCurrentLink: (name: string, tag: string) =>
    `${root}/repositories/${name}/_manifests/tags/${tag}/current/link`,
  tagIndexLink: (name: string, tag: string, digest: Digest) =>
    `${root}/repositories/${name}/_manifests/tags/${tag}/index/${digest.algorithm}/${digest.hex}/link`,
  referrersOf: (name: string, subject: Digest) =>
    `${root}/repositories/${name}/_referrers/${subject.algorithm}/${subject.hex}`,
  referrerEntry: (name: string, subject: Digest, referrer: Digest) =>
    `${root}/repositories/${name}/_referrers/${subject.algorithm}/${subject.hex}/${referrer.algorithm}/${referrer.hex}`,
  referrerLink: (name: string, subject: Digest, referrer: Digest) =>
    `${root}/repositories/${name}/_referrers/${subject.algorithm}/${subject.hex}/${referrer.algorithm}/${referrer.hex}/link`,
  uploadsRoot: (name: string) => `${root}/repositories/${name}/_uploads`,
  uploadDirectory: (name: string, id: string) => `${root}/repositories/${name}/_uploads/${id}`,
  uploadData: (name: string, id: string) => `${root}/repositories/${name}/_uploads/${id}/data`,
  uploadStartedAt: (name: string, id: string) =>
    `${root}/repositories/${name}/_uploads/${id}/startedat`,
} as const;

/** Directory names inside a repository that are not part of a nested repository name. */
export const repositoryInternalDirectories = new Set([
  '_layers',
  '_manifests',
  '_uploads',
  '_referrers',
]);
