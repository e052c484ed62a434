import { OciError, isOciError } from '../errors.ts';
import {
  isTag,
  parseDigest,
  parseManifestReference,
  type ManifestReference,
} from '../reference.ts';
import { maxManifestBytes } from '../service/manifests.ts';
import { paginate } from '../service/pagination.ts';
import { readBody } from './body.ts';
import type { HandlerContext } from './context.ts';
import type { RouteOf } from './routes.ts';
import { bareMediaType, parsePageSize, queryString } from './headers.ts';

type ManifestRoute = RouteOf<'manifest'>;

/** Catalog pages are capped as in distribution. */
const maxCatalogPage = 1000;
const defaultCatalogPage = 100;

/**
 * GET and HEAD a manifest: the stored bytes with the pushed media type, whatever the Accept
 * header says (rewriting content would change its digest).
 */
export async function getManifest(ctx: HandlerContext, route: ManifestRoute): Promise<void> {
  const { req, res, services } = ctx;
  const { name } = route;
  let reference: ManifestReference;
  try {
    reference = parseManifestReference(route.reference);
  } catch (error) {
    // A name that cannot be a tag cannot have been pushed: that is "unknown", not a bad request.
    if (isOciError(error, 'TAG_INVALID'))
      throw new OciError('MANIFEST_UNKNOWN', undefined, { detail: { tag: route.reference } });
    throw error;
  }
  const mirrored = services.mirrors.resolve(name);
  const manifest = mirrored
    ? await services.mirrors.getManifest(mirrored, reference)
    : await services.manifests.get(name, reference);
  res.status(200);
  res.setHeader('Content-Type', manifest.mediaType);
  res.setHeader('Content-Length', manifest.bytes.length);
  res.setHeader('Docker-Content-Digest', manifest.digest.value);
  res.setHeader('ETag', `"${manifest.digest.value}"`);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  ctx.traffic.sent += manifest.bytes.length;
  res.end(manifest.bytes);
}

export async function putManifest(ctx: HandlerContext, route: ManifestRoute): Promise<void> {
  const { req, res, services } = ctx;
  const { name } = route;
  const reference = parseManifestReference(route.reference);
  const tags = tagParameters(req.query.tag);
  const bytes = await readBody(req, maxManifestBytes);
  ctx.traffic.received += bytes.length;
  const contentType = bareMediaType(req.headers['content-type']);
  const policy = ctx.access?.policy;
  const { digest, subject } = await services.manifests.put(name, reference, bytes, contentType, {
    extraTags: tags,
    ...(policy ? { isImmutableTag: (tag: string) => policy.isImmutableTag(name, tag) } : {}),
  });
  res.status(201);
  if (tags.length > 0) res.setHeader('OCI-Tag', tags);
  res.setHeader('Location', `/v2/${name}/manifests/${digest.value}`);
  res.setHeader('Docker-Content-Digest', digest.value);
  if (subject) res.setHeader('OCI-Subject', subject.value);
  res.setHeader('Content-Length', 0);
  res.end();
}

/** `?tag=a&tag=b` on a push by digest (distribution-spec after v1.1): more tags in one request. */
function tagParameters(value: unknown): string[] {
  if (value === undefined) return [];
  const tags = Array.isArray(value) ? value : [value];
  for (const tag of tags) {
    if (typeof tag !== 'string' || !isTag(tag))
      throw new OciError('TAG_INVALID', 'invalid tag parameter', { detail: { tag } });
  }
  return tags as string[];
}

export async function deleteManifest(ctx: HandlerContext, route: ManifestRoute): Promise<void> {
  const { name } = route;
  const reference = parseManifestReference(route.reference);
  const policy = ctx.access?.policy;
  await ctx.services.manifests.delete(
    name,
    reference,
    policy ? { isImmutableTag: (tag: string) => policy.isImmutableTag(name, tag) } : {},
  );
  ctx.res.status(202).setHeader('Content-Length', 0).end();
}

/** GET /v2/<name>/tags/list with `n` and `last`; a further page is announced in `Link`. */
export async function getTags(ctx: HandlerContext, route: RouteOf<'tags'>): Promise<void> {
  const { req, res, services } = ctx;
  const { name } = route;
  const n = parsePageSize(req.query.n, Number.MAX_SAFE_INTEGER);
  const last = queryString(req.query.last, 'last');
  const page = paginate(await services.tags.list(name), { n, last });
  if (page.next !== undefined && n !== undefined) {
    res.setHeader(
      'Link',
      `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(page.next)}>; rel="next"`,
    );
  }
  res.status(200).json({ name, tags: page.items });
}

export async function getCatalog(ctx: HandlerContext, _route: RouteOf<'catalog'>): Promise<void> {
  const { req, res, services } = ctx;
  const n = parsePageSize(req.query.n, maxCatalogPage) ?? defaultCatalogPage;
  const last = queryString(req.query.last, 'last');
  const access = ctx.access;
  const names = await services.catalog.list();
  // Only what the caller may pull: the catalog must not reveal other tenants' repositories.
  const visible = access
    ? names.filter((name) => access.policy.allowed(access.identity, name).has('pull'))
    : names;
  const page = paginate(visible, { n, last });
  if (page.next !== undefined) {
    res.setHeader(
      'Link',
      `</v2/_catalog?n=${n}&last=${encodeURIComponent(page.next)}>; rel="next"`,
    );
  }
  res.status(200).json({ repositories: page.items });
}

/** GET /v2/<name>/referrers/<digest>, optionally filtered by `artifactType`. */
export async function getReferrers(
  ctx: HandlerContext,
  route: RouteOf<'referrers'>,
): Promise<void> {
  const { req, res, services } = ctx;
  const { name } = route;
  const subject = parseDigest(route.digest);
  const artifactType = queryString(req.query.artifactType, 'artifactType');
  const index = await services.referrers.list(name, subject, artifactType);
  if (artifactType !== undefined) res.setHeader('OCI-Filters-Applied', 'artifactType');
  const body = Buffer.from(JSON.stringify(index));
  res.status(200);
  res.setHeader('Content-Type', 'application/vnd.oci.image.index.v1+json');
  res.setHeader('Content-Length', body.length);
  res.end(body);
}
