// Writes crds/*.yaml from the zod schemas in src/operator/api.
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderCrdFiles } from '../src/operator/api/crds.ts';

const directory = fileURLToPath(new URL('../crds', import.meta.url));
await mkdir(directory, { recursive: true });
for (const { file, yaml } of renderCrdFiles()) {
  await writeFile(join(directory, file), yaml);
  console.log(`wrote crds/${file}`);
}
