import { z } from 'zod';
import { stringify } from 'yaml';
import { registrySpecSchema, registryStatusSchema } from './registry.ts';
import { repositorySpecSchema, repositoryStatusSchema } from './repository.ts';

export const group = 'berth.dev';
export const version = 'v1alpha1';

type JsonSchema = Record<string, unknown>;

/**
 * zod's JSON Schema, made structural for Kubernetes (KEP-2335): no `$schema`, no
 * `additionalProperties: false` (the API server prunes unknown fields instead), no
 * `propertyNames`, no JavaScript-sized integer bounds.
 */
export function structural(schema: z.ZodType): JsonSchema {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'throw' }) as JsonSchema;
  delete json.$schema;
  return clean(json) as JsonSchema;
}

function clean(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(clean);
  if (!node || typeof node !== 'object') return node;
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'propertyNames') continue;
    if (key === 'additionalProperties' && value === false) continue;
    if (
      (key === 'maximum' && value === Number.MAX_SAFE_INTEGER) ||
      (key === 'minimum' && value === Number.MIN_SAFE_INTEGER)
    )
      continue;
    result[key] = clean(value);
  }
  return result;
}

interface Kind {
  readonly kind: string;
  readonly plural: string;
  readonly singular: string;
  readonly shortNames: string[];
  readonly description: string;
  readonly spec: z.ZodType;
  readonly status: z.ZodType;
  readonly columns: Column[];
}

interface Column {
  name: string;
  type: string;
  jsonPath: string;
  description: string;
  /** 1: shown only by `kubectl get -o wide`. */
  priority?: number;
}

const readyColumn = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
  description: 'Whether the resource is ready.',
};
/** Why it is (not) ready, so that `kubectl get` answers the first question without describe. */
const reasonColumn = {
  name: 'Reason',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
  description: 'The reason of the Ready condition.',
};
const messageColumn = {
  name: 'Message',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].message',
  description: 'The message of the Ready condition.',
  priority: 1,
};
const ageColumn = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
  description: 'Age.',
};

const kinds: Kind[] = [
  {
    kind: 'Registry',
    plural: 'registries',
    singular: 'registry',
    shortNames: ['reg'],
    description:
      'A private container registry that Berth runs in the cluster (OCI Distribution v1.1 with token auth).',
    spec: registrySpecSchema,
    status: registryStatusSchema,
    columns: [
      readyColumn,
      reasonColumn,
      {
        name: 'Endpoint',
        type: 'string',
        jsonPath: '.status.endpoint',
        description: 'Where pods pull from: the node endpoint, else the cluster endpoint.',
      },
      {
        name: 'Replicas',
        type: 'string',
        jsonPath: '.status.replicas',
        description: 'Ready registry pods of those wanted (ready/desired).',
      },
      ageColumn,
      messageColumn,
    ],
  },
  {
    kind: 'Repository',
    plural: 'repositories',
    singular: 'repository',
    shortNames: ['repo'],
    description:
      'A repository path in a Registry, with who may pull and push it. Berth issues pull secrets to the namespaces it allows.',
    spec: repositorySpecSchema,
    status: repositoryStatusSchema,
    columns: [
      readyColumn,
      reasonColumn,
      {
        name: 'URL',
        type: 'string',
        jsonPath: '.status.url',
        description: 'What pods put in image:.',
      },
      {
        name: 'Pull Namespaces',
        type: 'integer',
        jsonPath: '.status.pullNamespaces',
        description: 'Namespaces that may pull.',
      },
      {
        name: 'Size',
        type: 'string',
        jsonPath: '.status.usage[0].size',
        description: 'Storage used under the path, as the first Registry serving it reports.',
      },
      {
        name: 'Quota',
        type: 'string',
        jsonPath: '.spec.quota.size',
        description: 'The most the path may store.',
      },
      {
        name: 'Retention',
        type: 'integer',
        jsonPath: '.status.usage[0].retention.tags',
        description:
          'Tags the next garbage collection removes by retention (status.usage[].retention).',
        priority: 1,
      },
      ageColumn,
      messageColumn,
    ],
  },
];

/** The CustomResourceDefinitions, rendered from the zod schemas. Pure. */
export function renderCrds(): Record<string, unknown>[] {
  return kinds.map((kind) => ({
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${kind.plural}.${group}`, labels: { 'app.kubernetes.io/part-of': 'berth' } },
    spec: {
      group,
      scope: 'Namespaced',
      names: {
        kind: kind.kind,
        listKind: `${kind.kind}List`,
        plural: kind.plural,
        singular: kind.singular,
        shortNames: kind.shortNames,
        categories: ['berth'],
      },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: kind.columns,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description: kind.description,
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string', description: 'The API version of this object.' },
                kind: { type: 'string', description: 'The kind of this object.' },
                metadata: { type: 'object' },
                spec: {
                  ...structural(kind.spec),
                  description: `Desired state of the ${kind.kind}.`,
                },
                status: {
                  ...structural(kind.status),
                  description: `Observed state of the ${kind.kind}, written by Berth.`,
                },
              },
            },
          },
        },
      ],
    },
  }));
}

/** File name and YAML of each CRD, as committed under crds/. */
export function renderCrdFiles(): { file: string; yaml: string }[] {
  return renderCrds().map((crd) => ({
    file: `${(crd.metadata as { name: string }).name}.yaml`,
    yaml: `# Generated from src/operator/api by \`npm run crds\`; do not edit.\n${stringify(crd, { lineWidth: 0 })}`,
  }));
}
