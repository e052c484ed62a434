// `npm run image`: builds Berth's container image without a Docker engine or any registry, as an
// OCI image layout tarball, dist/image/berth-<version>.oci.tar, equivalent to the Dockerfile's
// runtime stage. `ctr -n k8s.io images import FILE` names it docker.io/library/berth:<version>;
// `skopeo copy oci-archive:FILE docker://HOST/berth:<version>` pushes it.
//
// One layer: the Node 24 binary of the `node` devDependency at /usr/local/bin/node with the
// shared libraries it links, copied from this host (so it must run on linux/amd64; Debian 12
// here), /app (package.json, dist, production node_modules), a minimal /etc and an empty /tmp.
// No shell, no package manager. Building twice from the same tree gives the same manifest digest:
// GNU tar writes the layer with sorted names, owner 0:0 and mtime 0 from a staging tree whose
// modes are normalized, and node:zlib's gzip writes no timestamp.
//
// Contract: run after `npm run build` (`npm run image` does both) in a repository where `npm ci`
// has run. Writes only under dist/image/; the production dependencies are cached in
// dist/image/cache/, keyed by the hash of package-lock.json.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import {
  chmod,
  copyFile,
  cp,
  mkdir,
  readFile,
  readdir,
  realpath,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { imageNodeFlags } from './node-flags.ts';
import { writeOciArchive, type ContainerConfig } from './oci-image.ts';

const run = promisify(execFile);

const repository = fileURLToPath(new URL('..', import.meta.url));
const output = join(repository, 'dist', 'image');

// ---------------------------------------------------------------------------------------------
// Berth's filesystem and configuration

/** The node binary `npm ci` installed (node_modules/.bin/node links to it); must be Node 24. */
async function nodeBinary(): Promise<string> {
  const binary = await realpath(join(repository, 'node_modules', '.bin', 'node'));
  const { stdout } = await run(binary, ['--version']);
  if (!stdout.startsWith('v24.')) throw new Error(`${binary} is Node ${stdout.trim()}, not 24`);
  return binary;
}

/** Absolute paths of the shared libraries `binary` loads, as ldd reports them, ld.so included. */
async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await run('ldd', [binary]);
  const paths: string[] = [];
  for (const line of stdout.split('\n')) {
    if (line.includes('not found')) throw new Error(`ldd ${binary}: ${line.trim()}`);
    // "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2
    // (0x...)"; linux-vdso.so.1 has no path (the kernel provides it).
    const path = /(\/\S+) \(0x[0-9a-f]+\)$/.exec(line.trim())?.[1];
    if (path !== undefined) paths.push(path);
  }
  return paths;
}

/**
 * A directory whose node_modules holds the production dependencies of package-lock.json only,
 * installed once per lock file by npm running on `node` (`npm ci` into a temporary directory,
 * renamed when complete, so an interrupted install is never reused). Other lock files' caches
 * are removed.
 */
async function productionDependencies(node: string): Promise<string> {
  const lock = await readFile(join(repository, 'package-lock.json'));
  const key = createHash('sha256').update(lock).digest('hex').slice(0, 16);
  const cache = join(output, 'cache');
  const directory = join(cache, `production-dependencies-${key}`);
  if (await exists(directory)) return directory;

  await rm(cache, { recursive: true, force: true });
  const staging = `${directory}.partial`;
  await mkdir(staging, { recursive: true });
  await copyFile(join(repository, 'package.json'), join(staging, 'package.json'));
  await writeFile(join(staging, 'package-lock.json'), lock);
  const npm = spawn('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'], {
    cwd: staging,
    stdio: ['ignore', 'inherit', 'inherit'],
    // npm's `#!/usr/bin/env node` then finds the project's Node 24, whatever the machine has.
    env: { ...process.env, PATH: `${dirname(node)}:${process.env['PATH'] ?? ''}` },
  });
  const [code] = (await once(npm, 'close')) as [number | null];
  if (code !== 0) throw new Error(`npm ci --omit=dev failed (exit ${code})`);
  await rename(staging, directory);
  return directory;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Copies a file's contents (following symlinks) to the absolute path `target` under `root`. */
async function copyInto(root: string, source: string, target = source): Promise<void> {
  await mkdir(dirname(join(root, target)), { recursive: true });
  await copyFile(source, join(root, target));
}

/** Lays out Berth's filesystem in `root`, which must not exist. */
async function stageRootfs(root: string, node: string, dependencies: string): Promise<void> {
  await copyInto(root, node, '/usr/local/bin/node');
  for (const library of await sharedLibraries(node)) await copyInto(root, library);

  const app = join(root, 'app');
  await copyInto(app, join(repository, 'package.json'), 'package.json');
  // dist/ as `npm run build` wrote it, without dist/image (where this script works).
  for (const entry of await readdir(join(repository, 'dist'))) {
    if (entry === 'image') continue;
    await cp(join(repository, 'dist', entry), join(app, 'dist', entry), { recursive: true });
  }
  await cp(join(dependencies, 'node_modules'), join(app, 'node_modules'), {
    recursive: true,
    verbatimSymlinks: true, // node_modules/.bin links stay relative
  });

  await mkdir(join(root, 'etc'));
  await writeFile(
    join(root, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n',
  );
  await writeFile(join(root, 'etc', 'group'), 'root:x:0:\nnonroot:x:65532:\n');
  await writeFile(
    join(root, 'etc', 'nsswitch.conf'),
    'passwd: files\ngroup: files\nhosts: files dns\n',
  );
  await mkdir(join(root, 'tmp'));
  await chmod(join(root, 'tmp'), 0o1777);
}

/** The Dockerfile's runtime stage, with node at /usr/local/bin/node as in the official image. */
const berthConfig: ContainerConfig = {
  User: '65532:65532',
  ExposedPorts: { '5000/tcp': {}, '8080/tcp': {} },
  Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NODE_ENV=production'],
  Entrypoint: ['/usr/local/bin/node', ...imageNodeFlags, 'dist/cli.js'],
  Cmd: ['registry', '--listen', '0.0.0.0:5000', '--storage-dir', '/var/lib/berth'],
  WorkingDir: '/app',
};

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

if (process.platform !== 'linux' || process.arch !== 'x64') {
  throw new Error(
    `the image is linux/amd64 and takes its libraries from this host, which is ${process.platform}/${process.arch}`,
  );
}
if (!(await exists(join(repository, 'dist', 'cli.js')))) {
  throw new Error('dist/cli.js is missing: run `npm run build`');
}

const { version } = JSON.parse(await readFile(join(repository, 'package.json'), 'utf8')) as {
  version: string;
};
const name = `docker.io/library/berth:${version}`;
const file = join(output, `berth-${version}.oci.tar`);
const node = await nodeBinary();
const dependencies = await productionDependencies(node);
// Per process, and the archive renamed into place when complete: two builds at once (two test
// files, or a developer beside a test) never hand out a half-written image.
const root = join(output, `rootfs-${process.pid}`);
const partial = `${file}.${process.pid}.partial`;
await rm(root, { recursive: true, force: true });
try {
  await stageRootfs(root, node, dependencies);
  const { manifest, layer, uncompressedSize } = await writeOciArchive({
    root,
    file: partial,
    name,
    config: berthConfig,
  });
  await rename(partial, file);
  console.log(`image     ${name}`);
  console.log(`manifest  ${manifest.digest} (${manifest.size} bytes)`);
  console.log(
    `layer     ${megabytes(layer.size)} gzipped, ${megabytes(uncompressedSize)} unpacked`,
  );
  console.log(`archive   ${file} (${megabytes((await stat(file)).size)})`);
} finally {
  await rm(root, { recursive: true, force: true });
  await rm(partial, { force: true });
}
