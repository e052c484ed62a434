import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { renderCrdFiles, renderCrds } from './crds.ts';

/** Every node of a structural schema has a type (KEP-2335); returns the paths that do not. */
function untyped(node: Record<string, unknown>, path: string): string[] {
  const problems: string[] = [];
  if (typeof node.type !== 'string') problems.push(path);
  for (const [name, child] of Object.entries(
    (node.properties ?? {}) as Record<string, Record<string, unknown>>,
  )) {
    problems.push(...untyped(child, `${path}.${name}`));
  }
  if (node.items && typeof node.items === 'object')
    problems.push(...untyped(node.items as Record<string, unknown>, `${path}[]`));
  if (node.additionalProperties && typeof node.additionalProperties === 'object') {
    problems.push(...untyped(node.additionalProperties as Record<string, unknown>, `${path}{}`));
  }
  return problems;
}

function descriptionsMissing(node: Record<string, unknown>, path: string): string[] {
  const missing: string[] = [];
  for (const [name, child] of Object.entries(
    (node.properties ?? {}) as Record<string, Record<string, unknown>>,
  )) {
    if (!child.description && !['apiVersion', 'kind', 'metadata'].includes(name))
      missing.push(`${path}.${name}`);
    missing.push(...descriptionsMissing(child, `${path}.${name}`));
    if (child.items && typeof child.items === 'object')
      missing.push(
        ...descriptionsMissing(child.items as Record<string, unknown>, `${path}.${name}[]`),
      );
  }
  return missing;
}

describe('CRDs generated from the zod schemas', () => {
  it('match the files in crds/ (run `npm run crds` after changing src/operator/api)', async () => {
    for (const { file, yaml } of renderCrdFiles()) {
      const committed = await readFile(
        fileURLToPath(new URL(`../../../crds/${file}`, import.meta.url)),
        'utf8',
      );
      expect({ file, drifted: committed !== yaml }).toEqual({ file, drifted: false });
    }
  });

  it('are structural and describe every field, so kubectl explain teaches the API', () => {
    for (const crd of renderCrds()) {
      const schema = (
        crd.spec as { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] }
      ).versions[0]?.schema.openAPIV3Schema as Record<string, unknown>;
      const text = JSON.stringify(schema);
      expect(text).not.toContain('"additionalProperties":false');
      expect(text).not.toContain('$schema');
      expect(text).not.toContain('"anyOf"');
      expect(untyped(schema, 'root')).toEqual([]);
      expect(descriptionsMissing(schema, 'root')).toEqual([]);
    }
  });

  it('carry the CEL rules: one storage kind, replicas above 1 only on S3, bounded durations, tokens shorter than credentials', () => {
    const text = JSON.stringify(renderCrds());
    expect(text).toContain('"rule":"!has(self.filesystem) || !has(self.s3)"');
    expect(text).toContain(
      '"rule":"!has(self.replicas) || self.replicas <= 1 || (has(self.storage) && has(self.storage.s3))"',
    );
    expect(text).toContain(
      "duration(self) >= duration('60s') && duration(self) <= duration('8760h')",
    );
    expect(text).toContain(
      "duration(self) >= duration('30s') && duration(self) <= duration('24h')",
    );
    expect(text).toContain('duration(self.tokenTTL) < duration(self.credentialLifetime)');
  });
});
