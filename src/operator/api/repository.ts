import { z } from 'zod';
import { repositorySpecSchema } from '../../policy/schema.ts';
import { conditionSchema, observedGenerationSchema } from './common.ts';

/** The Repository spec is the policy's own schema: one source for the CRD and the registry. */
export { repositorySpecSchema };

export const repositoryStatusSchema = z
  .object({
    observedGeneration: observedGenerationSchema,
    conditions: z
      .array(conditionSchema)
      .optional()
      .describe('Ready, with PullSecretsIssued or PathNotOwned as reasons.'),
    url: z.string().optional().describe('What pods put in image: to pull from this repository.'),
    pullNamespaces: z.number().int().optional().describe('Namespaces that may pull.'),
  })
  .strict();

export type RepositoryStatus = z.infer<typeof repositoryStatusSchema>;
