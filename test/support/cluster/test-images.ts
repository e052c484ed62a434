import { copyFile, mkdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { writeOciArchive } from '../../../scripts/oci-image.ts';
import { findTool } from '../tools.ts';

/**
 * Images the test cluster runs, each one static binary in one layer, built here (no public
 * registry is reachable) and imported into the node's containerd before the kubelet starts.
 */
export const testImages = {
  /** The sandbox image: containerd's `sandbox_image`. */
  pause: 'berth.test/pause:1',
  coredns: 'berth.test/coredns:1',
  /** busybox: a shell, sleep and wget; the app of the pull tests. */
  busybox: 'berth.test/busybox:1',
} as const;

/** An app that runs until it is told to stop, so pods end at once when deleted. */
export const busyboxEntrypoint = [
  '/bin/sh',
  '-c',
  'trap "exit 0" TERM; while true; do sleep 1; done',
];

function binary(name: string): string {
  const path = findTool(name);
  if (!path) throw new Error(`${name} missing: run test/tools/install.sh`);
  return path;
}

/** Builds every test image into `directory`; resolves to the OCI archives. */
export async function buildTestImages(directory: string): Promise<string[]> {
  const archives: string[] = [];
  const build = async (
    name: string,
    files: Record<string, string>,
    entrypoint: string[],
    links: Record<string, string> = {},
  ): Promise<void> => {
    const root = join(directory, `${name.replace(/[^a-z0-9]+/g, '-')}-rootfs`);
    for (const [target, source] of Object.entries(files)) {
      await mkdir(join(root, target, '..'), { recursive: true });
      await copyFile(source, join(root, target));
    }
    for (const [link, target] of Object.entries(links)) await symlink(target, join(root, link));
    const file = join(directory, `${name.replace(/[^a-z0-9]+/g, '-')}.oci.tar`);
    await writeOciArchive({
      root,
      file,
      name,
      config: { Entrypoint: entrypoint, Env: ['PATH=/bin'] },
    });
    await rm(root, { recursive: true, force: true });
    archives.push(file);
  };
  await build(testImages.pause, { pause: binary('pause') }, ['/pause']);
  await build(testImages.coredns, { coredns: binary('coredns') }, ['/coredns']);
  const applets = ['sh', 'sleep', 'wget', 'cat', 'ls', 'nc', 'id', 'touch'];
  await build(
    testImages.busybox,
    { 'bin/busybox': binary('busybox') },
    busyboxEntrypoint,
    Object.fromEntries(applets.map((applet) => [`bin/${applet}`, 'busybox'])),
  );
  return archives;
}
