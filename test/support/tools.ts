import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

/** Where test/tools/install.sh puts Go-built tools. */
export const toolsBin = join(
  process.env.BERTH_TOOLS_DIR ?? join(homedir(), '.cache', 'berth-tools'),
  'bin',
);

/** Absolute path of a tool, from the tools directory or PATH; undefined when absent. */
export function findTool(name: string): string | undefined {
  const directories = [
    toolsBin,
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/sbin',
    '/usr/local/sbin',
  ];
  for (const directory of directories) {
    if (!directory) continue;
    const candidate = join(directory, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * `describe` when every tool is installed. When one is missing the block is skipped with a loud
 * notice, unless BERTH_REQUIRE_TOOLS=1 (CI), where a missing tool fails the run.
 */
export function describeWithTools(
  tools: readonly string[],
  title: string,
  body: (paths: Record<string, string>) => void,
): void {
  const paths: Record<string, string> = {};
  const missing: string[] = [];
  for (const tool of tools) {
    const path = findTool(tool);
    if (path) paths[tool] = path;
    else missing.push(tool);
  }
  if (missing.length === 0) {
    describe(title, () => body(paths));
    return;
  }
  if (process.env.BERTH_REQUIRE_TOOLS === '1') {
    describe(title, () => {
      it('has its tools', () => {
        throw new Error(`missing tools: ${missing.join(', ')}; run test/tools/install.sh`);
      });
    });
    return;
  }
  process.stderr.write(
    `\n*** SKIPPED "${title}": missing ${missing.join(', ')} (run test/tools/install.sh) ***\n\n`,
  );
  describe.skip(title, () => body(paths));
}
