import { registrySpecSchema } from './api/registry.ts';
import { computeGrants } from './grants.ts';
import type { RegistryResource } from './api/registry-resource.ts';
import type { RepositoryDocument } from '../policy/schema.ts';
import { repositorySpecSchema } from '../policy/schema.ts';

function registry(name: string, spec: Record<string, unknown> = {}): RegistryResource {
  return {
    metadata: { name, namespace: 'berth-system', uid: `uid-${name}` },
    spec: registrySpecSchema.parse(spec),
  };
}

function repository(
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
): RepositoryDocument {
  return { metadata: { namespace, name }, spec: repositorySpecSchema.parse(spec) };
}

const namespaces = new Map<string, Record<string, string>>([
  ['team-a', {}],
  ['team-b', {}],
  ['prod-1', { env: 'prod' }],
  ['prod-2', { env: 'prod' }],
  ['dev', { env: 'dev' }],
]);
const main = { name: 'main', namespace: 'berth-system' };

describe('grants', () => {
  it('give a pull Secret to the owner and every namespace a private Repository names', () => {
    const table = computeGrants({
      registries: [registry('main')],
      repositories: [
        repository('team-a', 'web', {
          registry: main,
          pull: { namespaces: ['team-b'], namespaceSelector: { matchLabels: { env: 'prod' } } },
        }),
      ],
      namespaces,
    });
    expect([...table.secrets.keys()].sort()).toEqual(['prod-1', 'prod-2', 'team-a', 'team-b']);
    expect([...(table.secrets.get('team-b') ?? [])]).toEqual(['berth-system/main']);
    expect(table.repositories.get('team-a/web')).toMatchObject({
      ready: true,
      reason: 'PullSecretsIssued',
      url: 'localhost:5000/team-a/web',
      pullNamespaces: 4,
    });
  });

  it('give no pull Secret for a Registry in mode CredentialProvider, and one in mode Both', () => {
    const repositories = [
      repository('team-a', 'web', { registry: main, pull: { namespaces: ['team-b'] } }),
    ];
    const tokens = computeGrants({
      registries: [registry('main', { pullSecrets: { mode: 'CredentialProvider' } })],
      repositories,
      namespaces,
    });
    expect(tokens.secrets.size).toBe(0);
    expect(tokens.repositories.get('team-a/web')).toMatchObject({
      ready: true,
      reason: 'ServiceAccountTokens',
      pullNamespaces: 2,
    });
    const both = computeGrants({
      registries: [registry('main', { pullSecrets: { mode: 'Both' } })],
      repositories,
      namespaces,
    });
    expect([...both.secrets.keys()].sort()).toEqual(['team-a', 'team-b']);
    expect(both.repositories.get('team-a/web')).toMatchObject({ reason: 'PullSecretsIssued' });
  });

  it('give nothing for a path another namespace owns, and say why', () => {
    const table = computeGrants({
      registries: [registry('main')],
      repositories: [
        repository('team-b', 'steal', { path: 'team-a/web', pull: { namespaces: ['dev'] } }),
      ],
      namespaces,
    });
    expect(table.secrets.size).toBe(0);
    expect(table.repositories.get('team-b/steal')).toMatchObject({
      ready: false,
      reason: 'PathNotOwned',
      pullNamespaces: 0,
    });
  });

  it('need no Secret for a Public repository unless the Registry refuses anonymous pulls', () => {
    const input = {
      repositories: [repository('team-a', 'docs', { visibility: 'Public' })],
      namespaces,
    };
    const open = computeGrants({ ...input, registries: [registry('main')] });
    expect(open.secrets.size).toBe(0);
    expect(open.repositories.get('team-a/docs')?.reason).toBe('PublicRepository');
    const closed = computeGrants({
      ...input,
      registries: [registry('main', { auth: { anonymousPull: false } })],
    });
    expect(closed.secrets.size).toBe(namespaces.size);
  });

  it('serve only tenants, and only the Registry a Repository names', () => {
    const table = computeGrants({
      registries: [
        registry('main', { tenants: { namespaceSelector: { matchLabels: { env: 'prod' } } } }),
        registry('other'),
      ],
      repositories: [
        repository('team-a', 'web', { registry: main }),
        repository('prod-1', 'api', { registry: main }),
        repository('team-b', 'lost', { registry: { name: 'gone', namespace: 'berth-system' } }),
      ],
      namespaces,
    });
    expect(table.repositories.get('team-a/web')).toMatchObject({ reason: 'NotATenant' });
    expect(table.repositories.get('prod-1/api')).toMatchObject({ reason: 'PullSecretsIssued' });
    expect(table.repositories.get('team-b/lost')).toMatchObject({ reason: 'RegistryNotFound' });
    expect([...table.secrets.keys()]).toEqual(['prod-1']);
  });

  it('forget a namespace that no longer exists', () => {
    const table = computeGrants({
      registries: [registry('main')],
      repositories: [repository('team-a', 'web', { pull: { namespaces: ['gone'] } })],
      namespaces,
    });
    expect(table.secrets.has('gone')).toBe(false);
    expect(table.repositories.get('team-a/web')?.pullNamespaces).toBe(1);
  });

  it('name every Registry that serves a Repository naming none, and count them all', () => {
    const many = Array.from({ length: 12 }, (_, index) =>
      registry(`r${String(index).padStart(2, '0')}`, { nodeAccess: { mode: 'None' } }),
    );
    const table = computeGrants({
      registries: [
        ...many,
        registry('picky', { tenants: { namespaceSelector: { matchLabels: { env: 'prod' } } } }),
      ],
      repositories: [repository('team-a', 'web', { pull: { namespaces: ['team-b'] } })],
      namespaces,
    });
    const state = table.repositories.get('team-a/web');
    expect(state).toMatchObject({
      ready: true,
      reason: 'PullSecretsIssued',
      message: '2 namespaces may pull from 12 Registries',
      url: 'berth-r00.berth-system.svc:5000/team-a/web',
    });
    // Bounded: the first ten by namespace/name; the one that refuses it is not listed.
    expect(state?.registries).toHaveLength(10);
    expect(state?.registries[1]).toEqual({
      namespace: 'berth-system',
      name: 'r01',
      url: 'berth-r01.berth-system.svc:5000/team-a/web',
    });
    expect(state?.registries.some((served) => served.name === 'picky')).toBe(false);
    expect(table.secrets.get('team-b')?.size).toBe(12);
  });
});
