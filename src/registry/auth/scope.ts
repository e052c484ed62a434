import type { Action } from '../../policy/compile.ts';

/** One entry of a token's `access` claim, as in distribution's token spec. */
export interface AccessEntry {
  readonly type: string;
  readonly name: string;
  readonly actions: string[];
}

/**
 * Parses `type[(class)]:name:action[,action]`. The name may itself contain colons (a
 * `host:port` prefix), so the type ends at the first colon and the actions start at the last.
 * Unparseable scopes are dropped: a client asking for nonsense gets a token for nothing.
 */
export function parseScope(scope: string): AccessEntry | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  const type = scope.slice(0, first).replace(/\(.*\)$/, '');
  const name = scope.slice(first + 1, last);
  const actions = scope
    .slice(last + 1)
    .split(',')
    .map((action) => action.trim())
    .filter(Boolean);
  if (!name || actions.length === 0) return undefined;
  return { type, name, actions };
}

/** Scopes as clients send them: repeated parameters, each possibly space-separated. */
export function parseScopes(values: readonly string[]): AccessEntry[] {
  return values.flatMap((value) => value.split(' ')).flatMap((scope) => parseScope(scope) ?? []);
}

export function formatScope(entry: AccessEntry): string {
  return `${entry.type}:${entry.name}:${entry.actions.join(',')}`;
}

/** `*` in a requested scope means every action Berth knows. */
export function expandActions(actions: readonly string[]): Action[] {
  const all: Action[] = ['pull', 'push', 'delete'];
  return actions.includes('*') ? all : all.filter((action) => actions.includes(action));
}
