import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { connectionFromFile } from './config.ts';

describe('kubeconfig loading', () => {
  let directory: string;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), 'berth-kubeconfig-'));
    await writeFile(join(directory, 'ca.crt'), 'CA FROM FILE');
    await writeFile(join(directory, 'token'), 'token-from-file\n');
  });
  afterAll(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  async function load(users: unknown, cluster: Record<string, unknown>): Promise<RequestOptions> {
    const file = join(directory, `config-${Math.random()}`);
    await writeFile(
      file,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: 'https://10.0.0.1:6443', ...cluster } }],
        users: [{ name: 'u', user: users }],
        contexts: [
          { name: 'other', context: { cluster: 'missing', user: 'u' } },
          { name: 'current', context: { cluster: 'c', user: 'u' } },
        ],
        'current-context': 'current',
      }),
    );
    const connection = connectionFromFile(file);
    expect(connection.server.href).toBe('https://10.0.0.1:6443/');
    const options: RequestOptions = { headers: {} };
    await connection.applyTo(options);
    return options;
  }

  it('reads inline CA, client certificate and token of the current context', async () => {
    const options = await load(
      {
        token: 'abc',
        'client-certificate-data': Buffer.from('CERT').toString('base64'),
        'client-key-data': Buffer.from('KEY').toString('base64'),
      },
      { 'certificate-authority-data': Buffer.from('CA').toString('base64') },
    );
    expect(String(options.ca)).toBe('CA');
    expect(String(options.cert)).toBe('CERT');
    expect(String(options.key)).toBe('KEY');
    expect(options.rejectUnauthorized).toBe(true);
    expect((options.headers as Record<string, string>).Authorization).toBe('Bearer abc');
  });

  it('resolves files relative to the kubeconfig, and honours insecure-skip-tls-verify', async () => {
    const options = await load(
      { tokenFile: 'token' },
      { 'certificate-authority': 'ca.crt', 'insecure-skip-tls-verify': true },
    );
    expect(String(options.ca)).toBe('CA FROM FILE');
    expect(options.rejectUnauthorized).toBe(false);
    expect((options.headers as Record<string, string>).Authorization).toBe(
      'Bearer token-from-file',
    );
  });

  it('refuses a context whose user does not exist, as kubectl does', async () => {
    const file = join(directory, 'no-user');
    await writeFile(
      file,
      stringify({
        clusters: [{ name: 'c', cluster: { server: 'https://10.0.0.1:6443' } }],
        users: [],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'gone' } }],
        'current-context': 'x',
      }),
    );
    expect(() => connectionFromFile(file)).toThrow(/user gone not found/);
  });

  it('says what is wrong with a kubeconfig it cannot use', async () => {
    const file = join(directory, 'broken');
    await writeFile(file, stringify({ clusters: [], contexts: [], 'current-context': 'x' }));
    expect(() => connectionFromFile(file)).toThrow(/has no current context/);
  });
});
