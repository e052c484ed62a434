import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string | undefined;
}

/**
 * Credentials the way every AWS tool finds them, and only those two ways (never a flag or a
 * config key): the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
 * `AWS_SESSION_TOKEN`), else the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
 * `~/.aws/credentials`), profile `AWS_PROFILE` or `default`. Throws saying where it looked.
 */
export function loadS3Credentials(environment: NodeJS.ProcessEnv = process.env): S3Credentials {
  const accessKeyId = environment.AWS_ACCESS_KEY_ID;
  const secretAccessKey = environment.AWS_SECRET_ACCESS_KEY;
  if (accessKeyId && secretAccessKey) {
    return { accessKeyId, secretAccessKey, sessionToken: environment.AWS_SESSION_TOKEN };
  }
  const file = environment.AWS_SHARED_CREDENTIALS_FILE ?? join(homedir(), '.aws', 'credentials');
  const profile = environment.AWS_PROFILE ?? 'default';
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(
      `no S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set and ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
    );
  }
  const section = parseIni(text).get(profile);
  const fileKey = section?.get('aws_access_key_id');
  const fileSecret = section?.get('aws_secret_access_key');
  if (!fileKey || !fileSecret) {
    throw new Error(
      `no S3 credentials: profile ${profile} in ${file} lacks aws_access_key_id or aws_secret_access_key`,
    );
  }
  return {
    accessKeyId: fileKey,
    secretAccessKey: fileSecret,
    sessionToken: section?.get('aws_session_token'),
  };
}

/** The INI dialect of AWS credentials files: `[profile]` then `key = value`, `#`/`;` comments. */
function parseIni(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1] as string, current);
      continue;
    }
    const equals = line.indexOf('=');
    if (current && equals > 0) {
      current.set(line.slice(0, equals).trim(), line.slice(equals + 1).trim());
    }
  }
  return sections;
}
