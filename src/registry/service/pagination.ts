/** A page of a sorted list, as tags/list and _catalog return it. */
export interface Page {
  readonly items: string[];
  /** The `last` to ask for the next page, when there is one. */
  readonly next: string | undefined;
}

/**
 * Takes the entries after `last`, at most `n` of them. `sorted` must be in ascending order
 * (JavaScript's default string order: by code unit, which for the tag and name grammar is ASCII).
 */
export function paginate(sorted: readonly string[], options: { n?: number; last?: string }): Page {
  const { n, last } = options;
  const start = last === undefined ? 0 : firstAfter(sorted, last);
  const rest = sorted.slice(start);
  if (n === undefined || rest.length <= n) return { items: rest, next: undefined };
  const items = rest.slice(0, n);
  return { items, next: n === 0 ? undefined : items[items.length - 1] };
}

function firstAfter(sorted: readonly string[], last: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((sorted[middle] as string) <= last) low = middle + 1;
    else high = middle;
  }
  return low;
}
