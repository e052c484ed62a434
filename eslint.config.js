import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The layers of src/ and what each may not import (ARCHITECTURE.md, "Layers"). Imports are
 * relative, so a pattern names the directory anywhere in the path. Where two entries match a
 * file the later one decides, so an inner layer repeats what its outer layer forbids.
 */
const layers = [
  {
    files: ['src/util/**', 'src/observability/**', 'src/tls/**'],
    forbidden: ['config', 'kube', 'policy', 'registry', 'operator', 'node-proxy'],
    why: 'the foundation layers import no Berth feature',
  },
  {
    files: ['src/kube/**'],
    forbidden: ['config', 'policy', 'registry', 'operator', 'node-proxy'],
    why: 'the Kubernetes client knows nothing of what Berth stores in Kubernetes',
  },
  {
    files: ['src/policy/**', 'src/config/**'],
    forbidden: ['registry', 'operator', 'node-proxy'],
    why: 'policy and configuration are shared by the processes, so they import none of them',
  },
  {
    files: ['src/credentials/**'],
    forbidden: ['registry', 'operator', 'node-proxy'],
    why: 'the credential format is shared: the operator signs what the registry verifies',
  },
  {
    files: ['src/registry/**'],
    forbidden: ['operator', 'node-proxy'],
    why: 'the registry runs without the operator and the node proxy',
  },
  {
    files: ['src/registry/storage/**'],
    forbidden: ['operator', 'node-proxy', 'service', 'http', 'auth'],
    why: 'storage drivers only store bytes; the services above give them meaning',
  },
  {
    files: ['src/registry/service/**'],
    forbidden: ['operator', 'node-proxy', 'http', 'auth'],
    why: 'services are called by the HTTP layer, never the other way round',
  },
  {
    files: ['src/registry/auth/**'],
    forbidden: ['operator', 'node-proxy', 'http', 'service', 'storage'],
    why: 'access control decides plain requirements; the HTTP layer says what each endpoint needs',
  },
  {
    files: ['src/node-proxy/**'],
    forbidden: ['registry', 'operator', 'policy'],
    why: 'the node proxy forwards to a registry; it does not embed one',
  },
  {
    files: ['src/operator/**'],
    forbidden: ['node-proxy', 'registry'],
    why: 'the operator renders objects for the registry and signs with src/credentials; it does not serve or store',
  },
];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-console': 'error',
    },
  },
  {
    // Rules that need the types: a promise nobody awaits loses its error, and a switch over a
    // union must name every member so that a new one is handled where it matters.
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true },
      ],
    },
  },
  ...layers.map(({ files, forbidden, why }) => ({
    files,
    ignores: ['**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: forbidden.map((layer) => ({
            group: [`**/${layer}/*`],
            message: `${files.join(', ')} may not import ${layer}: ${why}.`,
          })),
        },
      ],
    },
  })),
  { files: ['test/**', 'scripts/**'], rules: { 'no-console': 'off' } },
);
