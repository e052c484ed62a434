import { ByteLru } from '../util/byte-lru.ts';
import type { RepositoryDocument } from './schema.ts';
import { matchesSelector } from './selector.ts';
import { parseDuration, parseSize } from '../config/units.ts';

export type Action = 'pull' | 'push' | 'delete';

/** Who is asking. A credential proves one of these; the policy says what it may do. */
export type Identity =
  | { readonly kind: 'admin' }
  | { readonly kind: 'namespace'; readonly namespace: string }
  | { readonly kind: 'anonymous' };

export interface PolicyInput {
  /** Every namespace that exists, with its labels. */
  readonly namespaces: ReadonlyMap<string, Readonly<Record<string, string>>>;
  readonly repositories: readonly RepositoryDocument[];
}

export interface PolicyOptions {
  /** Whether Public repositories may be pulled without any credential. */
  readonly anonymousPull: boolean;
  /**
   * Pull-through mirror prefixes. A path under one that no Repository declares is Public:
   * anyone may pull what the mirror serves (anonymously where anonymousPull allows). A Repository
   * that declares the path decides instead, as for pushed content.
   */
  readonly mirrorPrefixes?: readonly string[];
}

/** Why a Repository grants nothing; the operator reports these as status conditions. */
export interface RejectedRepository {
  readonly namespace: string;
  readonly name: string;
  readonly reason: 'PathNotOwned' | 'PathConflict' | 'NotATenant';
  readonly message: string;
}

/** The storage quota of the Repository that governs a repository path. */
export interface RepositoryQuota {
  /** `<namespace>/<name>` of the Repository. */
  readonly source: string;
  /** Its path: an exact name, or `prefix/*`; every repository it governs shares the quota. */
  readonly path: string;
  /** Bytes, and the size as written (`10Gi`), for messages. */
  readonly bytes: number;
  readonly size: string;
}

/** What garbage collection keeps of the repositories a Repository governs. */
export interface RepositoryRetention {
  readonly keepLast: number | undefined;
  readonly keepTags: readonly RegExp[];
  /** Milliseconds; undefined leaves untagged manifests to the registry-wide gc.untagged. */
  readonly untaggedAfter: number | undefined;
  readonly deleteOrphanReferrers: boolean;
}

/** What one accepted Repository grants, for the operator's pull secrets and status. */
export interface RepositoryGrant {
  /** `<namespace>/<name>` of the Repository. */
  readonly source: string;
  readonly path: string;
  readonly visibility: 'Private' | 'Public';
  /** Existing namespaces that may pull: the owner, and those granted pull or push. */
  readonly pullNamespaces: ReadonlySet<string>;
  /** spec.quota.size, as written. */
  readonly quota: string | undefined;
}

interface Rule {
  readonly owner: string;
  readonly source: string;
  readonly path: string;
  readonly visibility: 'Private' | 'Public';
  readonly pull: ReadonlySet<string>;
  readonly push: ReadonlySet<string>;
  readonly immutableTags: readonly RegExp[];
  readonly quota: RepositoryQuota | undefined;
  readonly retention: RepositoryRetention | undefined;
}

const none: ReadonlySet<Action> = new Set();
const everything: ReadonlySet<Action> = new Set(['pull', 'push', 'delete']);
const pullPush: ReadonlySet<Action> = new Set(['pull', 'push']);
const pullOnly: ReadonlySet<Action> = new Set(['pull']);

/** Memory for remembered decisions, per compiled policy; their values are the shared sets above. */
const decisionCacheBytes = 8 * 1024 * 1024;

/**
 * A compiled, immutable policy. Paths are exact names or `prefix/*` subtrees; the most specific
 * rule wins (an exact name, else the longest subtree). A path no Repository declares belongs to
 * nobody but the admin.
 */
export class Policy {
  readonly rejected: readonly RejectedRepository[];
  private readonly exact: ReadonlyMap<string, Rule>;
  /** Subtree prefixes (without `/*`), longest first. */
  private readonly subtrees: readonly (readonly [string, Rule])[];
  private readonly anonymousPull: boolean;
  private readonly mirrorPrefixes: readonly string[];
  /** Namespaces that exist: a namespace that is gone (or never was) may do nothing. */
  private readonly namespaces: ReadonlySet<string>;
  /** A policy never changes, so decisions never go stale: they leave only to make room. */
  private readonly decisions = new ByteLru<ReadonlySet<Action>>({
    maxBytes: decisionCacheBytes,
    ttlMillis: Number.POSITIVE_INFINITY,
  });

  constructor(
    exact: Map<string, Rule>,
    subtrees: [string, Rule][],
    rejected: RejectedRepository[],
    namespaces: ReadonlySet<string>,
    options: PolicyOptions,
  ) {
    this.namespaces = namespaces;
    this.exact = exact;
    this.subtrees = subtrees.sort((a, b) => b[0].length - a[0].length);
    this.rejected = rejected;
    this.anonymousPull = options.anonymousPull;
    this.mirrorPrefixes = options.mirrorPrefixes ?? [];
  }

  /** The actions `identity` may perform on `repository`. */
  allowed(identity: Identity, repository: string): ReadonlySet<Action> {
    if (identity.kind === 'admin') return everything;
    const key = `${identity.kind === 'namespace' ? identity.namespace : ''}\u0000${repository}`;
    let decision = this.decisions.get(key);
    if (decision === undefined) {
      decision = this.decide(identity, this.ruleFor(repository), repository);
      this.decisions.set(key, decision, 0);
    }
    return decision;
  }

  /** Every accepted Repository with the existing namespaces that may pull from it. */
  grants(): RepositoryGrant[] {
    return [...this.exact.values(), ...this.subtrees.map(([, rule]) => rule)].map((rule) => ({
      source: rule.source,
      path: rule.path,
      visibility: rule.visibility,
      quota: rule.quota?.size,
      pullNamespaces: new Set(
        [rule.owner, ...rule.pull, ...rule.push].filter((namespace) =>
          this.namespaces.has(namespace),
        ),
      ),
    }));
  }

  /** Whether a push may not move `tag` once it exists. */
  isImmutableTag(repository: string, tag: string): boolean {
    return this.ruleFor(repository)?.immutableTags.some((pattern) => pattern.test(tag)) ?? false;
  }

  /**
   * The quota that applies to `repository`: that of the Repository governing it (the most
   * specific path, as for access). Two repositories share a quota when it has the same source.
   */
  quotaFor(repository: string): RepositoryQuota | undefined {
    return this.ruleFor(repository)?.quota;
  }

  /** `<namespace>/<name>` of the Repository governing `repository`; undefined for none. */
  governedBy(repository: string): string | undefined {
    return this.ruleFor(repository)?.source;
  }

  /** The retention of the Repository governing `repository`; undefined keeps every tag. */
  retentionFor(repository: string): RepositoryRetention | undefined {
    return this.ruleFor(repository)?.retention;
  }

  private ruleFor(repository: string): Rule | undefined {
    const exact = this.exact.get(repository);
    if (exact) return exact;
    for (const [prefix, rule] of this.subtrees) {
      if (repository.startsWith(`${prefix}/`)) return rule;
    }
    return undefined;
  }

  private decide(
    identity: Identity,
    rule: Rule | undefined,
    repository: string,
  ): ReadonlySet<Action> {
    if (!rule) return this.isMirrored(repository) ? this.mirroredDefault(identity) : none;
    if (identity.kind === 'anonymous')
      return rule.visibility === 'Public' && this.anonymousPull ? pullOnly : none;
    if (identity.kind !== 'namespace') return none;
    const { namespace } = identity;
    // A deleted namespace keeps nothing, and a namespace recreated under the same name starts
    // from what the policy says of it then, not from grants it had before.
    if (!this.namespaces.has(namespace)) return none;
    if (namespace === rule.owner) return everything;
    if (rule.push.has(namespace)) return pullPush;
    if (rule.pull.has(namespace) || rule.visibility === 'Public') return pullOnly;
    return none;
  }

  private isMirrored(repository: string): boolean {
    return this.mirrorPrefixes.some((prefix) => repository.startsWith(`${prefix}/`));
  }

  /** An undeclared mirrored path is Public: pull only, never push or delete (mirrors refuse both). */
  private mirroredDefault(identity: Identity): ReadonlySet<Action> {
    if (identity.kind === 'anonymous') return this.anonymousPull ? pullOnly : none;
    if (identity.kind !== 'namespace') return none;
    return this.namespaces.has(identity.namespace) ? pullOnly : none;
  }
}

/** The repository path a Repository claims: `spec.path`, or `<namespace>/<name>`. */
export function repositoryPath(document: RepositoryDocument): string {
  return document.spec.path ?? `${document.metadata.namespace}/${document.metadata.name}`;
}

/**
 * Compiles Repository documents against the live namespaces. A Repository may claim only paths
 * under its own namespace (`team-a/...`): one tenant can never grant itself another's images.
 * Pure: the same input always gives the same policy.
 */
export function compilePolicy(input: PolicyInput, options: PolicyOptions): Policy {
  const exact = new Map<string, Rule>();
  const subtrees = new Map<string, Rule>();
  const rejected: RejectedRepository[] = [];
  const ordered = [...input.repositories].sort((a, b) =>
    `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(
      `${b.metadata.namespace}/${b.metadata.name}`,
    ),
  );
  for (const document of ordered) {
    const { namespace, name } = document.metadata;
    const path = repositoryPath(document);
    if (!path.startsWith(`${namespace}/`)) {
      rejected.push({
        namespace,
        name,
        reason: 'PathNotOwned',
        message: `path ${path} is outside namespace ${namespace}; use ${namespace}/...`,
      });
      continue;
    }
    const isSubtree = path.endsWith('/*');
    const key = isSubtree ? path.slice(0, -2) : path;
    const table = isSubtree ? subtrees : exact;
    const claimed = table.get(key);
    if (claimed) {
      rejected.push({
        namespace,
        name,
        reason: 'PathConflict',
        message: `path ${path} is already claimed by ${claimed.source}`,
      });
      continue;
    }
    table.set(key, {
      owner: namespace,
      source: `${namespace}/${name}`,
      path,
      visibility: document.spec.visibility,
      pull: resolveNamespaces(document.spec.pull, input.namespaces),
      push: resolveNamespaces(document.spec.push, input.namespaces),
      immutableTags: (document.spec.immutableTags ?? []).map(globToRegExp),
      quota: document.spec.quota
        ? {
            source: `${namespace}/${name}`,
            path,
            size: document.spec.quota.size,
            bytes: parseSize(document.spec.quota.size) as number,
          }
        : undefined,
      retention: compileRetention(document.spec.retention),
    });
  }
  return new Policy(
    exact,
    [...subtrees.entries()],
    rejected,
    new Set(input.namespaces.keys()),
    options,
  );
}

/** The namespaces a grant names: the listed ones plus those whose labels match the selector. */
export function resolveNamespaces(
  grant: RepositoryDocument['spec']['pull'],
  namespaces: ReadonlyMap<string, Readonly<Record<string, string>>>,
): ReadonlySet<string> {
  const resolved = new Set<string>(grant?.namespaces ?? []);
  if (grant?.namespaceSelector) {
    for (const [namespace, labels] of namespaces) {
      if (matchesSelector(grant.namespaceSelector, labels)) resolved.add(namespace);
    }
  }
  return resolved;
}

function compileRetention(
  retention: RepositoryDocument['spec']['retention'],
): RepositoryRetention | undefined {
  if (!retention) return undefined;
  return {
    keepLast: retention.keepLast,
    keepTags: (retention.keepTags ?? []).map(globToRegExp),
    untaggedAfter:
      retention.untaggedAfter === undefined ? undefined : parseDuration(retention.untaggedAfter),
    deleteOrphanReferrers: retention.deleteOrphanReferrers ?? false,
  };
}

function globToRegExp(glob: string): RegExp {
  const pattern = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${pattern}$`);
}
