import { z } from 'zod';
import { listenSchema, sizeSchema } from './units.ts';

/** `berth node-proxy` settings, all from flags (the operator renders them into the DaemonSet). */
export const nodeProxyConfigSchema = z
  .object({
    listen: listenSchema.describe('Loopback address kubelets pull from, e.g. 127.0.0.1:5000.'),
    upstream: z
      .url({ protocol: /^https?$/ })
      .transform((text) => new URL(text))
      .describe(
        'Where the registry is: its Service ClusterIP (the operator renders that, so no DNS is needed), or a name, e.g. https://berth-main.berth-system.svc:5000.',
      ),
    tlsServerName: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'not a DNS name')
      .optional()
      .describe(
        "The registry's name, when upstream is an address: verified in its certificate and sent as Host, e.g. berth-main.berth-system.svc.",
      ),
    caFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        'PEM CA (or CAs) that signed the registry certificate, re-read when the file changes; the system CAs when unset.',
      ),
    cacheDirectory: z.string().min(1).describe('Where cached blobs live.'),
    cacheSize: sizeSchema.describe('Most bytes the blob cache keeps; LRU eviction beyond.'),
    logLevel: z.string().default('info'),
  })
  .strict();

export type NodeProxyConfig = z.infer<typeof nodeProxyConfigSchema>;
