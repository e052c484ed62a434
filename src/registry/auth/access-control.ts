import type { Action, Identity, Policy } from '../../policy/compile.ts';
import { OciError } from '../errors.ts';
import type { TokenGrants } from '../../credentials/access-claim.ts';
import { formatScope } from './scope.ts';

/**
 * What a request needs before it may run, in the terms of the policy and the token: a known
 * caller, the catalog, or actions on one repository. The HTTP layer says which each endpoint
 * needs (route-table.ts); access control knows nothing of routes.
 */
export type Requirement =
  | { readonly kind: 'authenticated' }
  | { readonly kind: 'catalog' }
  | { readonly kind: 'repository'; readonly name: string; readonly actions: readonly Action[] };

/**
 * A caller's rights for the rest of a request: the live policy for its identity, cut down to
 * what its token grants. The policy is read per request, so a revocation applies to the very
 * next request even while the token is still valid.
 */
export class RequestAccess {
  readonly identity: Identity;
  readonly policy: Policy;
  /** Repository name -> actions the token grants; undefined when the request carried no token. */
  private readonly grants: ReadonlyMap<string, ReadonlySet<string>> | undefined;
  /** Whether the token grants `registry:catalog:*`. */
  readonly permitsCatalog: boolean;

  constructor(identity: Identity, policy: Policy, token: TokenGrants | undefined) {
    this.identity = identity;
    this.policy = policy;
    this.grants = token?.repositories;
    this.permitsCatalog = token?.catalog ?? false;
  }

  /** Whether both the policy and, when there is one, the token allow every action on a repository. */
  permits(name: string, actions: readonly Action[]): boolean {
    const byPolicy = this.policy.allowed(this.identity, name);
    const granted = this.grants?.get(name);
    for (const action of actions) {
      if (!byPolicy.has(action)) return false;
      if (this.grants && !(granted?.has(action) || granted?.has('*'))) return false;
    }
    return true;
  }

  can(name: string, action: Action): boolean {
    return this.permits(name, [action]);
  }

  get hasToken(): boolean {
    return this.grants !== undefined;
  }
}

export interface Challenge {
  readonly realm: string;
  readonly service: string;
}

/**
 * Decides a request: returns when it may go on, or throws UNAUTHORIZED (401, with the Bearer
 * challenge that tells the client where to get a token for what) or DENIED (403) when the caller
 * is known and the policy refuses.
 */
export function enforce(
  access: RequestAccess,
  requirement: Requirement,
  challenge: () => Challenge,
): void {
  if (requirement.kind === 'catalog') {
    // As for a repository: without a token the client is told which scope to get one for.
    if (!access.permitsCatalog) {
      throw unauthorized(
        challenge(),
        'registry:catalog:*',
        access.hasToken ? 'insufficient_scope' : undefined,
      );
    }
    return;
  }
  if (requirement.kind === 'authenticated') {
    if (access.identity.kind === 'anonymous' && !access.hasToken)
      throw unauthorized(challenge(), undefined, undefined);
    return;
  }
  if (access.permits(requirement.name, requirement.actions)) return;
  const scope = formatScope({
    type: 'repository',
    name: requirement.name,
    actions: [...requirement.actions],
  });
  const policyAllows = access.policy.allowed(access.identity, requirement.name);
  if (access.identity.kind === 'anonymous')
    throw unauthorized(challenge(), scope, access.hasToken ? 'insufficient_scope' : undefined);
  if (requirement.actions.every((action) => policyAllows.has(action))) {
    // The policy allows it but the token was issued for less: ask for a new token.
    throw unauthorized(challenge(), scope, 'insufficient_scope');
  }
  throw new OciError('DENIED', 'requested access to the resource is denied', {
    detail: { name: requirement.name, actions: requirement.actions },
  });
}

export function unauthorized(
  challenge: Challenge,
  scope: string | undefined,
  error: 'invalid_token' | 'insufficient_scope' | undefined,
): OciError {
  const parts = [`realm="${challenge.realm}"`, `service="${challenge.service}"`];
  if (scope) parts.push(`scope="${scope}"`);
  if (error) parts.push(`error="${error}"`);
  return new OciError('UNAUTHORIZED', 'authentication required', {
    headers: { 'WWW-Authenticate': `Bearer ${parts.join(',')}` },
    detail: scope ? { scope } : undefined,
  });
}
