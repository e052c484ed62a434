import { parseArgs } from 'node:util';
import { answer, credentialProviderRequestSchema, ProviderRefusal } from './protocol.ts';
import { firstZodIssue } from '../util/zod-issues.ts';

export const credentialProviderUsage = `usage: berth credential-provider --host HOST[:PORT] [--host ...]

A kubelet image credential provider (credentialprovider.kubelet.k8s.io/v1). Reads a
CredentialProviderRequest on stdin and answers with the pod's ServiceAccount token as the
password for the image's host, when that host is one of --host (the node's localhost:<port>,
the Registry's Service name with its port, the externalURL host). Anything else exits 1 with
the reason on stderr.`;

export interface ProviderIo {
  readonly stdin: AsyncIterable<Buffer | string>;
  write(text: string): void;
  error(text: string): void;
}

/** Bytes of a request; the kubelet's are a few kilobytes. */
const maxRequestBytes = 1024 * 1024;

/** Runs the provider once; resolves to the exit code. Never throws. */
export async function runCredentialProvider(argv: string[], io: ProviderIo): Promise<number> {
  try {
    const hosts = parseHosts(argv);
    const request = credentialProviderRequestSchema.safeParse(await readJson(io.stdin));
    if (!request.success) {
      throw new ProviderRefusal(
        `invalid CredentialProviderRequest: ${firstZodIssue(request.error)}`,
      );
    }
    io.write(`${JSON.stringify(answer(request.data, hosts, Date.now()))}\n`);
    return 0;
  } catch (error) {
    // Only the reason: the request holds a token, which must never reach a log.
    const reason = error instanceof ProviderRefusal ? error.message : 'unexpected failure';
    io.error(`berth credential-provider: ${reason}\n`);
    return 1;
  }
}

function parseHosts(argv: string[]): Set<string> {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: { host: { type: 'string', multiple: true } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new ProviderRefusal(`${(error as Error).message}\n${credentialProviderUsage}`);
  }
  const hosts = (values.host ?? []).map((host) => host.toLowerCase());
  if (hosts.length === 0)
    throw new ProviderRefusal(`--host is required\n${credentialProviderUsage}`);
  for (const host of hosts) {
    if (!/^[a-z0-9.-]+(:\d{1,5})?$/.test(host))
      throw new ProviderRefusal(`--host ${host}: expected HOST or HOST:PORT`);
  }
  return new Set(hosts);
}

async function readJson(stdin: AsyncIterable<Buffer | string>): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += bytes.length;
    if (size > maxRequestBytes) throw new ProviderRefusal('request on stdin is too large');
    chunks.push(bytes);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new ProviderRefusal('stdin is not a JSON CredentialProviderRequest');
  }
}
