import { labelSelectorSchema } from '../policy/schema.ts';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './error.ts';
import { durationSchema, listenSchema, sizeSchema } from './units.ts';
import { serviceAccountTokensSchema } from './service-account-tokens.ts';
import { zodIssues } from '../util/zod-issues.ts';

const positiveDuration = durationSchema.refine((millis) => millis > 0, 'must be longer than zero');

/**
 * An S3-compatible bucket, laid out as CNCF distribution's s3 driver lays it out under its
 * `rootdirectory` (here `prefix`). Credentials are deliberately not settable here: they come
 * from the standard AWS environment variables or a mounted credentials file
 * (`AWS_SHARED_CREDENTIALS_FILE`), so that no secret sits in a config file or a flag.
 */
const s3StorageSchema = z
  .object({
    bucket: z.string().min(3).max(63).describe('Bucket that holds the registry data.'),
    endpoint: z
      .url({ protocol: /^https?$/ })
      .prefault('https://s3.amazonaws.com')
      .describe('S3 API base URL, e.g. https://s3.eu-west-1.amazonaws.com or http://minio:9000.'),
    region: z.string().min(1).prefault('us-east-1').describe('Region requests are signed for.'),
    forcePathStyle: z
      .boolean()
      .prefault(false)
      .describe('Address the bucket as <endpoint>/<bucket> instead of <bucket>.<endpoint>.'),
    prefix: z
      .string()
      .regex(/^[^\\]*$/, 'must not contain a backslash')
      .optional()
      .describe("Key prefix the registry's data lives under (distribution's rootdirectory)."),
  })
  .strict()
  .superRefine((s3, context) => {
    for (const part of (s3.prefix ?? '').split('/')) {
      if (part === '.' || part === '..') {
        context.addIssue({ code: 'custom', path: ['prefix'], message: 'must not hold . or ..' });
      }
    }
  });

/**
 * What stops pushes for the whole registry. A push past either is refused with STORAGE_FULL
 * (507) naming the limit; pulls, deletes and garbage collection go on.
 */
export const storageLimitsSchema = z
  .object({
    size: sizeSchema
      .refine((bytes) => bytes > 0, 'must be more than 0')
      .optional()
      .describe(
        'Most bytes of blobs (layers, configs and manifests) the registry stores, on any driver.',
      ),
    minFree: sizeSchema
      .refine((bytes) => bytes > 0, 'must be more than 0')
      .optional()
      .describe(
        'Filesystem storage only: pushes stop while the volume has less free space than this.',
      ),
  })
  .strict();

export type StorageLimits = Readonly<z.infer<typeof storageLimitsSchema>>;

/** `HH:MM-HH:MM` in UTC; a window whose end is before its start runs over midnight. */
const timeWindowPattern = /^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$/;

/**
 * Online garbage collection. The collector itself takes `gracePeriod` and `untagged` also in
 * `berth gc`; `interval` and `window` schedule it in `berth registry`, which collects only when
 * this section is present.
 */
export const gcConfigSchema = z
  .object({
    interval: positiveDuration
      .prefault('1h')
      .describe('Time from the end of one collection to the start of the next.'),
    window: z
      .string()
      .regex(timeWindowPattern, 'must be HH:MM-HH:MM (UTC), e.g. 01:00-05:00')
      .optional()
      .describe('Collect only inside this daily window (UTC); always when unset.'),
    gracePeriod: durationSchema
      .refine((millis) => millis >= 1000, 'must be at least 1s')
      .prefault('1h')
      .describe('Content written, linked or mounted more recently than this is never removed.'),
    untagged: z
      .enum(['keep', 'delete'])
      .prefault('keep')
      .describe(
        'Whether manifests no tag reaches (and that no kept index or subject needs) are removed.',
      ),
  })
  .strict();

export type GcConfig = Readonly<z.infer<typeof gcConfigSchema>>;

/**
 * A pull-through mirror: repositories under `prefix/` are served from `url` on a miss and kept
 * like pushed content. Secrets come from files only, read at each token request so they can
 * rotate. Prefixes may not nest, so a repository belongs to at most one mirror.
 */
export const mirrorConfigSchema = z
  .object({
    url: z
      .url({ protocol: /^https?$/ })
      .refine((url) => new URL(url).pathname.replace(/\/+$/, '') === '', 'must have no path')
      .describe('Upstream registry base URL, e.g. https://registry-1.docker.io.'),
    prefix: z
      .string()
      .regex(
        /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/,
        'must be repository path components, e.g. docker.io or mirror/docker.io',
      )
      .describe(
        'Path prefix the upstream is served under: <prefix>/library/nginx is library/nginx upstream.',
      ),
    credentials: z
      .object({
        usernameFile: z.string().min(1).describe('File holding the upstream username.'),
        passwordFile: z.string().min(1).describe('File holding the upstream password or token.'),
      })
      .strict()
      .optional()
      .describe('Upstream login for Basic auth and the token flow; anonymous when absent.'),
    tls: z
      .object({
        caFile: z
          .string()
          .min(1)
          .describe('PEM certificates that upstream certificates must chain to.'),
      })
      .strict()
      .optional(),
    tagTTL: durationSchema
      .prefault('5m')
      .describe('How long a tag is trusted before upstream is asked again (a HEAD).'),
  })
  .strict();

export type MirrorConfig = Readonly<z.infer<typeof mirrorConfigSchema>>;

const mirrorsSchema = z
  .array(mirrorConfigSchema)
  .superRefine((mirrors, context) => {
    mirrors.forEach((mirror, index) => {
      for (const other of mirrors.slice(0, index)) {
        const a = `${mirror.prefix}/`;
        const b = `${other.prefix}/`;
        if (a.startsWith(b) || b.startsWith(a)) {
          context.addIssue({
            code: 'custom',
            path: [index, 'prefix'],
            message: `overlaps the prefix ${other.prefix} of another mirror`,
          });
        }
      }
    });
  })
  .prefault([]);

/** The `berth registry` configuration: a YAML file, overridden by flags, validated here once. */
export const registryConfigSchema = z
  .object({
    listen: listenSchema
      .prefault('127.0.0.1:5000')
      .describe('Address to serve the registry API on, host:port.'),
    storage: z
      .object({
        filesystem: z
          .object({
            rootDirectory: z
              .string()
              .min(1)
              .describe('Directory that holds the registry data (CNCF distribution layout).'),
          })
          .strict()
          .optional(),
        s3: s3StorageSchema.optional(),
      })
      .strict()
      .refine(
        (storage) => (storage.filesystem === undefined) !== (storage.s3 === undefined),
        'set exactly one of storage.filesystem and storage.s3',
      )
      .prefault({ filesystem: { rootDirectory: './data' } }),
    uploads: z
      .object({
        purgeAfter: positiveDuration
          .prefault('24h')
          .describe('Abandoned uploads older than this are removed.'),
        purgeInterval: positiveDuration
          .prefault('1h')
          .describe('How often abandoned uploads are looked for.'),
      })
      .strict()
      .prefault({}),
    cache: z
      .object({
        manifestBytes: sizeSchema.prefault('64Mi').describe('Memory for cached manifests.'),
        ttl: durationSchema
          .prefault('5s')
          .describe('How long a cached tag or manifest is trusted without storage.'),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxConnections: z
          .number()
          .int()
          .positive()
          .prefault(1024)
          .describe('Connections served at once; more are closed as soon as they open.'),
        clientTimeout: positiveDuration
          .prefault('60s')
          .describe(
            'A client sending its request body, or taking its response, slower than minClientRate for this long is disconnected.',
          ),
        minClientRate: sizeSchema
          .prefault('1Ki')
          .describe('Bytes per second a client must at least move while the registry waits on it.'),
        storage: storageLimitsSchema
          .optional()
          .describe(
            'Registry-wide storage limits that stop pushes (never pulls) before storage fills.',
          ),
      })
      .strict()
      .prefault({})
      .describe('What one client may hold (connections and time), and what all may store.'),
    log: z
      .object({
        level: z
          .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
          .prefault('info'),
        requests: z.boolean().prefault(true).describe('Log one line per request.'),
      })
      .strict()
      .prefault({}),
    tls: z
      .object({
        certificateFile: z.string().min(1).describe('PEM certificate chain the registry serves.'),
        keyFile: z.string().min(1).describe('PEM private key of that certificate.'),
      })
      .strict()
      .optional()
      .describe('Serve HTTPS instead of HTTP.'),
    auth: z
      .object({
        service: z
          .string()
          .min(1)
          .prefault('berth-registry')
          .describe('The service name in challenges and the audience of tokens.'),
        issuer: z.string().min(1).prefault('berth').describe('The issuer of every token.'),
        realm: z
          .url()
          .optional()
          .describe(
            "Token endpoint URL for challenges; by default the registry's own host and port, /token.",
          ),
        tokenTTL: positiveDuration.prefault('5m').describe('Lifetime of access tokens.'),
        credentialLifetime: positiveDuration
          .prefault('720h')
          .describe('Lifetime of namespace credentials and refresh tokens.'),
        keyRotation: positiveDuration
          .prefault('720h')
          .describe('Age at which a new signing key takes over.'),
        anonymousPull: z
          .boolean()
          .prefault(true)
          .describe('Whether Public repositories may be pulled without credentials.'),
        adminUsername: z.string().min(1).prefault('admin'),
        adminPasswordFile: z
          .string()
          .optional()
          .describe(
            'File holding the admin password (else $BERTH_ADMIN_PASSWORD; without either there is no admin).',
          ),
        signingKeyFile: z
          .string()
          .optional()
          .describe(
            'Where the signing keys live; created when missing. Default <rootDirectory>/_berth/signing-keys.json.',
          ),
        policyFile: z
          .string()
          .optional()
          .describe('Repository policy (YAML), reloaded when it changes.'),
        kubernetes: z
          .object({
            kubeconfig: z
              .string()
              .optional()
              .describe('Kubeconfig file; in a pod the ServiceAccount is used.'),
            registry: z
              .object({ name: z.string().min(1), namespace: z.string().min(1) })
              .strict()
              .optional()
              .describe(
                'The Registry this process serves; Repositories naming another are ignored.',
              ),
            tenants: labelSelectorSchema
              .optional()
              .describe(
                'Namespaces whose Repositories count (Registry spec.tenants); every namespace when unset.',
              ),
          })
          .strict()
          .optional()
          .describe(
            'Kubernetes mode: the policy comes from Repository objects and Namespaces by watch.',
          ),
        serviceAccountTokens: serviceAccountTokensSchema
          .optional()
          .describe('Accept Kubernetes ServiceAccount tokens of one audience as logins.'),
      })
      .strict()
      .optional()
      .describe('Token authentication and per-repository policy. Absent: an open registry.'),
    gc: gcConfigSchema
      .optional()
      .describe('Online garbage collection on a schedule. Absent: only `berth gc` collects.'),
    mirrors: mirrorsSchema.describe(
      'Pull-through mirrors of upstream registries, each under its own path prefix.',
    ),
    shutdownTimeout: positiveDuration
      .prefault('30s')
      .describe('How long in-flight requests may run after SIGTERM.'),
  })
  .strict()
  .superRefine((config, context) => {
    if (config.storage.s3 && config.limits.storage?.minFree !== undefined) {
      context.addIssue({
        code: 'custom',
        path: ['limits', 'storage', 'minFree'],
        message:
          'applies to storage.filesystem only: a bucket has no free space to measure; use limits.storage.size',
      });
    }
    if (config.storage.s3 && config.auth && config.auth.signingKeyFile === undefined) {
      context.addIssue({
        code: 'custom',
        path: ['auth', 'signingKeyFile'],
        message:
          'is required with storage.s3: signing keys are kept in a local file, and there is no storage directory to default to',
      });
    }
  });

export type RegistryConfig = Readonly<z.infer<typeof registryConfigSchema>>;

/** Flags that override the file. */
export interface RegistryFlags {
  config?: string | undefined;
  listen?: string | undefined;
  storageDir?: string | undefined;
  logLevel?: string | undefined;
  tlsCertificate?: string | undefined;
  tlsKey?: string | undefined;
  /** Turns authentication on with this policy file. */
  policy?: string | undefined;
  adminPasswordFile?: string | undefined;
}

export { ConfigError };

export async function loadRegistryConfig(flags: RegistryFlags): Promise<RegistryConfig> {
  let document: Record<string, unknown> = {};
  if (flags.config !== undefined) {
    let text: string;
    try {
      text = await readFile(flags.config, 'utf8');
    } catch (error) {
      throw new ConfigError(`cannot read --config ${flags.config}: ${(error as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(text);
    } catch (error) {
      throw new ConfigError(`${flags.config} is not valid YAML: ${(error as Error).message}`);
    }
    if (
      parsed !== null &&
      parsed !== undefined &&
      (typeof parsed !== 'object' || Array.isArray(parsed))
    ) {
      throw new ConfigError(`${flags.config} must hold a mapping of settings`);
    }
    document = (parsed ?? {}) as Record<string, unknown>;
  }
  return parseRegistryConfig(applyFlags(document, flags), flags.config ?? 'configuration');
}

function applyFlags(
  document: Record<string, unknown>,
  flags: RegistryFlags,
): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...document };
  if (flags.listen !== undefined) merged.listen = flags.listen;
  if (flags.storageDir !== undefined)
    merged.storage = { filesystem: { rootDirectory: flags.storageDir } };
  if (flags.logLevel !== undefined)
    merged.log = { ...(merged.log as object | undefined), level: flags.logLevel };
  if (flags.tlsCertificate !== undefined || flags.tlsKey !== undefined) {
    merged.tls = {
      ...(merged.tls as object | undefined),
      certificateFile: flags.tlsCertificate,
      keyFile: flags.tlsKey,
    };
  }
  if (flags.policy !== undefined) {
    merged.auth = { ...(merged.auth as object | undefined), policyFile: flags.policy };
  }
  if (flags.adminPasswordFile !== undefined) {
    merged.auth = {
      ...(merged.auth as object | undefined),
      adminPasswordFile: flags.adminPasswordFile,
    };
  }
  return merged;
}

/** Validates and freezes; errors name the field and say what is expected. */
export function parseRegistryConfig(document: unknown, source: string): RegistryConfig {
  const result = registryConfigSchema.safeParse(document);
  if (!result.success) {
    const problems = zodIssues(result.error).map((problem) => `  ${problem}`);
    throw new ConfigError(`invalid ${source}:\n${problems.join('\n')}`);
  }
  return deepFreeze(result.data);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
