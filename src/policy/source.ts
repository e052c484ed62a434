import { readFile } from 'node:fs/promises';
import { unwatchFile, watchFile } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../observability/logger.ts';
import { compilePolicy, type Policy, type PolicyOptions } from './compile.ts';
import { policyFileSchema } from './schema.ts';
import { firstZodIssue } from '../util/zod-issues.ts';

/** Where the live policy comes from: a file in standalone mode, watches in Kubernetes mode. */
export interface PolicySource {
  current(): Policy;
  close(): void;
  /**
   * Publishes a Repository's storage usage where its owner can see it (Kubernetes mode: its
   * status); absent where there is nowhere to publish.
   */
  reportUsage?(source: string, usage: RepositoryUsage): Promise<void>;
}

export interface RepositoryUsage {
  readonly bytes: number;
  /** The bytes, readable: `12.5Mi`. */
  readonly size: string;
  readonly quota: string | undefined;
  /** What the registry's next garbage collection removes, for a Repository with retention. */
  readonly retention?: RetentionForecast | undefined;
}

/** How many names a retention forecast lists (`wouldDelete`); its counts cover everything. */
export const retentionForecastNames = 10;

/**
 * A dry run of the next collection's plan for the repositories one Repository governs: counts
 * of everything it removes, and the first few names.
 */
export interface RetentionForecast {
  /** When the forecast was made (RFC 3339). */
  readonly evaluatedAt: string;
  /** Tags retention deletes. */
  readonly tags: number;
  /** Manifest revisions deleted: those of the deleted tags, untagged ones, orphan referrers. */
  readonly manifests: number;
  /** How much the Repository's usage (its bytes) drops. */
  readonly bytes: number;
  /** The first of what goes, `repository:tag` then `repository@digest` of untagged manifests. */
  readonly wouldDelete: readonly string[];
}

export function staticPolicySource(policy: Policy): PolicySource {
  return { current: () => policy, close: () => undefined };
}

/** Reads and compiles a standalone policy file; throws with the field at fault. */
export async function loadPolicyFile(file: string, options: PolicyOptions): Promise<Policy> {
  const document = parseYaml(await readFile(file, 'utf8')) ?? {};
  const result = policyFileSchema.safeParse(document);
  if (!result.success) {
    throw new Error(`invalid policy ${file}: ${firstZodIssue(result.error)}`);
  }
  const namespaces = new Map(
    Object.entries(result.data.namespaces).map(([name, labels]) => [name, labels ?? {}]),
  );
  return compilePolicy({ namespaces, repositories: result.data.repositories }, options);
}

/**
 * A policy file that is reloaded when it changes (polled every 200 ms, so an edit takes effect
 * well within a second). A file that stops parsing leaves the last good policy in force.
 */
export async function watchPolicyFile(
  file: string,
  options: PolicyOptions,
  logger: Logger,
): Promise<PolicySource> {
  let policy = await loadPolicyFile(file, options);
  for (const rejected of policy.rejected) logger.warn({ ...rejected }, 'repository grants nothing');
  const reload = async (): Promise<void> => {
    try {
      policy = await loadPolicyFile(file, options);
      logger.info({ file, rejected: policy.rejected.length }, 'policy reloaded');
      for (const rejected of policy.rejected)
        logger.warn({ ...rejected }, 'repository grants nothing');
    } catch (error) {
      logger.error({ file, err: error }, 'policy reload failed; keeping the previous policy');
    }
  };
  const listener = (): void => void reload();
  watchFile(file, { interval: 200, persistent: false }, listener);
  return { current: () => policy, close: () => unwatchFile(file, listener) };
}
