import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../observability/logger.ts';
import { BlobCache } from './blob-cache.ts';

const logger = createLogger('silent', 'test');

function blob(fill: number, size: number): { digest: string; bytes: Buffer } {
  const bytes = Buffer.alloc(size, fill);
  return { digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, bytes };
}

describe('BlobCache', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'berth-cache-'));
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  const put = (cache: BlobCache, item: { digest: string; bytes: Buffer }, verified = true) =>
    cache.fetchOnce(item.digest, async (writer) => {
      await writer.write(item.bytes);
      return verified;
    });

  it('evicts the least recently used blobs beyond its size', async () => {
    const evicted: string[] = [];
    const cache = new BlobCache(directory, 250, logger, {
      evicted: (digest) => evicted.push(digest),
    });
    await cache.open();
    const [a, b, c] = [blob(1, 100), blob(2, 100), blob(3, 100)];
    expect(await put(cache, a)).toBe(true);
    expect(await put(cache, b)).toBe(true);
    expect(cache.lookup(a.digest)).toBeDefined(); // a is now more recent than b
    expect(await put(cache, c)).toBe(true);
    expect(evicted).toEqual([b.digest]);
    expect(cache.lookup(b.digest)).toBeUndefined();
    expect(cache.size).toBe(200);
    expect((await readdir(join(directory, 'sha256'))).length).toBe(2);
  });

  it('keeps nothing of a fill that was not verified', async () => {
    const cache = new BlobCache(directory, 1000, logger);
    await cache.open();
    const a = blob(1, 100);
    expect(await put(cache, a, false)).toBe(false);
    expect(cache.lookup(a.digest)).toBeUndefined();
    expect(await readdir(join(directory, 'sha256'))).toEqual([]);
    expect(await readdir(join(directory, 'tmp'))).toEqual([]);
  });

  it('shares one fetch between concurrent misses', async () => {
    const cache = new BlobCache(directory, 1000, logger);
    await cache.open();
    const a = blob(1, 100);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const first = cache.fetchOnce(a.digest, async (writer) => {
      await gate;
      await writer.write(a.bytes);
      return true;
    });
    expect(cache.flight(a.digest)).toBe(first);
    release();
    expect(await cache.flight(a.digest)).toBe(true);
    expect(cache.flight(a.digest)).toBeUndefined();
    expect(cache.lookup(a.digest)?.size).toBe(100);
  });

  it('indexes what an earlier process left, and clears its temp files', async () => {
    const a = blob(1, 100);
    await mkdir(join(directory, 'sha256'), { recursive: true });
    await mkdir(join(directory, 'tmp'), { recursive: true });
    await writeFile(join(directory, 'sha256', a.digest.slice(7)), a.bytes);
    await writeFile(join(directory, 'tmp', 'half-written'), 'x');
    const cache = new BlobCache(directory, 1000, logger);
    await cache.open();
    expect(cache.lookup(a.digest)?.size).toBe(100);
    expect(await readdir(join(directory, 'tmp'))).toEqual([]);
  });
  it('holds a writer past its queue only until the queue is taken up, and keeps every byte', async () => {
    const cache = new BlobCache(directory, 64 << 20, logger);
    await cache.open();
    const chunks = Array.from({ length: 24 }, (_, index) => Buffer.alloc(1 << 20, index));
    const whole = Buffer.concat(chunks);
    const item = { digest: `sha256:${createHash('sha256').update(whole).digest('hex')}` };
    let waits = 0;
    const cached = await cache.fetchOnce(item.digest, async (writer) => {
      for (const chunk of chunks) {
        const wait = writer.write(chunk);
        if (wait) {
          waits += 1;
          await wait;
        }
      }
      return true;
    });
    expect(cached).toBe(true);
    expect(waits).toBeGreaterThan(0);
    const entry = cache.lookup(item.digest);
    expect((await readFile(entry?.path as string)).equals(whole)).toBe(true);
  });
});
