import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { repositoryRoot } from '../cli.ts';
import { run } from '../processes.ts';
import type { Cluster } from './cluster.ts';
import { busyboxEntrypoint } from './test-images.ts';

/** What `npm run image` builds from: when none is newer than the archive, the archive is current. */
const imageInputs = ['src', 'scripts', 'package.json', 'package-lock.json', 'tsconfig.build.json'];

async function newestChange(path: string): Promise<number> {
  const info = await stat(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const entry of await readdir(path))
    newest = Math.max(newest, await newestChange(join(path, entry)));
  return newest;
}

/**
 * Berth's image as users build it without Docker (`npm run image`), built once for every cluster
 * test file of a run: it is rebuilt only when a source is newer than the archive.
 */
export async function berthImageArchive(): Promise<{ file: string; name: string }> {
  const { version } = JSON.parse(await readFile(join(repositoryRoot, 'package.json'), 'utf8')) as {
    version: string;
  };
  const file = join(repositoryRoot, 'dist', 'image', `berth-${version}.oci.tar`);
  const built = await stat(file).then(
    (info) => info.mtimeMs,
    () => 0,
  );
  let newest = 0;
  for (const input of imageInputs)
    newest = Math.max(newest, await newestChange(join(repositoryRoot, input)));
  if (built <= newest)
    await run('npm', ['run', '-s', 'image'], { cwd: repositoryRoot, timeoutMs: 600_000 });
  return { file, name: `docker.io/library/berth:${version}` };
}

/**
 * Loads Berth's image into the node's containerd as a preloaded image, under its own name
 * (`berth:<version>`, what the chart's defaults name) and `alias` if given (what an overlay's
 * `images:` sets). Returns the image's own name.
 */
export async function importBerthImage(cluster: Cluster, alias?: string): Promise<string> {
  const { file, name } = await berthImageArchive();
  await cluster.importImage(file);
  if (alias)
    await run('ctr', [
      '--address',
      join(cluster.root, 'containerd', 'containerd.sock'),
      '--namespace',
      'k8s.io',
      'images',
      'tag',
      name,
      alias,
    ]);
  return name;
}

/**
 * A restricted pod spec (non-root, no privilege escalation, RuntimeDefault seccomp) running
 * `image` with the test images' busybox entrypoint and no imagePullSecrets: whatever lets the
 * kubelet pull comes from the ServiceAccount or the node.
 */
export function restrictedPodSpec(image: string, pullPolicy: 'Always' | 'IfNotPresent' = 'Always') {
  return {
    terminationGracePeriodSeconds: 1,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: 65532,
      seccompProfile: { type: 'RuntimeDefault' },
    },
    containers: [
      {
        name: 'web',
        image,
        imagePullPolicy: pullPolicy,
        command: busyboxEntrypoint,
        securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
      },
    ],
  };
}
