import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import { PathNotFoundError, type StorageDriver } from '../storage/driver.ts';

/** Where the collectors sharing a storage agree on who collects: outside distribution's layout. */
export const leaseDirectory = '/_berth/gc-lease';

const leaseSchema = z.object({ holder: z.string(), expiresAt: z.number() }).strict();
type LeaseRecord = z.infer<typeof leaseSchema>;

/**
 * The one-collector lock across processes that share storage. A lease is a generation file
 * `<n>` made with the driver's conditional `createContent`, holding its holder and an expiry.
 * The current lease is the highest generation. An expired (or released) lease `n` is taken
 * over by creating `n + 1`, which exactly one contender can do, so a takeover never lets two
 * collectors in. The holder renews by rewriting its own generation and gives up (`held` turns
 * false) once it sees a later generation or its own expiry pass. Expiry is wall-clock time:
 * processes sharing storage need clocks within a fraction of `ttlMillis` of each other.
 */
export class CollectorLease {
  private readonly driver: StorageDriver;
  private readonly ttlMillis: number;
  private readonly holder = `${hostname()}/${process.pid}/${randomUUID()}`;
  private generation: number | undefined;
  private expiresAt = 0;
  private renewal: NodeJS.Timeout | undefined;

  constructor(driver: StorageDriver, ttlMillis: number) {
    this.driver = driver;
    this.ttlMillis = ttlMillis;
  }

  /** Takes the lease unless another live collector holds it; true when this process holds it. */
  async acquire(): Promise<boolean> {
    const current = await this.latest();
    if (current && current.record.expiresAt > Date.now()) return false;
    const next = current ? current.generation + 1 : 0;
    const expiresAt = Date.now() + this.ttlMillis;
    const record: LeaseRecord = { holder: this.holder, expiresAt };
    if (!(await this.driver.createContent(this.path(next), JSON.stringify(record)))) return false;
    this.generation = next;
    this.expiresAt = expiresAt;
    // The generation taken over is dead: nobody reads it again.
    if (current) await this.driver.delete(this.path(current.generation));
    this.renewal = setInterval(() => void this.renew(), Math.max(10, this.ttlMillis / 3));
    this.renewal.unref();
    return true;
  }

  /** Whether this process may still remove anything: it holds a lease that has not expired. */
  async held(): Promise<boolean> {
    if (this.generation === undefined || this.expiresAt <= Date.now()) return false;
    return (await this.driver.stat(this.path(this.generation + 1))) === undefined;
  }

  /** Ends the lease at once (an expired record), so the next collector need not wait for it. */
  async release(): Promise<void> {
    clearInterval(this.renewal);
    if (this.generation === undefined) return;
    const generation = this.generation;
    this.generation = undefined;
    if (await this.stillOurs(generation)) {
      await this.driver.putContent(
        this.path(generation),
        JSON.stringify({ holder: this.holder, expiresAt: 0 }),
      );
    }
  }

  private async renew(): Promise<void> {
    const generation = this.generation;
    if (generation === undefined) return;
    try {
      if (!(await this.stillOurs(generation)) || this.expiresAt <= Date.now()) {
        this.generation = undefined;
        clearInterval(this.renewal);
        return;
      }
      const expiresAt = Date.now() + this.ttlMillis;
      await this.driver.putContent(
        this.path(generation),
        JSON.stringify({ holder: this.holder, expiresAt }),
      );
      this.expiresAt = expiresAt;
    } catch {
      // Storage refused: the lease runs out on its own and `held` says so.
    }
  }

  private async stillOurs(generation: number): Promise<boolean> {
    if (await this.driver.stat(this.path(generation + 1))) return false;
    return (await this.read(generation))?.holder === this.holder;
  }

  private async latest(): Promise<{ generation: number; record: LeaseRecord } | undefined> {
    let names: string[];
    try {
      names = await this.driver.list(leaseDirectory);
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined;
      throw error;
    }
    const generations = names.filter((name) => /^\d+$/.test(name)).map(Number);
    if (generations.length === 0) return undefined;
    const generation = Math.max(...generations);
    // A lease that cannot be read is one whose writer died mid-way: treat it as expired.
    const record = (await this.read(generation)) ?? { holder: '', expiresAt: 0 };
    return { generation, record };
  }

  private async read(generation: number): Promise<LeaseRecord | undefined> {
    try {
      const content = await this.driver.getContent(this.path(generation));
      return leaseSchema.parse(JSON.parse(content.toString('utf8')));
    } catch {
      return undefined;
    }
  }

  private path(generation: number): string {
    return `${leaseDirectory}/${generation}`;
  }
}
