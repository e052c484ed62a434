import { z } from 'zod';
import { repositorySpecSchema } from '../../policy/schema.ts';
import { retentionForecastNames } from '../../policy/source.ts';
import { conditionSchema, observedGenerationSchema } from './common.ts';

/** The Repository spec is the policy's own schema: one source for the CRD and the registry. */
export { repositorySpecSchema };

/** How many serving Registries a Repository's status lists, so that it stays small. */
export const maxStatusRegistries = 10;
/** How many pulling namespaces a Repository's status names; pullNamespaces counts them all. */
export const maxStatusNamespaces = 20;

export const repositoryStatusSchema = z
  .object({
    observedGeneration: observedGenerationSchema,
    conditions: z
      .array(conditionSchema)
      .optional()
      .describe(
        'Ready (reasons such as PullSecretsIssued, ServiceAccountTokens (pods pull with their own ServiceAccount tokens, no Secret is written), PublicRepository, RegistryUnavailable, PathNotOwned, NotATenant, RegistryNotFound) and RegistryAvailable (whether a Registry serving it has a ready pod).',
      ),
    url: z
      .string()
      .optional()
      .describe('What pods put in image: to pull from this repository (its first Registry).'),
    registries: z
      .array(
        z
          .object({
            namespace: z.string().describe('Namespace of the Registry.'),
            name: z.string().describe('Name of the Registry.'),
            url: z.string().describe('What pods put in image: to pull from it there.'),
          })
          .strict(),
      )
      .max(maxStatusRegistries)
      .optional()
      .describe(
        'Every Registry that serves this repository (one naming no Registry is served by each that accepts it), by namespace/name; the Ready message counts them all.',
      ),
    usage: z
      .array(
        z
          .object({
            registry: z.string().describe('The Registry that measured it, namespace/name.'),
            bytes: z
              .number()
              .int()
              .nonnegative()
              .describe('Bytes of unique content (blobs and manifests) under the path.'),
            size: z.string().describe('The same, readable: 12.5Mi.'),
            quota: z.string().optional().describe('spec.quota.size when one is set.'),
            retention: z
              .object({
                evaluatedAt: z
                  .string()
                  .describe(
                    'When the registry made this forecast (RFC 3339). It forecasts every 30 seconds and writes only a changed one, so this one has held since.',
                  ),
                tags: z.number().int().nonnegative().describe('Tags retention deletes.'),
                manifests: z
                  .number()
                  .int()
                  .nonnegative()
                  .describe(
                    'Manifests deleted: those of the deleted tags, untagged ones past untaggedAfter (or gc.untagged: delete) and, with deleteOrphanReferrers, referrers whose subject goes.',
                  ),
                bytes: z
                  .number()
                  .int()
                  .nonnegative()
                  .describe('How much bytes (the usage above) drops.'),
                wouldDelete: z
                  .array(z.string())
                  .max(retentionForecastNames)
                  .describe(
                    `The first ${retentionForecastNames} of what goes, in name order: repository:tag, then repository@digest of manifests no deleted tag names; tags and manifests count them all.`,
                  ),
              })
              .strict()
              .optional()
              .describe(
                "What the Registry's next garbage collection removes under the path: a dry run of its retention plan against storage now. Only with spec.retention, on a Registry that collects garbage (spec.gc).",
              ),
          })
          .strict(),
      )
      .max(maxStatusRegistries)
      .optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['registry'] })
      .describe(
        'Storage used under the path, one entry per serving Registry, written by the registry itself (not the operator) about every 30 seconds.',
      ),
    pullNamespaces: z.number().int().optional().describe('How many namespaces may pull.'),
    pullNamespaceNames: z
      .array(z.string())
      .max(maxStatusNamespaces)
      .optional()
      .describe(
        `The namespaces that may pull, in name order: the first ${maxStatusNamespaces}; pullNamespaces counts them all.`,
      ),
  })
  .strict();

export type RepositoryStatus = z.infer<typeof repositoryStatusSchema>;
