import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './processes.ts';

/** Writes a tar holding one file of random bytes: a layer no registry has seen before. */
export async function randomLayerTar(
  directory: string,
  name: string,
  bytes: number,
): Promise<string> {
  const content = join(directory, `${name}-content`);
  await mkdir(content, { recursive: true });
  await writeFile(join(content, `${name}.bin`), randomBytes(bytes));
  const tar = join(directory, `${name}.tar`);
  await run('tar', ['-C', content, '-cf', tar, `${name}.bin`]);
  return tar;
}

/** sha256:<hex> of a buffer. */
export async function sha256Of(data: Buffer): Promise<string> {
  const { createHash } = await import('node:crypto');
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
