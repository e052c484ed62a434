// A one-layer OCI image archive from a directory, without a Docker engine or a registry: what
// `npm run image` builds Berth's image with, and the test cluster its sandbox and test images.
// The archive is reproducible (same tree, same digest) and streamed (no layer in memory).
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';

const run = promisify(execFile);

/** The `config` object of an OCI image configuration (the fields Berth uses). */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** Every timestamp in the image: the epoch, so that rebuilding changes nothing. */
const created = '1970-01-01T00:00:00Z';

/** GNU tar flags that make an archive depend only on names, modes, link targets and contents. */
const reproducibleTar = [
  '--sort=name',
  '--owner=0',
  '--group=0',
  '--numeric-owner',
  '--mtime=@0',
  '--format=posix',
  // The default extended-header name holds tar's pid; atime and ctime differ from run to run.
  '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
];

/**
 * A pass-through stream that hashes (sha256) and counts what flows through it; call `result`
 * once, after the stream has ended.
 */
function hashingTap(): { stream: Transform; result: () => { digest: string; size: number } } {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  return { stream, result: () => ({ digest: `sha256:${hash.digest('hex')}`, size }) };
}

/**
 * Gives every entry under `root` a mode that depends only on its kind, whatever the umask and
 * the sources: directories 0755 (sticky ones, like /tmp, 1777), files 0755 if anyone could
 * execute them, else 0644.
 */
async function normalizeModes(root: string): Promise<void> {
  await chmod(root, 0o755);
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    if (!entry.isDirectory() && !entry.isFile()) continue; // symlinks have no mode of their own
    const { mode } = await stat(path);
    if (entry.isDirectory()) await chmod(path, mode & 0o1000 ? 0o1777 : 0o755);
    else await chmod(path, mode & 0o111 ? 0o755 : 0o644);
  }
}

/**
 * Streams `root` through GNU tar, sha256 (the diff_id), gzip and sha256 again (the digest) into
 * a blob in `blobs`; the layer is never held in memory.
 */
async function writeLayer(
  root: string,
  blobs: string,
): Promise<{ layer: Descriptor; diffId: string; uncompressedSize: number }> {
  const members = (await readdir(root)).sort(); // no "./" entry: paths are relative to /
  const tar = spawn('tar', [...reproducibleTar, '-C', root, '-cf', '-', '--', ...members], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(tar, 'close') as Promise<[number | null]>;
  const uncompressed = hashingTap();
  const compressed = hashingTap();
  const partial = join(blobs, 'layer.partial');
  await Promise.all([
    pipeline(
      tar.stdout,
      uncompressed.stream,
      createGzip(),
      compressed.stream,
      createWriteStream(partial),
    ),
    exited.then(([code]) => {
      if (code !== 0) throw new Error(`tar exited with ${code}`);
    }),
  ]);
  const { digest, size } = compressed.result();
  await rename(partial, join(blobs, digest.slice('sha256:'.length)));
  const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size };
  const { digest: diffId, size: uncompressedSize } = uncompressed.result();
  return { layer, diffId, uncompressedSize };
}

/** Writes `value` as a JSON blob in `blobs`; returns its descriptor. */
async function writeJsonBlob(
  blobs: string,
  mediaType: string,
  value: unknown,
): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(value));
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(blobs, hex), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

/**
 * Writes `file`, an OCI image layout tarball holding one linux/amd64 image named `name`
 * (`registry/repository:tag`) whose single layer is `root`, owned by 0:0 with normalized modes
 * (this changes the modes under `root`). The layout is staged next to `file` and removed; `file`
 * appears only when complete.
 */
export async function writeOciArchive(options: {
  root: string;
  file: string;
  name: string;
  config: ContainerConfig;
}): Promise<{ manifest: Descriptor; layer: Descriptor; uncompressedSize: number }> {
  const { root, file, name, config } = options;
  const layout = `${file}.layout`;
  const blobs = join(layout, 'blobs', 'sha256');
  await rm(layout, { recursive: true, force: true });
  await mkdir(blobs, { recursive: true });
  try {
    await normalizeModes(root);
    const { layer, diffId, uncompressedSize } = await writeLayer(root, blobs);
    const configBlob = await writeJsonBlob(blobs, 'application/vnd.oci.image.config.v1+json', {
      created,
      architecture: 'amd64',
      os: 'linux',
      config,
      rootfs: { type: 'layers', diff_ids: [diffId] },
      history: [{ created, created_by: 'scripts/oci-image.ts', comment: name }],
    });
    const manifest = await writeJsonBlob(blobs, 'application/vnd.oci.image.manifest.v1+json', {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: configBlob,
      layers: [layer],
    });
    const tag = name.slice(name.lastIndexOf(':') + 1);
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          ...manifest,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: {
            'io.containerd.image.name': name, // what `ctr images import` names the image
            'org.opencontainers.image.ref.name': tag, // what oci-archive:FILE:TAG selects
          },
        },
      ],
    };
    await writeFile(join(layout, 'index.json'), JSON.stringify(index));
    await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

    const partial = `${file}.partial`;
    const archive = [...reproducibleTar, '--mode=u=rwX,go=rX', '-C', layout, '-cf', partial];
    await run('tar', [...archive, 'blobs', 'index.json', 'oci-layout']);
    await rename(partial, file);
    return { manifest, layer, uncompressedSize };
  } finally {
    await rm(layout, { recursive: true, force: true });
  }
}
