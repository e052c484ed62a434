import { z } from 'zod';
import { labelSelectorSchema } from '../../policy/schema.ts';
import {
  conditionSchema,
  observedGenerationSchema,
  durationPattern,
  quantityPattern,
} from './common.ts';

const filesystemStorageSchema = z
  .object({
    size: z
      .string()
      .regex(quantityPattern, 'a quantity such as 20Gi')
      .default('20Gi')
      .describe('Size of the PersistentVolumeClaim.'),
    storageClassName: z
      .string()
      .optional()
      .describe('StorageClass of the claim; the cluster default when unset.'),
    reclaimPolicy: z
      .enum(['Retain', 'Delete'])
      .default('Retain')
      .describe('Retain keeps the claim, and every image in it, when the Registry is deleted.'),
  })
  .strict();

const s3StorageSchema = z
  .object({
    bucket: z.string().min(3).max(63).describe('Bucket that holds the registry data.'),
    endpoint: z.url().optional().describe('S3-compatible endpoint URL; AWS when unset.'),
    region: z.string().default('us-east-1').describe('Region of the bucket.'),
    forcePathStyle: z
      .boolean()
      .default(false)
      .describe('Address the bucket in the path (MinIO and most S3-compatible stores).'),
    credentialsSecret: z
      .string()
      .min(1)
      .describe('Secret in the Registry namespace with accessKeyId and secretAccessKey.'),
  })
  .strict();

export const registrySpecSchema = z
  .object({
    replicas: z
      .number()
      .int()
      .min(0)
      .max(20)
      .default(1)
      .describe('Registry pods. More than one requires s3 storage.'),
    storage: z
      .object({
        filesystem: filesystemStorageSchema
          .optional()
          .describe('A PersistentVolumeClaim (ReadWriteOnce).'),
        s3: s3StorageSchema
          .optional()
          .describe('An S3-compatible bucket, shared by every replica.'),
      })
      .strict()
      .default({ filesystem: { size: '20Gi', reclaimPolicy: 'Retain' } })
      .meta({
        'x-kubernetes-validations': [
          {
            rule: 'has(self.filesystem) != has(self.s3)',
            message: 'set exactly one of storage.filesystem and storage.s3',
          },
        ],
      })
      .describe('Where images are stored: exactly one of filesystem and s3.'),
    nodeAccess: z
      .object({
        mode: z
          .enum(['NodeProxy', 'None'])
          .default('NodeProxy')
          .describe(
            'NodeProxy runs a proxy on every node so that pods pull localhost:<port>/...; None does not.',
          ),
        port: z
          .number()
          .int()
          .min(1024)
          .max(65535)
          .default(5000)
          .describe('Loopback port of the node proxy.'),
        cacheSize: z
          .string()
          .regex(quantityPattern, 'a quantity such as 10Gi')
          .default('10Gi')
          .describe(
            'Most bytes of blobs each node proxy keeps, least recently used evicted first; its emptyDir is a quarter larger, for blobs being fetched.',
          ),
      })
      .strict()
      .default({ mode: 'NodeProxy', port: 5000, cacheSize: '10Gi' })
      .describe('How kubelets reach the registry.'),
    tls: z
      .object({
        certificateSecret: z
          .string()
          .min(1)
          .optional()
          .describe(
            'A kubernetes.io/tls Secret (e.g. from cert-manager) the registry serves; else Berth makes a CA and a certificate.',
          ),
      })
      .strict()
      .default({})
      .describe('The registry serves HTTPS inside the cluster.'),
    externalURL: z
      .url()
      .optional()
      .describe(
        'URL where the registry is reachable from outside the cluster; added to pull secrets.',
      ),
    tenants: z
      .object({
        namespaceSelector: labelSelectorSchema
          .optional()
          .describe('Namespaces that may declare Repositories here; every namespace when unset.'),
      })
      .strict()
      .default({})
      .describe('Who may use this Registry.'),
    pullSecrets: z
      .object({
        serviceAccounts: z
          .enum(['All', 'Default', 'None'])
          .default('All')
          .describe(
            'ServiceAccounts that get the pull secret: every one, only "default", or none.',
          ),
      })
      .strict()
      .default({ serviceAccounts: 'All' })
      .describe('How pull secrets are wired into namespaces.'),
    auth: z
      .object({
        tokenTTL: z
          .string()
          .regex(durationPattern, 'a duration such as 5m')
          .default('5m')
          .describe('Lifetime of access tokens.'),
        credentialLifetime: z
          .string()
          .regex(durationPattern, 'a duration such as 720h')
          .default('720h')
          .describe('Lifetime of namespace credentials; they rotate at two thirds of it.'),
        anonymousPull: z
          .boolean()
          .default(true)
          .describe('Whether Public repositories may be pulled without credentials.'),
      })
      .strict()
      .default({ tokenTTL: '5m', credentialLifetime: '720h', anonymousPull: true })
      .describe('Token and credential settings.'),
  })
  .strict()
  .meta({
    'x-kubernetes-validations': [
      {
        rule: 'self.replicas <= 1 || has(self.storage.s3)',
        message: 'more than one replica requires storage.s3',
      },
    ],
  });

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
    readyReplicas: z.number().int().optional().describe('Registry pods that are ready.'),
  })
  .strict();

export type RegistrySpec = z.infer<typeof registrySpecSchema>;
export type RegistryStatus = z.infer<typeof registryStatusSchema>;
