import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type CryptoKey,
  type JWK,
} from 'jose';
import { z } from 'zod';

/**
 * The registry's ES256 signing keys, each named by its JWK thumbprint (`kid`). The newest signs;
 * a retired key still verifies until everything it signed has expired (`keepRetiredFor`, the
 * longest lifetime of anything signed), then it is dropped. Kept in one JSON file, mode 0600.
 */
const storedKeySchema = z.object({
  kid: z.string(),
  createdAt: z.string(),
  retiredAt: z.string().optional(),
  privateJwk: z.record(z.string(), z.unknown()),
});
const keyFileSchema = z.object({ keys: z.array(storedKeySchema) });
type StoredKey = z.infer<typeof storedKeySchema>;

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly createdAt: Date;
  readonly retiredAt: Date | undefined;
}

export interface KeyRingOptions {
  /** A new key takes over once the active one is this old. */
  readonly rotateAfterMillis: number;
  /** How long a retired key keeps verifying. */
  readonly keepRetiredForMillis: number;
}

export class KeyRing {
  private keys: SigningKey[];
  /** Undefined for a ring read from a Secret: it signs and verifies, and never rotates. */
  private readonly file: string | undefined;
  private readonly options: KeyRingOptions;

  private constructor(file: string | undefined, keys: SigningKey[], options: KeyRingOptions) {
    this.file = file;
    this.keys = keys;
    this.options = options;
  }

  /** Loads the key file, creating it with a fresh key when absent, and rotates if due. */
  static async open(file: string, options: KeyRingOptions): Promise<KeyRing> {
    let stored: StoredKey[] = [];
    try {
      stored = keyFileSchema.parse(JSON.parse(await readFile(file, 'utf8'))).keys;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new Error(`signing key file ${file} is unreadable: ${(error as Error).message}`);
      }
    }
    const keys = await Promise.all(stored.map(importStored));
    const ring = new KeyRing(file, keys, options);
    await ring.rotateIfDue(new Date());
    return ring;
  }

  /**
   * A ring from a key file's content (the operator reads it from the Registry's keys Secret),
   * to sign namespace credentials the registry will verify. It never rotates or writes.
   */
  static async fromContent(content: string): Promise<KeyRing> {
    const stored = keyFileSchema.parse(JSON.parse(content)).keys;
    if (stored.length === 0) throw new Error('the key file holds no key');
    return new KeyRing(undefined, await Promise.all(stored.map(importStored)), {
      rotateAfterMillis: Number.POSITIVE_INFINITY,
      keepRetiredForMillis: Number.POSITIVE_INFINITY,
    });
  }

  /** The key that signs now. */
  get active(): SigningKey {
    return this.keys[this.keys.length - 1] as SigningKey;
  }

  /** The public key for a `kid`, if it may still verify. */
  verificationKey(kid: string | undefined): CryptoKey | undefined {
    return this.keys.find((key) => key.kid === kid)?.publicKey;
  }

  get kids(): string[] {
    return this.keys.map((key) => key.kid);
  }

  /** Adds a new active key when the current one is old enough, and drops expired retired keys. */
  async rotateIfDue(now: Date): Promise<boolean> {
    const active = this.keys[this.keys.length - 1];
    const due =
      !active || now.getTime() - active.createdAt.getTime() >= this.options.rotateAfterMillis;
    const kept = this.keys.filter(
      (key) =>
        !key.retiredAt ||
        now.getTime() - key.retiredAt.getTime() < this.options.keepRetiredForMillis,
    );
    const dropped = kept.length !== this.keys.length;
    if (!due && !dropped) return false;
    this.keys = kept;
    if (due) await this.rotate(now);
    else await this.save();
    return true;
  }

  /** Retires the active key (it keeps verifying) and makes a new one. */
  async rotate(now: Date = new Date()): Promise<void> {
    this.keys = this.keys.map((key) => (key.retiredAt ? key : { ...key, retiredAt: now }));
    this.keys.push(await createKey(now));
    await this.save();
  }

  private async save(): Promise<void> {
    if (this.file === undefined) throw new Error('this key ring is read-only');
    const stored: StoredKey[] = await Promise.all(
      this.keys.map(async (key) => ({
        kid: key.kid,
        createdAt: key.createdAt.toISOString(),
        ...(key.retiredAt ? { retiredAt: key.retiredAt.toISOString() } : {}),
        privateJwk: (await exportJWK(key.privateKey)) as Record<string, unknown>,
      })),
    );
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const temporary = `${this.file}.${randomUUID()}.tmp`;
    await writeFile(temporary, JSON.stringify({ keys: stored }, null, 2), { mode: 0o600 });
    await chmod(temporary, 0o600);
    await rename(temporary, this.file);
  }
}

/** The content of a new key file with one fresh key, for an operator to put in a Secret. */
export async function generateKeyFile(now: Date = new Date()): Promise<string> {
  const key = await createKey(now);
  return JSON.stringify({
    keys: [
      { kid: key.kid, createdAt: now.toISOString(), privateJwk: await exportJWK(key.privateKey) },
    ],
  });
}

async function createKey(now: Date): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const kid = await calculateJwkThumbprint(await exportJWK(publicKey));
  return { kid, privateKey, publicKey, createdAt: now, retiredAt: undefined };
}

async function importStored(stored: StoredKey): Promise<SigningKey> {
  const privateJwk = stored.privateJwk as JWK;
  const publicJwk: JWK = {
    kty: privateJwk.kty,
    crv: privateJwk.crv,
    x: privateJwk.x,
    y: privateJwk.y,
  };
  return {
    kid: stored.kid,
    privateKey: (await importJWK(privateJwk, 'ES256', { extractable: true })) as CryptoKey,
    publicKey: (await importJWK(publicJwk, 'ES256')) as CryptoKey,
    createdAt: new Date(stored.createdAt),
    retiredAt: stored.retiredAt ? new Date(stored.retiredAt) : undefined,
  };
}
