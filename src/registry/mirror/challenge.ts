/** A `WWW-Authenticate` challenge of a registry: its scheme and parameters. */
export interface Challenge {
  readonly scheme: 'bearer' | 'basic';
  readonly params: Readonly<Record<string, string>>;
}

const paramPattern = /([A-Za-z_]+)="([^"]*)"/g;

/** Parses the first Bearer or Basic challenge; undefined for any other (or none). */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const match = /^\s*(Bearer|Basic)\b(.*)$/i.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const [, key, value] of (match[2] ?? '').matchAll(paramPattern)) {
    params[(key as string).toLowerCase()] = value as string;
  }
  return { scheme: (match[1] as string).toLowerCase() as Challenge['scheme'], params };
}
