import type { StorageDriver } from '../storage/driver.ts';
import { walkRepositories } from './repositories.ts';

/**
 * The repository list for `_catalog`. Walking storage is slow for large registries, so the list
 * is kept for `ttlMillis` and dropped whenever this process creates a repository.
 */
export class CatalogService {
  private readonly driver: StorageDriver;
  private readonly ttlMillis: number;
  private cached: { names: string[]; at: number } | undefined;
  private known = new Set<string>();

  constructor(driver: StorageDriver, ttlMillis: number) {
    this.driver = driver;
    this.ttlMillis = ttlMillis;
  }

  async list(): Promise<string[]> {
    if (this.cached && Date.now() - this.cached.at < this.ttlMillis) return this.cached.names;
    const names: string[] = [];
    for await (const name of walkRepositories(this.driver)) names.push(name);
    names.sort();
    this.cached = { names, at: Date.now() };
    this.known = new Set(names);
    return names;
  }

  /** Records that a repository may have been created. */
  touched(repository: string): void {
    if (!this.known.has(repository)) this.cached = undefined;
  }
}
