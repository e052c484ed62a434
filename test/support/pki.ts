import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { run } from './processes.ts';

/** Certificates live two days: long enough for any test run, short enough to be worthless after. */
const validity = ['-days', '2'];
const p256Key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

/**
 * A test certificate authority in `directory`: `ca.crt`/`ca.key`, and `issue` for keys and
 * certificates it signs (`<name>.key`, `<name>.crt`), plus a service-account key pair.
 */
export class TestAuthority {
  readonly directory: string;

  private constructor(directory: string) {
    this.directory = directory;
  }

  static async create(directory: string, commonName: string): Promise<TestAuthority> {
    await openssl(
      [
        'req',
        '-x509',
        ...p256Key,
        '-keyout',
        'ca.key',
        '-out',
        'ca.crt',
        '-subj',
        `/CN=${commonName}`,
        ...validity,
      ],
      directory,
    );
    return new TestAuthority(directory);
  }

  /** A key and certificate with this subject and these X.509 v3 extension lines. */
  async issue(name: string, subject: string, extensions: readonly string[]): Promise<void> {
    await writeFile(join(this.directory, `${name}.ext`), `${extensions.join('\n')}\n`);
    await openssl(
      ['req', ...p256Key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject],
      this.directory,
    );
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-extfile',
        `${name}.ext`,
        ...validity,
      ],
      this.directory,
    );
  }

  /** A client certificate: `organization` becomes the user's group, `commonName` its name. */
  async issueClient(name: string, commonName: string, organization?: string): Promise<void> {
    const subject = `${organization ? `/O=${organization}` : ''}/CN=${commonName}`;
    await this.issue(name, subject, ['extendedKeyUsage=clientAuth']);
  }

  /** The RSA key pair kube-apiserver signs and verifies ServiceAccount tokens with: sa.key, sa.pub. */
  async serviceAccountKeys(): Promise<void> {
    await openssl(
      ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'sa.key'],
      this.directory,
    );
    await openssl(['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], this.directory);
  }

  file(name: string): string {
    return join(this.directory, name);
  }

  /** Writes `<name>.kubeconfig` for the client certificate `name` (mode 0600); returns its path. */
  async kubeconfig(name: string, server: string): Promise<string> {
    const [ca, cert, key] = (await Promise.all(
      ['ca.crt', `${name}.crt`, `${name}.key`].map((file) => readFile(this.file(file))),
    )) as [Buffer, Buffer, Buffer];
    const path = this.file(`${name}.kubeconfig`);
    await writeFile(
      path,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'test',
            cluster: { server, 'certificate-authority-data': ca.toString('base64') },
          },
        ],
        users: [
          {
            name,
            user: {
              'client-certificate-data': cert.toString('base64'),
              'client-key-data': key.toString('base64'),
            },
          },
        ],
        contexts: [{ name: 'test', context: { cluster: 'test', user: name } }],
        'current-context': 'test',
      }),
      { mode: 0o600 },
    );
    return path;
  }
}
