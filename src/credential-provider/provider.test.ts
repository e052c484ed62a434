import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const entry = fileURLToPath(new URL('./main.ts', import.meta.url));
const hosts = ['--host', 'localhost:5000', '--host', 'Berth-Main.berth-system.svc:5000'];

/** Runs the provider as the kubelet does: one process, the request on stdin. */
function provide(
  input: string,
  args: string[] = hosts,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [entry, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

/** A JWT-shaped token expiring `seconds` from now; the provider reads only `exp`. */
function tokenExpiringIn(seconds: number): string {
  const payload = Buffer.from(
    JSON.stringify({ exp: Math.floor(Date.now() / 1000) + seconds }),
  ).toString('base64url');
  return `eyJhbGciOiJSUzI1NiJ9.${payload}.c2lnbmF0dXJl`;
}

function request(fields: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    kind: 'CredentialProviderRequest',
    ...fields,
  });
}

describe('berth credential-provider', () => {
  it("answers with the pod's token for the image's host only, cached no longer than the token lives", async () => {
    const token = tokenExpiringIn(600);
    const { code, stdout, stderr } = await provide(
      request({ image: 'localhost:5000/team-a/web:1.4', serviceAccountToken: token }),
    );
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    const response = JSON.parse(stdout) as Record<string, unknown>;
    expect(response).toEqual({
      apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
      kind: 'CredentialProviderResponse',
      cacheKeyType: 'Registry',
      cacheDuration: expect.stringMatching(/^5[34]\ds$/) as unknown,
      auth: { 'localhost:5000': { username: 'serviceaccount', password: token } },
    });
  });

  it('matches hosts case-insensitively and caps the cache at an hour', async () => {
    const token = tokenExpiringIn(48 * 3600);
    const { code, stdout } = await provide(
      request({
        image: 'berth-main.berth-system.svc:5000/team-a/web@sha256:' + 'a'.repeat(64),
        serviceAccountToken: token,
      }),
    );
    expect(code).toBe(0);
    const response = JSON.parse(stdout) as { cacheDuration: string; auth: object };
    expect(response.cacheDuration).toBe('3600s');
    expect(Object.keys(response.auth)).toEqual(['berth-main.berth-system.svc:5000']);
  });

  it('is not cached at all when the token is about to expire', async () => {
    const { stdout } = await provide(
      request({ image: 'localhost:5000/a/b', serviceAccountToken: tokenExpiringIn(30) }),
    );
    expect((JSON.parse(stdout) as { cacheDuration: string }).cacheDuration).toBe('0s');
  });

  it.each([
    [
      'an image of a host it does not serve',
      request({ image: 'docker.io/library/nginx', serviceAccountToken: tokenExpiringIn(600) }),
      /host docker\.io is not served by Berth/,
    ],
    [
      'an image of another port on the node',
      request({ image: 'localhost:5001/a/b', serviceAccountToken: tokenExpiringIn(600) }),
      /host localhost:5001 is not served/,
    ],
    [
      'a request without a token',
      request({ image: 'localhost:5000/a/b' }),
      /no serviceAccountToken.*tokenAttributes/,
    ],
    [
      'a token that is no JWT',
      request({ image: 'localhost:5000/a/b', serviceAccountToken: 'secret-not-a-jwt' }),
      /not a JWT/,
    ],
    [
      'another API version',
      JSON.stringify({
        apiVersion: 'credentialprovider.kubelet.k8s.io/v1beta1',
        kind: 'CredentialProviderRequest',
        image: 'localhost:5000/a/b',
      }),
      /invalid CredentialProviderRequest: apiVersion/,
    ],
    ['input that is not JSON', 'image=localhost:5000/a', /not a JSON CredentialProviderRequest/],
  ])('fails closed on %s', async (_name, input, message) => {
    const { code, stdout, stderr } = await provide(input);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(message);
    // The refusal never repeats the token.
    expect(stderr).not.toMatch(/secret-not-a-jwt|eyJ/);
  });

  it('refuses to run without --host, or with an unknown flag', async () => {
    const input = request({
      image: 'localhost:5000/a/b',
      serviceAccountToken: tokenExpiringIn(600),
    });
    const missing = await provide(input, []);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/--host is required/);
    const unknown = await provide(input, [...hosts, '--cache', '1h']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/Unknown option '--cache'/);
  });
});
