import { expect } from '@jest/globals';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './processes.ts';

/**
 * What an adopted registry must show: skopeo pulls `legacy/app:v1` from `berthHost` into
 * `copy` byte for byte as it pulled it from distribution into `source`, and both tags are listed.
 */
export async function expectServedAsDistributionServed(
  skopeo: string,
  berthHost: string,
  source: string,
  copy: string,
): Promise<void> {
  await run(skopeo, [
    'copy',
    '--src-tls-verify=false',
    `docker://${berthHost}/legacy/app:v1`,
    `dir:${copy}`,
  ]);
  const files = (await readdir(source)).sort();
  expect((await readdir(copy)).sort()).toEqual(files);
  for (const file of files) {
    expect({
      file,
      same: (await readFile(join(copy, file))).equals(await readFile(join(source, file))),
    }).toEqual({ file, same: true });
  }
  const tags = (await (await fetch(`http://${berthHost}/v2/legacy/app/tags/list`)).json()) as {
    tags: string[];
  };
  expect(tags.tags).toEqual(['stable', 'v1']);
}
