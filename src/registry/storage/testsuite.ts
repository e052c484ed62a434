import { randomBytes } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import { PathNotFoundError, type StorageDriver } from './driver.ts';

/**
 * The contract every StorageDriver must keep, as one jest suite. A driver's test file calls
 * `runDriverSuite(name, () => freshDriver())`.
 */
export function runDriverSuite(
  name: string,
  create: () => Promise<{ driver: StorageDriver; cleanup: () => Promise<void> }>,
): void {
  describe(`${name} storage driver`, () => {
    let driver: StorageDriver;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ driver, cleanup } = await create());
    });
    afterEach(async () => {
      await cleanup();
    });

    async function readAll(
      path: string,
      range?: { offset: number; end?: number },
    ): Promise<Buffer> {
      const chunks: Buffer[] = [];
      for await (const chunk of (await driver.reader(path, range)) as AsyncIterable<Buffer>)
        chunks.push(chunk);
      return Buffer.concat(chunks);
    }

    it('puts and gets content, replacing it whole', async () => {
      await driver.putContent('/a/b/c', 'first');
      await driver.putContent('/a/b/c', 'second');
      expect((await driver.getContent('/a/b/c')).toString()).toBe('second');
      const info = await driver.stat('/a/b/c');
      expect(info?.size).toBe(6);
      expect(info?.isDirectory).toBe(false);
      expect((await driver.stat('/a/b'))?.isDirectory).toBe(true);
    });

    it('creates content only where nothing is, one winner among concurrent creates', async () => {
      expect(await driver.createContent('/tags/t/current/link', 'first')).toBe(true);
      expect(await driver.createContent('/tags/t/current/link', 'second')).toBe(false);
      expect((await driver.getContent('/tags/t/current/link')).toString()).toBe('first');

      const contenders = Array.from({ length: 16 }, (_, index) => `contender ${index}`);
      const created = await Promise.all(
        contenders.map((content) => driver.createContent('/race/link', content)),
      );
      expect(created.filter(Boolean)).toHaveLength(1);
      const winner = contenders[created.indexOf(true)];
      expect((await driver.getContent('/race/link')).toString()).toBe(winner);
    });

    it('reports missing paths as PathNotFoundError or undefined', async () => {
      await expect(driver.getContent('/missing')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(driver.reader('/missing')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(driver.list('/missing')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(driver.move('/missing', '/elsewhere')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(driver.pipeTo('/missing', new PassThrough())).rejects.toBeInstanceOf(
        PathNotFoundError,
      );
      expect(await driver.stat('/missing')).toBeUndefined();
      await driver.delete('/missing');
    });

    it('refuses paths that could escape the root', async () => {
      for (const path of ['relative', '/a/../b', '/a//b', '/', '/a/./b']) {
        await expect(driver.getContent(path)).rejects.toThrow(/invalid storage path/);
      }
    });

    it('lists direct children by name', async () => {
      await driver.putContent('/dir/one', '1');
      await driver.putContent('/dir/two/nested', '2');
      expect((await driver.list('/dir')).sort()).toEqual(['one', 'two']);
    });

    it('reads ranges and pipes ranges', async () => {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      await driver.putContent('/blob', data);
      expect((await readAll('/blob')).equals(data)).toBe(true);
      expect(
        (await readAll('/blob', { offset: 100, end: 199 })).equals(data.subarray(100, 200)),
      ).toBe(true);
      const received: Buffer[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          // Copy: the driver may reuse its buffers once the callback runs.
          received.push(Buffer.from(chunk));
          setImmediate(callback);
        },
      });
      await driver.pipeTo('/blob', sink, { offset: 5, end: data.length - 1 });
      expect(Buffer.concat(received).equals(data.subarray(5))).toBe(true);
    });

    it('appends through a writer, truncates a tail and commits', async () => {
      const writer = await driver.writer('/uploads/x/data');
      const parts = [randomBytes(700_000), randomBytes(900_000), randomBytes(5)];
      for (const part of parts) await writer.write(part);
      await writer.flush();
      expect(writer.size).toBe(1_600_005);
      await writer.truncate(700_000);
      await writer.write(parts[2] as Buffer);
      await writer.commit();
      await writer.close();
      expect(
        (await driver.getContent('/uploads/x/data')).equals(
          Buffer.concat([parts[0] as Buffer, parts[2] as Buffer]),
        ),
      ).toBe(true);

      const resumed = await driver.writer('/uploads/x/data');
      expect(resumed.size).toBe(700_005);
      await resumed.close();
    });

    it('moves a file into a directory that does not exist yet, replacing a target', async () => {
      await driver.putContent('/from', 'content');
      await driver.putContent('/deep/to/target', 'old');
      await driver.move('/from', '/deep/to/target');
      expect((await driver.getContent('/deep/to/target')).toString()).toBe('content');
      expect(await driver.stat('/from')).toBeUndefined();
      await driver.putContent('/again', 'x');
      await driver.move('/again', '/new/place/file');
      expect((await driver.getContent('/new/place/file')).toString()).toBe('x');
    });

    it('passes its probe on working storage, again and again', async () => {
      await driver.probe();
      await driver.probe();
    });

    it('deletes files and whole trees', async () => {
      await driver.putContent('/tree/a/b', '1');
      await driver.putContent('/tree/c', '2');
      await driver.delete('/tree');
      expect(await driver.stat('/tree')).toBeUndefined();
    });
  });
}
