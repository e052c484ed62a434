import { matchesSelector } from '../policy/selector.ts';
import type { RepositorySpec } from '../policy/schema.ts';

/**
 * What a person should be told about a Repository's namespace selectors, for its Ready message:
 * an empty selector matches every namespace (a Kubernetes rule that surprises), and one that
 * matches no namespace is most often a typo in a label. Pure.
 */
export function selectorNotes(
  spec: RepositorySpec,
  namespaces: ReadonlyMap<string, Readonly<Record<string, string>>>,
): string[] {
  const notes: string[] = [];
  for (const access of ['pull', 'push'] as const) {
    const selector = spec[access]?.namespaceSelector;
    if (!selector) continue;
    const empty =
      Object.keys(selector.matchLabels ?? {}).length === 0 &&
      (selector.matchExpressions ?? []).length === 0;
    if (empty) notes.push(`${access}.namespaceSelector is empty, so every namespace may ${access}`);
    else if (![...namespaces.values()].some((labels) => matchesSelector(selector, labels)))
      notes.push(`${access}.namespaceSelector matches no namespace`);
  }
  return notes;
}

/** "1 namespace", "2 namespaces". */
export function namespaceCount(count: number): string {
  return `${count} ${count === 1 ? 'namespace' : 'namespaces'}`;
}
