import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmod,
  cp,
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { z } from 'zod';
import { apiVersion as providerApiVersion } from './protocol.ts';

const execFileAsync = promisify(execFile);

/** The provider's name in the CredentialProviderConfig, and so the launcher's file name. */
export const providerName = 'berth-credential-provider';

/**
 * What to install. `binDir` is the kubelet's `--image-credential-provider-bin-dir` as this
 * process sees it (a hostPath mount in the DaemonSet); `configFile` the file the kubelet's
 * `--image-credential-provider-config` names.
 */
export const installOptionsSchema = z.object({
  binDir: z.string().min(1),
  configFile: z.string().min(1),
  hosts: z
    .array(z.string().regex(/^[a-z0-9.-]+(:\d{1,5})?$/i, 'expected HOST or HOST:PORT'))
    .min(1, 'at least one --host'),
  audience: z.string().min(1),
  /** `Token` (the default) keys the kubelet's cache by each pod's token; see README. */
  cacheType: z.enum(['Token', 'ServiceAccount']).default('Token'),
});

export type InstallOptions = z.input<typeof installOptionsSchema>;

export interface Installed {
  readonly launcher: string;
  /** The directory beside the launcher that holds node, its libraries and the provider. */
  readonly runtime: string;
  readonly configFile: string;
}

/** Where the provider's modules are: this file's directory (dist/ in the image, src/ in tests). */
const moduleDirectory = dirname(fileURLToPath(import.meta.url));
/** The package root: package.json (`"type": "module"`) and node_modules. */
const packageRoot = resolve(moduleDirectory, '..', '..');
const entryName = basename(fileURLToPath(import.meta.url)).endsWith('.ts') ? 'main.ts' : 'main.js';

/**
 * Installs the provider so a kubelet on the host can run it with nothing of the host but a
 * POSIX `/bin/sh` and a Linux kernel of the image's architecture: this process's node binary,
 * the shared libraries it loads and their dynamic loader (the loader runs node, so the host's
 * glibc is never used), the provider's modules and their packages, and a launcher script named
 * as the provider. A new runtime directory is written beside the old, then the launcher is
 * replaced by rename, so a pull that starts during an upgrade runs either version whole.
 * Writes the CredentialProviderConfig the same way. Returns what it wrote.
 */
export async function install(input: InstallOptions): Promise<Installed> {
  const options = installOptionsSchema.parse(input);
  const binDir = resolve(options.binDir);
  await mkdir(binDir, { recursive: true });
  const staging = join(binDir, `.${providerName}-staging-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(join(staging, 'lib'), { recursive: true });

  const node = process.execPath;
  const { loader, libraries } = await sharedObjects(node);
  await cp(node, join(staging, 'node'));
  await chmod(join(staging, 'node'), 0o755);
  for (const library of [loader, ...libraries])
    await cp(library, join(staging, 'lib', basename(library)), { dereference: true });
  await chmod(join(staging, 'lib', basename(loader)), 0o755);
  const app = join(staging, 'app');
  await cp(join(packageRoot, 'package.json'), join(app, 'package.json'));
  for (const file of await moduleClosure(join(moduleDirectory, entryName)))
    await cp(file, join(app, relative(packageRoot, file)), { dereference: true });

  // The runtime's name is its content's: the same image installs to the same directory.
  const digest = await treeDigest(staging);
  const runtimeName = `.${providerName}-${digest.slice(0, 16)}`;
  const runtime = join(binDir, runtimeName);
  // Same content already in place (the pod restarted): the launcher may be running it now.
  if (await exists(runtime)) await rm(staging, { recursive: true, force: true });
  else await rename(staging, runtime);

  const entry = relative(packageRoot, join(moduleDirectory, entryName));
  const launcher = join(binDir, providerName);
  await writeAtomically(launcher, launcherScript(runtimeName, basename(loader), entry), 0o755);
  // Older runtimes: no launcher names them any more.
  for (const name of await readdir(binDir)) {
    if (name.startsWith(`.${providerName}-`) && name !== runtimeName)
      await rm(join(binDir, name), { recursive: true, force: true });
  }
  const configFile = resolve(options.configFile);
  await mkdir(dirname(configFile), { recursive: true });
  await writeAtomically(configFile, credentialProviderConfig(options), 0o644);
  return { launcher, runtime, configFile };
}

/**
 * The launcher the kubelet execs. `${0%/*}` is the directory the kubelet ran it from (its
 * `--image-credential-provider-bin-dir`), so the install is the same wherever the host mounts it.
 */
function launcherScript(runtimeName: string, loader: string, entry: string): string {
  return `#!/bin/sh
# Installed by Berth's credential-provider DaemonSet; rewritten on every install.
d="\${0%/*}/${runtimeName}"
exec "$d/lib/${loader}" --library-path "$d/lib" "$d/node" "$d/app/${entry}" "$@"
`;
}

/** kubelet.config.k8s.io/v1 CredentialProviderConfig with Berth's provider only. */
export function credentialProviderConfig(input: InstallOptions): string {
  const options = installOptionsSchema.parse(input);
  const hosts = options.hosts.map((host) => host.toLowerCase());
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1',
    kind: 'CredentialProviderConfig',
    providers: [
      {
        name: providerName,
        matchImages: hosts,
        // The provider always answers a duration (at most the token's life); this is unused.
        defaultCacheDuration: '0s',
        apiVersion: providerApiVersion,
        args: hosts.flatMap((host) => ['--host', host]),
        tokenAttributes: {
          serviceAccountTokenAudience: options.audience,
          cacheType: options.cacheType,
          requireServiceAccount: true,
        },
      },
    ],
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function writeAtomically(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, text, { mode });
  await chmod(temporary, mode);
  await rename(temporary, path);
}

/** The ELF program interpreter (PT_INTERP) of a 64-bit little-endian executable. */
async function interpreterOf(executable: string): Promise<string> {
  const file = await open(executable, 'r');
  try {
    const header = Buffer.alloc(64);
    await file.read(header, 0, 64, 0);
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1)
      throw new Error(`${executable} is not a 64-bit little-endian ELF executable`);
    const phoff = Number(header.readBigUInt64LE(0x20));
    const phentsize = header.readUInt16LE(0x36);
    const phnum = header.readUInt16LE(0x38);
    const table = Buffer.alloc(phentsize * phnum);
    await file.read(table, 0, table.length, phoff);
    for (let index = 0; index < phnum; index++) {
      const entry = index * phentsize;
      if (table.readUInt32LE(entry) !== 3) continue; // PT_INTERP
      const offset = Number(table.readBigUInt64LE(entry + 8));
      const size = Number(table.readBigUInt64LE(entry + 32));
      const path = Buffer.alloc(size);
      await file.read(path, 0, size, offset);
      return path.toString('utf8').replace(/\0+$/, '');
    }
    throw new Error(`${executable} is statically linked: no loader to bundle`);
  } finally {
    await file.close();
  }
}

/** The loader and the shared libraries it loads for `executable`, as `ld.so --list` says. */
async function sharedObjects(executable: string): Promise<{ loader: string; libraries: string[] }> {
  const loader = await interpreterOf(executable);
  const { stdout } = await execFileAsync(loader, ['--list', executable]);
  const libraries: string[] = [];
  for (const line of stdout.split('\n')) {
    if (line.includes('not found')) throw new Error(`${executable}: ${line.trim()}`);
    // "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)"; the loader's own line has no "=>".
    const path = /=> (\/\S+) \(0x[0-9a-f]+\)$/.exec(line.trim())?.[1];
    if (path !== undefined) libraries.push(path);
  }
  return { loader, libraries };
}

const staticImport = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]/g;
const sideEffectImport = /(?:^|\n)\s*import\s+['"]([^'"]+)['"]/g;

/**
 * Every file `entry` loads: its relative imports, followed, and the whole directory of each
 * package it imports (only zod today). Type-only imports are followed too; they cost a file.
 */
async function moduleClosure(entry: string): Promise<string[]> {
  const files = new Set<string>();
  const packages = new Set<string>();
  const pending = [entry];
  while (pending.length > 0) {
    const file = pending.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    const source = await readFile(file, 'utf8');
    for (const pattern of [staticImport, sideEffectImport]) {
      for (const match of source.matchAll(pattern)) {
        const specifier = match[1] as string;
        if (specifier.startsWith('node:')) continue;
        if (specifier.startsWith('.')) pending.push(resolve(dirname(file), specifier));
        else
          packages.add(
            specifier.startsWith('@')
              ? specifier.split('/').slice(0, 2).join('/')
              : (specifier.split('/')[0] as string),
          );
      }
    }
  }
  const packageFiles: string[] = [];
  for (const name of packages) {
    const directory = join(packageRoot, 'node_modules', name);
    for (const item of await readdir(directory, { recursive: true, withFileTypes: true }))
      if (item.isFile()) packageFiles.push(join(item.parentPath, item.name));
  }
  return [...files, ...packageFiles];
}

/** A digest of every file's relative path and contents under `root`, in sorted order. */
async function treeDigest(root: string): Promise<string> {
  const hash = createHash('sha256');
  const entries = (await readdir(root, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
  for (const path of entries) {
    const name = relative(root, path);
    hash.update(`${name}\0`);
    // node is over 100 MB and the installer's container small: its version and size name it.
    if (name === 'node') hash.update(`${process.version} ${(await stat(path)).size}\0`);
    else hash.update(await readFile(path));
  }
  return hash.digest('hex');
}
