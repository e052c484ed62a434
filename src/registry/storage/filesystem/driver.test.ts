import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorageUnavailableError } from '../driver.ts';
import { runDriverSuite } from '../testsuite.ts';
import { FilesystemDriver, temporaryDirectory } from './driver.ts';

runDriverSuite('filesystem', async () => {
  const root = await mkdtemp(join(tmpdir(), 'berth-driver-'));
  return {
    driver: new FilesystemDriver(root),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

describe('filesystem writes', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'berth-writes-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('leaves no temporary file, whether a write succeeds, loses a create or fails', async () => {
    const driver = new FilesystemDriver(root);
    await driver.putContent('/a/link', 'one');
    await driver.createContent('/b/link', 'two');
    await driver.createContent('/b/link', 'three');
    // A directory where the file should go: the rename fails after the temporary file is written.
    await mkdir(join(root, 'c', 'link', 'inside'), { recursive: true });
    await expect(driver.putContent('/c/link', 'four')).rejects.toThrow(/EISDIR|ENOTEMPTY|EEXIST/);
    expect(await readdir(join(root, temporaryDirectory))).toEqual([]);
  });
});

// Refused permissions need a process that is not root: test/integration/operations.test.ts;
// full and read-only storage need a mount: test/integration/storage-failures.test.ts.
describe('filesystem storage probe', () => {
  let parent: string;
  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), 'berth-probe-'));
  });
  afterEach(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it('leaves nothing behind', async () => {
    await new FilesystemDriver(parent).probe();
    expect(await readdir(join(parent, temporaryDirectory))).toEqual([]);
  });

  it('names the storage, the identity and the cause when it fails', async () => {
    // A root below a regular file can never be created.
    await writeFile(join(parent, 'file'), '');
    const root = join(parent, 'file', 'storage');
    const failure = await new FilesystemDriver(root).probe().catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StorageUnavailableError);
    expect(failure).toMatchObject({
      reason: 'StorageProbeFailed',
      message: `storage ${root} failed a write probe as uid ${process.getuid?.()} (gid ${process.getgid?.()}): ENOTDIR: not a directory, mkdir '${root}/_berth/tmp'`,
    });
  });
});
