import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDriverSuite } from '../testsuite.ts';
import { FilesystemDriver } from './driver.ts';

runDriverSuite('filesystem', async () => {
  const root = await mkdtemp(join(tmpdir(), 'berth-driver-'));
  return {
    driver: new FilesystemDriver(root),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});
