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

/** A CEL rule the API server checks at apply time (x-kubernetes-validations), worded for people. */
export interface CelRule {
  readonly rule: string;
  readonly message: string;
  /** A message naming the value; `message` is used when it cannot be evaluated. */
  readonly messageExpression?: string;
}

/** zod metadata that puts these rules into the generated CRD. */
export function celRules(...rules: CelRule[]): { 'x-kubernetes-validations': CelRule[] } {
  return { 'x-kubernetes-validations': rules };
}

/** `text` as a CEL string literal. */
export function celString(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** CEL: whether the string `expression` is a duration, so that `duration()` cannot fail on it. */
export function isDuration(expression: string): string {
  return `${expression}.matches(${celString(durationPattern.source)})`;
}

const durationHint = 'write e.g. 30s, 5m or 24h';

/**
 * A duration field from `min` to `max`, both durations, `why` saying what the range protects.
 * The API server refuses a malformed or out-of-range value at apply time, naming it. zod checks
 * only the form: a Registry stored before the bounds existed is still served, and the operator
 * copes with any duration (the pull-secret rotation has a floor of its own).
 */
export function boundedDuration(field: string, min: string, max: string, why: string) {
  return z
    .string()
    .max(32)
    .refine((text) => durationPattern.test(text), `is not a duration; ${durationHint}`)
    .meta(
      celRules(
        {
          rule: isDuration('self'),
          message: `${field} is not a duration; ${durationHint}`,
          messageExpression: `${celString(`${field} "`)} + self + ${celString(`" is not a duration; ${durationHint}`)}`,
        },
        {
          rule: `!${isDuration('self')} || (duration(self) >= duration(${celString(min)}) && duration(self) <= duration(${celString(max)}))`,
          message: `${field} must be from ${min} to ${max}: ${why}`,
          messageExpression: `${celString(`${field} `)} + self + ${celString(` is out of range: write from ${min} to ${max}; ${why}`)}`,
        },
      ),
    );
}

/**
 * A size as a Kubernetes quantity (`20Gi`, `512Mi`), refused at apply time when it is not one,
 * naming it, and by any of `rules`.
 */
export function sizeField(field: string, ...rules: CelRule[]) {
  const hint = 'write e.g. 512Mi or 20Gi';
  return z
    .string()
    .max(32)
    .refine((text) => quantityPattern.test(text), `is not a size; ${hint}`)
    .meta(
      celRules(
        {
          rule: `self.matches(${celString(quantityPattern.source)})`,
          message: `${field} is not a size; ${hint}`,
          messageExpression: `${celString(`${field} "`)} + self + ${celString(`" is not a size; ${hint}`)}`,
        },
        ...rules,
      ),
    );
}
