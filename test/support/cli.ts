import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repositoryRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));

export { imageNodeFlags } from '../../scripts/node-flags.ts';

/**
 * The `berth` entry point tests run: the TypeScript sources (Node strips the types), or with
 * `built` the compiled dist/ that benchmarks measure (`npm run build` first).
 */
export function berthCli(built = false): string {
  return built ? join(repositoryRoot, 'dist', 'cli.js') : join(repositoryRoot, 'src', 'cli.ts');
}
