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

    it('stores, reads and lists zero-byte files', async () => {
      await driver.putContent('/empty/put', '');
      expect((await driver.getContent('/empty/put')).length).toBe(0);
      expect((await readAll('/empty/put')).length).toBe(0);
      expect((await readAll('/empty/put', { offset: 0 })).length).toBe(0);
      const writer = await driver.writer('/empty/written');
      await writer.commit();
      await writer.close();
      expect(await driver.stat('/empty/written')).toMatchObject({ size: 0, isDirectory: false });
      expect((await driver.list('/empty')).sort()).toEqual(['put', 'written']);
    });

    it('writes a large file across many writers, as chunks reaching different replicas do', async () => {
      // Chunks below, at and above S3's 5 MiB part size, each through a fresh writer.
      const chunks = [1, 3 * 1024 * 1024, 6 * 1024 * 1024 + 7, 1024, 5 * 1024 * 1024, 333].map(
        (length) => randomBytes(length),
      );
      let expected = 0;
      for (const chunk of chunks) {
        const writer = await driver.writer('/large/data');
        expect(writer.size).toBe(expected);
        // Written in pieces, as a request body arrives.
        for (let offset = 0; offset < chunk.length; offset += 256 * 1024) {
          await writer.write(chunk.subarray(offset, offset + 256 * 1024));
        }
        await writer.flush();
        expected += chunk.length;
        expect(writer.size).toBe(expected);
        await writer.close();
        expect((await driver.stat('/large/data'))?.size).toBe(expected);
      }
      const writer = await driver.writer('/large/data');
      await writer.commit();
      await writer.close();
      const all = Buffer.concat(chunks);
      expect((await driver.stat('/large/data'))?.size).toBe(all.length);
      expect((await readAll('/large/data')).equals(all)).toBe(true);
      expect(
        (await readAll('/large/data', { offset: 4_000_000, end: 11_000_000 })).equals(
          all.subarray(4_000_000, 11_000_001),
        ),
      ).toBe(true);

      await driver.move('/large/data', '/large/moved');
      expect(await driver.stat('/large/data')).toBeUndefined();
      expect((await readAll('/large/moved')).equals(all)).toBe(true);
    });

    it('cuts back a chunk that failed after crossing a part boundary', async () => {
      const first = randomBytes(2 * 1024 * 1024);
      const writer = await driver.writer('/cut/data');
      await writer.write(first);
      await writer.flush();
      // A long chunk that fails part way: several parts' worth, never acknowledged.
      await writer.write(randomBytes(12 * 1024 * 1024));
      await writer.truncate(first.length);
      expect(writer.size).toBe(first.length);
      const last = randomBytes(100);
      await writer.write(last);
      await writer.commit();
      await writer.close();
      expect((await driver.getContent('/cut/data')).equals(Buffer.concat([first, last]))).toBe(
        true,
      );
    });

    it('keeps concurrent writers to different files apart', async () => {
      const contents = Array.from({ length: 6 }, (_, index) =>
        randomBytes(index * 1024 * 1024 + index),
      );
      await Promise.all(
        contents.map(async (content, index) => {
          const writer = await driver.writer(`/concurrent/${index}/data`);
          for (let offset = 0; offset < content.length; offset += 64 * 1024) {
            await writer.write(content.subarray(offset, offset + 64 * 1024));
          }
          await writer.commit();
          await writer.close();
        }),
      );
      for (const [index, content] of contents.entries()) {
        expect((await driver.getContent(`/concurrent/${index}/data`)).equals(content)).toBe(true);
      }
    });

    it('lists more children than one page of an object store holds', async () => {
      const names = Array.from(
        { length: 1100 },
        (_, index) => `n${String(index).padStart(4, '0')}`,
      );
      for (let start = 0; start < names.length; start += 50) {
        await Promise.all(
          names.slice(start, start + 50).map((name) => driver.putContent(`/many/${name}`, name)),
        );
      }
      await driver.putContent('/many/dir/nested', 'x');
      expect((await driver.list('/many')).sort()).toEqual([...names, 'dir'].sort());
      await driver.delete('/many');
      expect(await driver.stat('/many')).toBeUndefined();
      await expect(driver.list('/many')).rejects.toBeInstanceOf(PathNotFoundError);
    });

    it('deletes a tree without touching a sibling whose name it prefixes', async () => {
      await driver.putContent('/s/a/b/c', '1');
      await driver.putContent('/s/a/bc', '2');
      await driver.putContent('/s/a/bcd/e', '3');
      await driver.putContent('/s/a/b.x', '4');
      await driver.delete('/s/a/b');
      expect(await driver.stat('/s/a/b')).toBeUndefined();
      expect(await driver.stat('/s/a/b/c')).toBeUndefined();
      expect((await driver.getContent('/s/a/bc')).toString()).toBe('2');
      expect((await driver.getContent('/s/a/bcd/e')).toString()).toBe('3');
      expect((await driver.getContent('/s/a/b.x')).toString()).toBe('4');
      await driver.delete('/s/a/bc');
      expect((await driver.getContent('/s/a/bcd/e')).toString()).toBe('3');
      expect((await driver.list('/s/a')).sort()).toEqual(['b.x', 'bcd']);
    });

    it('removes an unfinished writer with its directory', async () => {
      const writer = await driver.writer('/abandoned/x/data');
      await writer.write(randomBytes(6 * 1024 * 1024));
      await writer.flush();
      await writer.close();
      await driver.putContent('/abandoned/x/startedat', 'now');
      await driver.delete('/abandoned/x');
      expect(await driver.stat('/abandoned/x/data')).toBeUndefined();
      expect(await driver.stat('/abandoned/x')).toBeUndefined();
      const fresh = await driver.writer('/abandoned/x/data');
      expect(fresh.size).toBe(0);
      await fresh.close();
    });

    it('answers missing paths below files and directories alike', async () => {
      await driver.putContent('/present/file', 'x');
      expect(await driver.stat('/present/fil')).toBeUndefined();
      expect(await driver.stat('/present/file/below')).toBeUndefined();
      await expect(driver.getContent('/present/file/below')).rejects.toBeInstanceOf(
        PathNotFoundError,
      );
      await expect(driver.getContent('/present')).rejects.toThrow();
      await expect(driver.move('/present/none', '/present/other')).rejects.toBeInstanceOf(
        PathNotFoundError,
      );
      expect((await driver.getContent('/present/file')).toString()).toBe('x');
    });

    it('deletes files and whole trees', async () => {
      await driver.putContent('/tree/a/b', '1');
      await driver.putContent('/tree/c', '2');
      await driver.delete('/tree');
      expect(await driver.stat('/tree')).toBeUndefined();
    });
  });
}
