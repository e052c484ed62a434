import { z } from 'zod';

/** A Kubernetes status condition, as in the API conventions (metav1.Condition). */
export const conditionSchema = z
  .object({
    type: z.string().describe('Kind of condition: Ready, Progressing or Degraded.'),
    status: z.enum(['True', 'False', 'Unknown']).describe('Whether the condition holds.'),
    reason: z.string().describe('One CamelCase word that says why.'),
    message: z.string().describe('What a person should know, in a sentence.'),
    lastTransitionTime: z.string().describe('When the status last changed (RFC 3339).'),
    observedGeneration: z
      .number()
      .int()
      .optional()
      .describe('The .metadata.generation this condition describes.'),
  })
  .strict();

export const observedGenerationSchema = z
  .number()
  .int()
  .optional()
  .describe('The .metadata.generation the status describes.');

export const durationPattern = /^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/;
export const quantityPattern = /^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$/;
