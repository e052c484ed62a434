import { z } from 'zod';
import { parseDuration, parseSize } from '../config/units.ts';

/**
 * The Repository resource as the policy sees it. This zod schema is the one source of truth:
 * the standalone policy file is validated with it, and the operator's CRD is generated from it.
 */
const dnsLabel = z
  .string()
  .regex(
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/,
    'must be a Kubernetes name: lower-case letters, digits and -',
  )
  .max(63);

const valueOperators = ['In', 'NotIn'];

/**
 * One set-based requirement. As the API server does for a Deployment's selector, `values` is
 * refused with Exists and DoesNotExist and required with In and NotIn: else the selector would
 * mean something other than what was written (`In` with no values matches no namespace).
 */
const labelSelectorRequirement = z
  .object({
    key: z.string().min(1).max(317).describe('The label key the selector applies to.'),
    operator: z
      .enum(['In', 'NotIn', 'Exists', 'DoesNotExist'])
      .describe(
        'How the key relates to the values: In (the label has one of them), NotIn (it has none of them, or no such label), Exists (the label is there), DoesNotExist.',
      ),
    values: z
      .array(z.string().max(63))
      .max(100)
      .optional()
      .describe('At least one value with In and NotIn; left out with Exists and DoesNotExist.'),
  })
  .strict()
  .refine(
    (requirement) =>
      !valueOperators.includes(requirement.operator) || (requirement.values ?? []).length > 0,
    'operator In and NotIn need at least one value in values, e.g. values: [prod]',
  )
  .refine(
    (requirement) =>
      valueOperators.includes(requirement.operator) || (requirement.values ?? []).length === 0,
    'operator Exists and DoesNotExist take no values: remove values, or use In',
  )
  .meta({
    'x-kubernetes-validations': [
      {
        rule: "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
        message: 'operator In and NotIn need at least one value in values, e.g. values: [prod]',
        messageExpression:
          "'matchExpressions key ' + self.key + ': operator ' + self.operator + ' needs at least one value in values, e.g. values: [prod]'",
      },
      {
        rule: "self.operator in ['In', 'NotIn'] || !has(self.values) || size(self.values) == 0",
        message: 'operator Exists and DoesNotExist take no values: remove values, or use In',
        messageExpression:
          "'matchExpressions key ' + self.key + ': operator ' + self.operator + ' takes no values: remove values, or use In'",
      },
    ],
  });

export const labelSelectorSchema = z
  .object({
    matchLabels: z
      .record(z.string(), z.string())
      .optional()
      .describe(
        'Labels a namespace must carry, all of them. A selector with neither matchLabels nor matchExpressions matches every namespace.',
      ),
    matchExpressions: z
      .array(labelSelectorRequirement)
      .max(20)
      .optional()
      .describe('Set-based requirements, all of which must hold.'),
  })
  .strict();
export type LabelSelector = z.infer<typeof labelSelectorSchema>;

const accessGrantSchema = z
  .object({
    namespaces: z.array(dnsLabel).optional().describe('Namespaces granted this access by name.'),
    namespaceSelector: labelSelectorSchema
      .optional()
      .describe(
        'Namespaces granted this access by their labels. An empty selector matches every namespace.',
      ),
  })
  .strict();

/** A repository path: an exact name, or `prefix/*` for a whole subtree. */
const tagGlob = z
  .string()
  .regex(/^[A-Za-z0-9_.*?-]+$/, 'a tag glob: letters, digits, _ . - and the wildcards * ?');

/**
 * What garbage collection keeps of a repository. With keepLast or keepTags set, a tag is kept
 * when it is one of the keepLast most recently pushed, matches keepTags, is immutable, or was
 * pushed within the grace period; the other tags are deleted, and with them the manifests only
 * they reached. Children of kept indexes and referrers of kept manifests are always kept.
 */
const retentionSchema = z
  .object({
    keepLast: z
      .number()
      .int()
      .min(0)
      .max(100_000)
      .optional()
      .describe('Keep the tags pushed most recently, this many (by when the tag was last set).'),
    keepTags: z
      .array(tagGlob)
      .max(50)
      .optional()
      .describe('Keep every tag matching one of these globs, e.g. [v*, latest].'),
    untaggedAfter: z
      .string()
      .max(32)
      .refine(
        (text) => parseDuration(text) !== undefined,
        'is not a duration; write e.g. 30s, 5m or 24h',
      )
      .optional()
      .describe(
        'Delete manifests no kept tag, index or subject reaches once they were pushed this long ago, e.g. 72h. Left out, the registry-wide gc.untagged decides.',
      ),
    deleteOrphanReferrers: z
      .boolean()
      .optional()
      .describe(
        'Delete referrers (signatures, SBOMs) whose subject is gone or being deleted, even where untagged manifests are kept.',
      ),
  })
  .strict();

const repositoryPathPattern =
  /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*(?:\/\*)?$/;

export const repositorySpecSchema = z
  .object({
    registry: z
      .object({
        name: dnsLabel.describe('Name of the Registry.'),
        namespace: dnsLabel.describe('Namespace of the Registry.'),
      })
      .strict()
      .optional()
      .describe(
        'The Registry that serves this repository. Left out, every Registry in the cluster whose tenants.namespaceSelector admits this namespace serves it, and status.registries lists them; a standalone policy file leaves it out.',
      ),
    path: z
      .string()
      .regex(
        repositoryPathPattern,
        'must be a repository name such as team-a/web, or a subtree such as team-a/*',
      )
      .max(200)
      .optional()
      .describe(
        'Repository path in the registry. Defaults to <namespace>/<name>; a tenant may claim only paths under its namespace.',
      ),
    visibility: z
      .enum(['Private', 'Public'])
      .default('Private')
      .describe(
        'Private (the default): only the owning namespace and those named in pull and push. Public: anyone may pull, anonymously where the Registry allows.',
      ),
    pull: accessGrantSchema
      .optional()
      .describe(
        'Namespaces that may pull, besides the owning namespace. Left out, only the owning namespace (and those in push) may pull.',
      ),
    push: accessGrantSchema
      .optional()
      .describe(
        'Namespaces that may push (and pull), besides the owning namespace. Left out, only the owning namespace may push.',
      ),
    immutableTags: z
      .array(tagGlob)
      .optional()
      .describe(
        'Tag patterns (globs) that may not be moved once pushed. Left out, every tag may be pushed again.',
      ),
    retention: retentionSchema
      .optional()
      .describe(
        'What garbage collection deletes here: old tags and untagged manifests. Immutable tags are never deleted. Left out, tags are kept.',
      ),
    quota: z
      .object({
        size: z
          .string()
          .max(32)
          .refine(
            (text) => (parseSize(text) ?? 0) > 0,
            'is not a size above zero; write e.g. 512Mi or 20Gi',
          )
          .describe(
            'Most bytes of unique content (blobs and manifests, each counted once) the path may hold, e.g. 10Gi. A blob upload or manifest push that would go past it is refused with DENIED (403), naming the quota and the usage.',
          ),
      })
      .strict()
      .optional()
      .describe('Storage this path may use. Left out, only the Registry-wide limits apply.'),
  })
  .strict();
export type RepositorySpec = z.infer<typeof repositorySpecSchema>;

export const repositoryDocumentSchema = z
  .object({
    metadata: z.object({ name: dnsLabel, namespace: dnsLabel }).passthrough(),
    spec: repositorySpecSchema,
  })
  .passthrough();
export type RepositoryDocument = z.infer<typeof repositoryDocumentSchema>;

/**
 * The standalone policy file: the namespaces that exist (with labels, for selectors) and the
 * Repository documents. In Kubernetes mode both come from watches instead.
 */
export const policyFileSchema = z
  .object({
    namespaces: z.record(dnsLabel, z.record(z.string(), z.string()).nullable()).default({}),
    repositories: z.array(repositoryDocumentSchema).default([]),
  })
  .strict();
export type PolicyFile = z.infer<typeof policyFileSchema>;
