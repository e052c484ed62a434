import { z } from 'zod';

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const sizeUnits: Record<string, number> = {
  '': 1,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  Pi: 1024 ** 5,
  K: 1000,
  M: 1000 ** 2,
  G: 1000 ** 3,
  T: 1000 ** 4,
  P: 1000 ** 5,
};

/** Parses Go-style durations as Kubernetes users write them: `90s`, `5m`, `1h30m`, `250ms`. */
export function parseDuration(text: string): number | undefined {
  const pattern = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (const match of text.matchAll(pattern)) {
    total += Number(match[1]) * (durationUnits[match[2] as string] as number);
    matched += match[0].length;
  }
  return matched === text.length && text.length > 0 ? Math.round(total) : undefined;
}

/** Parses Kubernetes quantities for sizes: `20Gi`, `512Mi`, `1G`, `4096`. */
export function parseSize(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)([KMGTP]i?)?$/.exec(text);
  if (!match) return undefined;
  return Math.round(Number(match[1]) * (sizeUnits[match[2] ?? ''] as number));
}

/** A duration field: accepts `5m` and yields milliseconds. */
export const durationSchema = z.string().transform((text, context) => {
  const millis = parseDuration(text);
  if (millis === undefined) {
    context.addIssue({
      code: 'custom',
      message: `"${text}" is not a duration; write e.g. 30s, 5m or 24h`,
    });
    return z.NEVER;
  }
  return millis;
});

/** A size field: accepts `64Mi` or a number of bytes and yields bytes. */
export const sizeSchema = z
  .union([z.number().int().nonnegative(), z.string()])
  .transform((value, context) => {
    if (typeof value === 'number') return value;
    const bytes = parseSize(value);
    if (bytes === undefined) {
      context.addIssue({
        code: 'custom',
        message: `"${value}" is not a size; write e.g. 512Mi or 20Gi`,
      });
      return z.NEVER;
    }
    return bytes;
  });

/** A listen address, `host:port` (`:port` for every interface). */
export const listenSchema = z
  .string()
  .regex(
    /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/,
    'expected host:port, e.g. 127.0.0.1:5000 or :5000',
  )
  .transform((text) => {
    const separator = text.lastIndexOf(':');
    const host = text.slice(0, separator).replace(/^\[|\]$/g, '');
    return { host: host === '' ? '0.0.0.0' : host, port: Number(text.slice(separator + 1)) };
  })
  .refine(({ port }) => port <= 65535, 'port must be at most 65535');
