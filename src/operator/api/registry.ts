import { z } from 'zod';
import { labelSelectorSchema } from '../../policy/schema.ts';
import { gcConfigSchema, mirrorConfigSchema, storageLimitsSchema } from '../../config/registry.ts';
import {
  boundedDuration,
  celRules,
  celString,
  conditionSchema,
  isDuration,
  observedGenerationSchema,
  sizeField,
  type CelRule,
} from './common.ts';

const filesystemStorageSchema = z
  .object({
    size: sizeField(
      'storage.filesystem.size',
      {
        rule: "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))",
        message: 'storage.filesystem.size must be more than 0, e.g. 20Gi',
      },
      {
        rule: '!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0',
        message:
          'storage.filesystem.size cannot shrink: a PersistentVolumeClaim only grows, where its StorageClass allows expansion',
      },
    )
      .default('20Gi')
      .describe(
        'Size of the PersistentVolumeClaim, 20Gi by default. It may grow, where the StorageClass allows expansion, but never shrink.',
      ),
    storageClassName: z
      .string()
      .optional()
      .describe(
        'StorageClass of the claim; the cluster default when unset. Fixed once the Registry exists.',
      ),
    reclaimPolicy: z
      .enum(['Retain', 'Delete'])
      .default('Retain')
      .describe(
        'Retain (the default) keeps the claim, every image in it, and the signing keys when the Registry is deleted: a Registry made again under the same name finds its images and signs with the same keys, so pull secrets issued before stay valid. Delete removes them with the Registry; one made again starts empty, with new keys.',
      ),
  })
  .strict()
  .meta(
    celRules({
      rule: 'has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)',
      message:
        'storage.filesystem.storageClassName cannot change: a PersistentVolumeClaim keeps its StorageClass; make a new Registry to move the images',
    }),
  );

const s3StorageSchema = z
  .object({
    bucket: z
      .string()
      .min(3)
      .max(63)
      .describe(
        'Bucket that holds the images. Several Registries may share one under different prefixes.',
      ),
    endpoint: z
      .url()
      .meta(
        celRules({
          rule: `self.matches(${celString('^https?://[^/?#@]+(/[^?#]*)?$')})`,
          message:
            'storage.s3.endpoint is the http(s) URL of the S3 API, e.g. https://s3.eu-west-1.amazonaws.com or http://s3.storage.svc:7070, with no query or user',
        }),
      )
      .default('https://s3.amazonaws.com')
      .describe('Base URL of the S3 API, https://s3.amazonaws.com by default.'),
    region: z
      .string()
      .min(1)
      .default('us-east-1')
      .describe('Region requests are signed for, us-east-1 by default.'),
    forcePathStyle: z
      .boolean()
      .default(false)
      .describe(
        'Address the bucket as <endpoint>/<bucket> (most self-hosted S3 servers) instead of <bucket>.<endpoint>; false by default.',
      ),
    prefix: z
      .string()
      .min(1)
      .meta(
        celRules({
          rule: `!self.contains(${celString('\\')}) && !self.matches(${celString('(^|/)[.][.]?(/|$)')})`,
          message:
            'storage.s3.prefix is a key prefix such as registries/main: no backslash, and no . or .. between slashes',
        }),
      )
      .optional()
      .describe(
        "Key prefix the registry's data lives under (distribution's rootdirectory); the bucket's root when unset.",
      ),
    credentialsSecret: z
      .string()
      .min(1)
      .describe(
        "A Secret in the Registry's namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, if the keys are temporary). The registry pods read them as environment variables; they are never copied elsewhere. Pods read them at start: after changing the Secret, kubectl rollout restart deployment/berth-<name>.",
      ),
  })
  .strict();

/**
 * A duration of at least `min`, refused at apply time (CEL) when it is not one or shorter, and
 * by zod through `accepts`, the registry config's own field, so that whatever the API server
 * admits the registry reads the same way.
 */
function durationFrom(field: string, min: string, why: string, accepts: z.ZodType) {
  return z
    .string()
    .max(32)
    .refine((text) => accepts.safeParse(text).success, `is not a duration of at least ${min}`)
    .meta(
      celRules(
        {
          rule: isDuration('self'),
          message: `${field} is not a duration; write e.g. 30s, 5m or 24h`,
          messageExpression: `${celString(`${field} "`)} + self + ${celString('" is not a duration; write e.g. 30s, 5m or 24h')}`,
        },
        {
          rule: `!${isDuration('self')} || duration(self) >= duration(${celString(min)})`,
          message: `${field} must be at least ${min}: ${why}`,
          messageExpression: `${celString(`${field} `)} + self + ${celString(` is too short: write at least ${min}; ${why}`)}`,
        },
      ),
    );
}

/** HH:MM-HH:MM in UTC, as the registry config's gc.window reads it. */
const gcWindowPattern = '^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$';

const gcSchema = z
  .object({
    interval: durationFrom(
      'gc.interval',
      '1ms',
      'the registry waits this long between collections',
      gcConfigSchema.shape.interval,
    )
      .default('1h')
      .describe(
        'Time from the end of one collection to the start of the next, 1h by default. Only one registry pod collects at a time.',
      ),
    window: z
      .string()
      .max(11)
      .refine(
        (text) => gcConfigSchema.shape.window.safeParse(text).success,
        'must be HH:MM-HH:MM (UTC)',
      )
      .meta(
        celRules({
          rule: `self.matches(${celString(gcWindowPattern)})`,
          message: 'gc.window is a daily window in UTC, HH:MM-HH:MM, e.g. 01:00-05:00',
          messageExpression: `${celString('gc.window "')} + self + ${celString('" is not HH:MM-HH:MM (UTC); write e.g. 01:00-05:00, which may run over midnight as 22:00-04:00')}`,
        }),
      )
      .optional()
      .describe(
        'Collect only inside this daily window, HH:MM-HH:MM in UTC (22:00-04:00 runs over midnight); at any time when unset.',
      ),
    gracePeriod: durationFrom(
      'gc.gracePeriod',
      '1s',
      'content is kept at least this long after it was written, so that a push in progress never loses a blob it uploaded',
      gcConfigSchema.shape.gracePeriod,
    )
      .default('1h')
      .describe(
        'Content written, linked or mounted more recently than this is never removed, 1h by default; at least 1s.',
      ),
    untagged: z
      .enum(gcConfigSchema.shape.untagged.unwrap().options)
      .default('keep')
      .describe(
        'keep (the default) or delete the manifests no tag reaches and no kept index or subject (signature, SBOM) needs.',
      ),
  })
  .strict();

const storageLimitsRule: CelRule = {
  rule: "!isQuantity(self) || quantity(self).compareTo(quantity('1')) >= 0",
  message: 'a storage limit must be at least 1 byte, e.g. 100Gi',
};

const limitsSchema = z
  .object({
    storage: z
      .object({
        size: sizeField('limits.storage.size', {
          ...storageLimitsRule,
          message: 'limits.storage.size must be more than 0, e.g. 100Gi',
        })
          .refine(
            (text) => storageLimitsSchema.shape.size.safeParse(text).success,
            'must be more than 0',
          )
          .optional()
          .describe(
            'Most bytes of blobs (layers, configs and manifests) the registry stores, on either storage; pushes past it are refused with STORAGE_FULL (507), pulls go on. Unlimited when unset.',
          ),
        minFree: sizeField('limits.storage.minFree', {
          ...storageLimitsRule,
          message: 'limits.storage.minFree must be more than 0, e.g. 1Gi',
        })
          .refine(
            (text) => storageLimitsSchema.shape.minFree.safeParse(text).success,
            'must be more than 0',
          )
          .optional()
          .describe(
            'storage.filesystem only: pushes are refused with STORAGE_FULL (507) while the volume has less free space than this. Not with storage.s3: a bucket has no free space to measure.',
          ),
      })
      .strict()
      .optional()
      .describe('Registry-wide limits that stop pushes (never pulls) before storage fills.'),
  })
  .strict();

/**
 * Repository path components, for CEL; zod checks the prefix with the registry config's own
 * schema, so that whatever the API server admits the registry reads.
 */
const mirrorPrefixPattern = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/;

/** Why two mirrors may not share or nest prefixes, in the words the API server answers. */
export const mirrorPrefixesOverlap =
  'mirrors[].prefix must not repeat or nest (e.g. docker.io and docker.io/library): each repository is served by one upstream; give every mirror a prefix of its own';

const mirrorSchema = z
  .object({
    url: z
      .url()
      .refine(
        (text) => mirrorConfigSchema.shape.url.safeParse(text).success,
        'must be http(s)://host[:port] with no path',
      )
      .meta(
        celRules({
          rule: `self.matches(${celString('^https?://[^/?#@]+/?$')})`,
          message:
            'mirrors[].url is the base URL of the upstream registry, http(s)://host[:port] with no path, e.g. https://registry-1.docker.io',
        }),
      )
      .max(2048)
      .describe('Base URL of the upstream registry, e.g. https://registry-1.docker.io.'),
    prefix: z
      .string()
      .min(1)
      .max(255)
      .refine(
        (text) => mirrorConfigSchema.shape.prefix.safeParse(text).success,
        'must be repository path components, e.g. docker.io or mirror/docker.io',
      )
      .meta(
        celRules({
          rule: `self.matches(${celString(mirrorPrefixPattern.source)})`,
          message:
            'mirrors[].prefix is lower-case repository path components (no port, no scheme), e.g. docker.io or mirror/docker.io',
          messageExpression: `${celString('mirrors[].prefix "')} + self + ${celString('" is not repository path components: write lower-case names separated by /, no port or scheme, e.g. docker.io or mirror/docker.io')}`,
        }),
      )
      .describe(
        "Path prefix the upstream is served under: <prefix>/library/nginx is library/nginx upstream. As a containerd mirror (hosts.toml), the prefix is the upstream's registry name (docker.io), which containerd sends as ?ns=.",
      ),
    credentialsSecret: z
      .string()
      .min(1)
      .max(253)
      .optional()
      .describe(
        "A Secret in the Registry's namespace with keys username and password (or token), the upstream login; anonymous when unset. Mounted read-only into the registry pods and read at each upstream token request, so a changed Secret is used without a restart (after the kubelet's sync, up to about 90s).",
      ),
    tls: z
      .object({
        caSecret: z
          .string()
          .min(1)
          .max(253)
          .describe(
            "A Secret in the Registry's namespace whose key ca.crt holds the PEM certificates the upstream's certificate must chain to.",
          ),
      })
      .strict()
      .optional()
      .describe("TLS to an https upstream; the system's roots when unset."),
    tagTTL: durationFrom(
      'mirrors[].tagTTL',
      '1s',
      'a tag is trusted this long before the upstream is asked again',
      mirrorConfigSchema.shape.tagTTL,
    )
      .default('5m')
      .describe(
        'How long a tag is trusted before the upstream is asked again (a HEAD), 5m by default. Digests are cached for good.',
      ),
  })
  .strict()
  .meta(
    celRules({
      rule: `!has(self.tls) || self.url.startsWith(${celString('https://')})`,
      message: 'mirrors[].tls applies to an https:// url only: an http upstream has no certificate',
    }),
  );

const mirrorsSchema = z
  .array(mirrorSchema)
  .max(32)
  .superRefine((mirrors, context) => {
    mirrors.forEach((mirror, index) => {
      for (const other of mirrors.slice(0, index)) {
        const a = `${mirror.prefix}/`;
        const b = `${other.prefix}/`;
        if (a.startsWith(b) || b.startsWith(a))
          context.addIssue({
            code: 'custom',
            path: [index, 'prefix'],
            message: mirrorPrefixesOverlap,
          });
      }
    });
  })
  .meta(
    celRules({
      // Each prefix is a prefix of its own and of no other mirror's: no repeats, no nesting.
      rule: "self.all(a, self.exists_one(b, (a.prefix + '/').startsWith(b.prefix + '/')))",
      message: mirrorPrefixesOverlap,
    }),
  );

/** Why limits.storage.minFree cannot be set with a bucket, in the words the API server answers. */
export const minFreeNeedsFilesystem =
  'limits.storage.minFree applies to storage.filesystem only: a bucket has no free space to measure; use limits.storage.size';

/** Why more than one pod cannot share a filesystem volume, in the words the API server answers. */
export const replicasNeedS3 =
  'replicas above 1 need storage.s3: a storage.filesystem volume is ReadWriteOnce, mounted by one pod at a time, so further replicas would never start';

export const registrySpecSchema = z
  .object({
    replicas: z
      .number()
      .int()
      .min(0)
      .default(1)
      .describe(
        'Registry pods: 1 (the default), 0 to stop the registry, or more with storage.s3 (every pod serves every request from the one bucket).',
      ),
    storage: z
      .object({
        filesystem: filesystemStorageSchema
          .optional()
          .describe('A PersistentVolumeClaim (ReadWriteOnce).'),
        s3: s3StorageSchema
          .optional()
          .describe('An S3-compatible bucket, shared by every registry pod.'),
      })
      .strict()
      .default({ filesystem: { size: '20Gi', reclaimPolicy: 'Retain' } })
      .meta(
        celRules(
          {
            rule: 'has(self.filesystem) || has(self.s3)',
            message:
              'set storage.filesystem (a volume) or storage.s3 (a bucket): where the registry keeps its images',
          },
          {
            rule: '!has(self.filesystem) || !has(self.s3)',
            message:
              'set storage.filesystem or storage.s3, not both: a registry keeps its images in one place',
          },
          {
            rule: 'has(self.s3) == has(oldSelf.s3)',
            message:
              'storage cannot change between filesystem and s3: the images would stay behind; make a new Registry and copy them',
          },
        ),
      )
      .describe(
        'Where images are stored: storage.filesystem, a volume, or storage.s3, a bucket. Left out, a 20Gi claim of the default StorageClass, retained.',
      ),
    nodeAccess: z
      .object({
        mode: z
          .enum(['NodeProxy', 'None'])
          .default('NodeProxy')
          .describe(
            'NodeProxy (the default) runs a proxy on every node so that pods pull localhost:<port>/...; None does not, and pods pull the cluster endpoint (berth-<name>.<namespace>.svc:5000), which the nodes must resolve and trust.',
          ),
        port: z
          .number()
          .int()
          .min(1024)
          .max(65535)
          .default(5000)
          .describe(
            'Loopback port of the node proxy, 5000 by default. One Registry per port: the oldest keeps it, and a later one asking for it runs no node proxy (condition NodePort).',
          ),
        cacheSize: sizeField('nodeAccess.cacheSize')
          .default('10Gi')
          .describe(
            'Most bytes of blobs each node proxy keeps, 10Gi by default, least recently used evicted first; its emptyDir is a quarter larger, for blobs being fetched.',
          ),
      })
      .strict()
      .default({ mode: 'NodeProxy', port: 5000, cacheSize: '10Gi' })
      .describe('How kubelets reach the registry. Left out, a node proxy on port 5000.'),
    tls: z
      .object({
        certificateSecret: z
          .string()
          .min(1)
          .optional()
          .describe(
            'A kubernetes.io/tls Secret (e.g. from cert-manager) the registry serves, valid for berth-<name>.<namespace>.svc and, in NodeProxy mode, holding ca.crt, which the node proxies verify it with; else Berth makes a CA and a certificate. A renewed Secret is picked up by the running pods.',
          ),
        certificateLifetime: boundedDuration(
          'tls.certificateLifetime',
          '5m',
          '8760h',
          "a renewed certificate reaches the pods at their kubelet's next sync (up to about 90s), which must come within the third of the lifetime the old one still has; longer than a year is what strict clients refuse",
        )
          .optional()
          .describe(
            'Lifetime of the serving certificate Berth makes, from 5m to 8760h (a year), 2160h (90 days) when unset; it is renewed at two thirds of it, and its CA, which lives eight times as long, at two thirds of its own. Not with certificateSecret, whose issuer decides.',
          ),
      })
      .strict()
      .meta(
        celRules({
          rule: '!has(self.certificateSecret) || !has(self.certificateLifetime)',
          message:
            "tls.certificateLifetime applies to the certificate Berth makes, not to certificateSecret: set the lifetime in the issuer of that Secret (e.g. cert-manager's Certificate duration)",
        }),
      )
      .default({})
      .describe(
        'The registry serves HTTPS inside the cluster. Left out, with a CA and certificate Berth makes and keeps.',
      ),
    externalURL: z
      .url()
      .meta(
        celRules({
          rule: `self.matches(${celString('^https?://[^/?#@]+/?$')})`,
          message:
            'externalURL is a scheme and a host, e.g. https://registry.example.com: a registry is served from the root of its host, so a path, query or user would be ignored',
        }),
      )
      .optional()
      .describe(
        'Where the registry is reachable from outside the cluster, http(s)://host[:port] with no path; its host is added to pull secrets. Left out, pull secrets name only the node and cluster endpoints; Berth makes no Ingress either way.',
      ),
    tenants: z
      .object({
        namespaceSelector: labelSelectorSchema
          .optional()
          .describe('Namespaces that may declare Repositories here; every namespace when unset.'),
      })
      .strict()
      .default({})
      .describe('Who may use this Registry. Left out, every namespace.'),
    pullSecrets: z
      .object({
        mode: z
          .enum(['Secrets', 'CredentialProvider', 'Both'])
          .default('Secrets')
          .describe(
            "How pods authenticate their pulls. Secrets (the default): a pull Secret in every namespace that may pull. CredentialProvider: none; the kubelet's credential provider (berth credential-provider) hands the registry each pod's own ServiceAccount token of the audience, and Berth removes its pull Secrets and ServiceAccount entries. Both: the two at once, for a migration.",
          ),
        audience: z
          .string()
          .min(1)
          .max(253)
          .meta(
            celRules({
              rule: `!self.matches(${celString('^https://kubernetes[.]default[.]svc([.:/]|$)')})`,
              message:
                "pullSecrets.audience must not be the API server's own audience: every pod's default token would then be a registry login",
            }),
          )
          .optional()
          .describe(
            'Audience of the ServiceAccount tokens the registry accepts (the kubelet CredentialProviderConfig tokenAttributes.serviceAccountTokenAudience); berth.dev/<namespace>/<name> when unset. Only with mode CredentialProvider or Both.',
          ),
        // No default: a defaulted value would be present in mode CredentialProvider too, where
        // the rule below refuses it.
        serviceAccounts: z
          .enum(['All', 'Default', 'None'])
          .optional()
          .describe(
            'ServiceAccounts that get the pull secret (modes Secrets and Both): All (when unset), only "default", or None (pods then name the Secret berth-pull.<registry namespace>.<registry name> in imagePullSecrets). Not with mode CredentialProvider, which writes no Secret.',
          ),
      })
      .strict()
      .default({ mode: 'Secrets' })
      .meta(
        celRules(
          {
            rule: "!has(self.audience) || (has(self.mode) && self.mode != 'Secrets')",
            message:
              'pullSecrets.audience is only used with mode CredentialProvider or Both: pull Secrets carry no ServiceAccount token',
          },
          {
            rule: "!has(self.serviceAccounts) || !has(self.mode) || self.mode != 'CredentialProvider'",
            message:
              'pullSecrets.serviceAccounts chooses which ServiceAccounts get the pull Secret, and mode CredentialProvider writes none: remove it (every pod of a namespace that may pull then authenticates with its own token)',
          },
        ),
      )
      .describe(
        'How pods get credentials for their pulls: pull Secrets, ServiceAccount tokens, or both.',
      ),
    auth: z
      .object({
        tokenTTL: boundedDuration(
          'tokenTTL',
          '30s',
          '24h',
          'shorter sends clients back for a token in the middle of a pull, longer keeps a leaked token usable for days',
        )
          .default('5m')
          .describe(
            'Lifetime of access tokens, from 30s to 24h and shorter than credentialLifetime; 5m by default.',
          ),
        credentialLifetime: boundedDuration(
          'credentialLifetime',
          '60s',
          '8760h',
          'shorter rewrites every pull secret more often than every 40s, longer keeps a leaked credential usable for years',
        )
          .default('720h')
          .describe(
            'Lifetime of namespace credentials, from 60s to 8760h (a year), 720h (30 days) by default; they rotate at two thirds of it.',
          ),
        anonymousPull: z
          .boolean()
          .default(true)
          .describe(
            'Whether Public repositories may be pulled without credentials; true by default. When false, every namespace gets a pull secret for them.',
          ),
      })
      .strict()
      .default({ tokenTTL: '5m', credentialLifetime: '720h', anonymousPull: true })
      .meta(
        celRules({
          rule: `!${isDuration('self.tokenTTL')} || !${isDuration('self.credentialLifetime')} || duration(self.tokenTTL) < duration(self.credentialLifetime)`,
          message: 'tokenTTL must be shorter than credentialLifetime',
          messageExpression:
            "'tokenTTL ' + self.tokenTTL + ' must be shorter than credentialLifetime ' + self.credentialLifetime + ': a token never outlives the credential it was issued for'",
        }),
      )
      .describe('Token and credential settings.'),
    gc: gcSchema
      .optional()
      .describe(
        'Online garbage collection: unreferenced blobs and manifests, and what Repository retention rules select, are removed on a schedule. Left out, the registry never collects by itself.',
      ),
    limits: limitsSchema
      .optional()
      .describe('Registry-wide limits. Left out, pushes are limited only by Repository quotas.'),
    mirrors: mirrorsSchema
      .optional()
      .describe(
        'Pull-through mirrors of upstream registries, each under its own path prefix: a pull of <prefix>/<name> is answered from the cache, else fetched from the upstream while it streams to the client, and kept. Mirrored paths follow Repository policy like any other: declare a Repository for the prefix (Public, or restricted) for pods to pull them. Left out, none.',
      ),
  })
  .strict()
  .meta(
    celRules(
      {
        rule: '!has(self.replicas) || self.replicas <= 1 || (has(self.storage) && has(self.storage.s3))',
        message: replicasNeedS3,
      },
      {
        rule: '!has(self.limits) || !has(self.limits.storage) || !has(self.limits.storage.minFree) || !has(self.storage) || !has(self.storage.s3)',
        message: minFreeNeedsFilesystem,
      },
    ),
  );

export const registryStatusSchema = z
  .object({
    observedGeneration: observedGenerationSchema,
    conditions: z.array(conditionSchema).optional().describe('Ready, Progressing and Degraded.'),
    endpoints: z
      .object({
        cluster: z.string().optional().describe('Service address inside the cluster.'),
        node: z
          .string()
          .optional()
          .describe('Address pods pull from on every node (localhost:<port>).'),
        external: z.string().optional().describe('The externalURL, when set.'),
      })
      .strict()
      .optional()
      .describe('Where the registry can be reached.'),
    endpoint: z
      .string()
      .optional()
      .describe(
        'Where pods pull from, as kubectl get shows it: the node endpoint while this Registry runs node proxies, else the cluster endpoint.',
      ),
    readyReplicas: z.number().int().optional().describe('Registry pods that are ready.'),
    replicas: z
      .string()
      .optional()
      .describe('Ready registry pods of those wanted, as ready/desired (e.g. 1/1).'),
  })
  .strict();

export type RegistrySpec = z.infer<typeof registrySpecSchema>;
export type RegistryStatus = z.infer<typeof registryStatusSchema>;
