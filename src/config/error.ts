/** A configuration, flag or file a person must fix: the CLI prints its message alone and exits 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
