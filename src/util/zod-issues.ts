import type { z } from 'zod';

/**
 * The one way Berth words a zod failure: each issue as `where: what`, where `where` is the
 * dotted path to the field at fault, or `topLevel` for the document itself. Callers choose how
 * many to show (a config error lists all; a refused request names the first).
 */
export function zodIssues(error: z.ZodError, topLevel = '(top level)'): string[] {
  return error.issues.map(
    (issue) => `${issue.path.length ? issue.path.join('.') : topLevel}: ${issue.message}`,
  );
}

/** The first issue, worded as `zodIssues` does. */
export function firstZodIssue(error: z.ZodError, topLevel?: string): string {
  return zodIssues(error, topLevel)[0] ?? 'invalid';
}
