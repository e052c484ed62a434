import type { Action } from '../../policy/compile.ts';
import { OciError } from '../errors.ts';
import { isRepositoryName } from '../reference.ts';
import type { AccessEntry } from '../../credentials/access-claim.ts';

/**
 * Scopes one token request may ask for. Clients ask for one to a handful (a push with mounts:
 * the target and each source); the cap bounds what one request can make the registry sign.
 */
export const maxScopesPerRequest = 64;
/** The longest scope: a maximal repository name with every action fits well within it. */
export const maxScopeLength = 512;

/**
 * Parses `type[(class)]:name:action[,action]`. The name may itself contain colons (a
 * `host:port` prefix), so the type ends at the first colon and the actions start at the last.
 * Unparseable scopes, and repository scopes whose name is not a valid repository name, are
 * dropped: a client asking for nonsense gets a token for nothing.
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
  if (type === 'repository' && !isRepositoryName(name)) return undefined;
  return { type, name, actions };
}

/**
 * Scopes as clients send them: repeated parameters, each possibly space-separated. Scopes of
 * the same type and name are merged into one entry with every action asked for, so repeating a
 * scope never grows a token. More than `maxScopesPerRequest` scopes, or one longer than
 * `maxScopeLength`, is refused.
 */
export function parseScopes(values: readonly string[]): AccessEntry[] {
  const scopes = values.flatMap((value) => value.split(' ')).filter(Boolean);
  if (scopes.length > maxScopesPerRequest) {
    throw invalidScope(`at most ${maxScopesPerRequest} scopes may be asked for at once`);
  }
  const merged = new Map<string, { type: string; name: string; actions: Set<string> }>();
  for (const scope of scopes) {
    if (scope.length > maxScopeLength) {
      throw invalidScope(`a scope may be at most ${maxScopeLength} characters long`);
    }
    const entry = parseScope(scope);
    if (!entry) continue;
    const key = `${entry.type}\u0000${entry.name}`;
    const into = merged.get(key) ?? { type: entry.type, name: entry.name, actions: new Set() };
    for (const action of entry.actions) into.actions.add(action);
    merged.set(key, into);
  }
  return [...merged.values()].map(({ type, name, actions }) => ({
    type,
    name,
    actions: [...actions],
  }));
}

function invalidScope(message: string): OciError {
  return new OciError('REQUEST_UNSUPPORTED', message, {
    detail: { maxScopes: maxScopesPerRequest, maxScopeLength },
  });
}

export function formatScope(entry: AccessEntry): string {
  return `${entry.type}:${entry.name}:${entry.actions.join(',')}`;
}

/** `*` in a requested scope means every action Berth knows. */
export function expandActions(actions: readonly string[]): Action[] {
  const all: Action[] = ['pull', 'push', 'delete'];
  return actions.includes('*') ? all : all.filter((action) => actions.includes(action));
}
