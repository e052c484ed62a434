/**
 * The `access` claim of an access token, as in distribution's token spec: what the token service
 * signs and what the registry reads back. Part of the credential format, so both the registry and
 * the operator read it from here.
 */
export interface AccessEntry {
  readonly type: string;
  readonly name: string;
  readonly actions: string[];
}

/** A token's `access` claim indexed by repository name, plus whether it grants the catalog. */
export interface TokenGrants {
  readonly repositories: ReadonlyMap<string, ReadonlySet<string>>;
  readonly catalog: boolean;
}

/** A token's `access` claim, indexed once per token. */
export function indexGrants(access: readonly AccessEntry[]): TokenGrants {
  const repositories = new Map<string, Set<string>>();
  let catalog = false;
  for (const entry of access) {
    if (entry.type === 'registry' && entry.name === 'catalog') catalog = true;
    if (entry.type !== 'repository') continue;
    const actions = repositories.get(entry.name) ?? new Set<string>();
    for (const action of entry.actions) actions.add(action);
    repositories.set(entry.name, actions);
  }
  return { repositories, catalog };
}
