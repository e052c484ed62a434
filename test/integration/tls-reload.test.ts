import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { parseRegistryConfig } from '../../src/config/registry.ts';
import { Upstream } from '../../src/node-proxy/upstream.ts';
import { startRegistry, type RunningRegistry } from '../../src/registry/server.ts';
import {
  createCertificateAuthority,
  issueServingCertificate,
  type IssuedCertificate,
} from '../../src/tls/certificates.ts';
import { silentLogger } from '../support/fake-cluster.ts';

const run = promisify(execFile);

/**
 * A Secret volume as the kubelet writes one: the files are symlinks through `..data`, which is
 * swapped atomically to a new timestamped directory on every update.
 */
class SecretVolume {
  private generation = 0;
  readonly directory: string;
  constructor(directory: string) {
    this.directory = directory;
  }

  path(key: string): string {
    return join(this.directory, key);
  }

  async write(files: Record<string, string>): Promise<void> {
    this.generation += 1;
    const version = `..${this.generation}`;
    await mkdir(join(this.directory, version));
    for (const [key, value] of Object.entries(files))
      await writeFile(join(this.directory, version, key), value);
    await symlink(version, join(this.directory, '..data_tmp'));
    await rename(join(this.directory, '..data_tmp'), join(this.directory, '..data'));
    for (const key of Object.keys(files))
      await symlink(join('..data', key), this.path(key)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error;
      });
    if (this.generation > 1)
      await rm(join(this.directory, `..${this.generation - 1}`), { recursive: true });
  }
}

const names = ['localhost', '127.0.0.1'];
const lifetime = 60 * 60_000;

/** What the operator stores: the CA bundle (signing CA first) and a serving certificate. */
interface State {
  readonly ca: IssuedCertificate;
  readonly serving: IssuedCertificate;
}

const serve = (ca: IssuedCertificate) => issueServingCertificate(ca, 'localhost', names, lifetime);

function filesOf(plan: State): Record<string, string> {
  return {
    'tls.crt': plan.serving.certificatePem,
    'tls.key': plan.serving.privateKeyPem,
    'ca.crt': plan.ca.certificatePem,
  };
}

/** The certificate a new TLS connection to the registry is shown (verification not the point). */
function servedCertificate(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      resolve(new X509Certificate(raw).fingerprint256);
    });
    socket.on('error', reject);
  });
}

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** A GET on a new connection, verified with the bundle read from the volume now. */
async function freshGet(port: number, path: string, caFile: string): Promise<Buffer> {
  const ca = await readFile(caFile);
  return new Promise((resolve, reject) => {
    const request = httpsRequest(
      { host: '127.0.0.1', port, path, servername: 'localhost', ca, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          response.statusCode === 200
            ? resolve(Buffer.concat(chunks))
            : reject(new Error(`GET ${path}: ${response.statusCode}`)),
        );
      },
    );
    request.on('error', reject);
    request.end();
  });
}

async function upstreamGet(upstream: Upstream, path: string): Promise<Buffer> {
  const response = await upstream.send({ method: 'GET', path, headers: {} });
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  if (response.statusCode !== 200) throw new Error(`GET ${path}: ${response.statusCode}`);
  return Buffer.concat(chunks);
}

/** A blob GET the way a cache fill sends it: `Upstream.pipe`, on a connection of its own. */
async function upstreamPipe(upstream: Upstream, path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      // The reader reuses its buffer once called back.
      chunks.push(Buffer.from(chunk));
      callback();
    },
  });
  const answer = await upstream.pipe(path, {}, sink, () => undefined);
  if (!('copied' in answer)) throw new Error(`GET ${path}: ${answer.status}`);
  return Buffer.concat(chunks);
}

async function waitUntil(what: string, check: () => Promise<boolean>, millis = 20_000) {
  const deadline = Date.now() + millis;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('certificate renewal under a running registry and node-proxy upstream', () => {
  let directory: string;
  let volume: SecretVolume;
  let registry: RunningRegistry;
  let port: number;
  let plan: State;
  const image = { manifest: '', blob: Buffer.alloc(0), blobDigest: '', manifestDigest: '' };

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), 'berth-tls-reload-'));
    await mkdir(join(directory, 'tls'));
    volume = new SecretVolume(join(directory, 'tls'));
    const first = createCertificateAuthority('berth test CA', 8 * lifetime);
    plan = { ca: first, serving: serve(first) };
    await volume.write(filesOf(plan));
    const config = parseRegistryConfig(
      {
        listen: '127.0.0.1:0',
        storage: { filesystem: { rootDirectory: join(directory, 'data') } },
        tls: { certificateFile: volume.path('tls.crt'), keyFile: volume.path('tls.key') },
      },
      'test',
    );
    registry = await startRegistry(config, silentLogger);
    port = Number(registry.address.split(':').pop());
    // One small image to pull: a blob and a manifest that names it.
    const ca = Buffer.from(plan.ca.certificatePem);
    image.blob = Buffer.from('a layer that is pulled over and over\n'.repeat(2000));
    image.blobDigest = `sha256:${createHash('sha256').update(image.blob).digest('hex')}`;
    const config0 = Buffer.from('{}');
    const configDigest = `sha256:${createHash('sha256').update(config0).digest('hex')}`;
    image.manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config0.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: image.blobDigest,
          size: image.blob.length,
        },
      ],
    });
    const send = (method: string, path: string, body: Buffer, type: string) =>
      new Promise<number>((resolve, reject) => {
        const r = httpsRequest(
          {
            host: '127.0.0.1',
            port,
            method,
            path,
            servername: 'localhost',
            ca,
            headers: { 'content-type': type, 'content-length': body.length },
          },
          (response) => {
            response.resume();
            resolve(response.statusCode ?? 0);
          },
        );
        r.on('error', reject);
        r.end(body);
      });
    for (const [blob, digest] of [
      [image.blob, image.blobDigest],
      [config0, configDigest],
    ] as const)
      expect(
        await send(
          'POST',
          `/v2/team/app/blobs/uploads/?digest=${digest}`,
          blob,
          'application/octet-stream',
        ),
      ).toBe(201);
    expect(
      await send(
        'PUT',
        '/v2/team/app/manifests/v1',
        Buffer.from(image.manifest),
        'application/vnd.oci.image.manifest.v1+json',
      ),
    ).toBe(201);
  });

  afterAll(async () => {
    await registry?.stop();
    await rm(directory, { recursive: true, force: true });
  });

  it('passes openssl verify -x509_strict and Python default TLS contexts against the served certificate', async () => {
    const caFile = volume.path('ca.crt');
    const { stdout } = await run('openssl', [
      'verify',
      '-x509_strict',
      '-purpose',
      'sslserver',
      '-CAfile',
      caFile,
      volume.path('tls.crt'),
    ]);
    expect(stdout.trim()).toBe(`${volume.path('tls.crt')}: OK`);
    // Python's default context verifies the chain and the host name (an IP SAN for 127.0.0.1);
    // X509_STRICT is what Python 3.13 adds to that default, so the check holds there too.
    const script = [
      'import ssl, sys, http.client',
      'host, port, cafile, strict = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "strict"',
      'ctx = ssl.create_default_context(cafile=cafile)',
      'ctx.verify_flags |= ssl.VERIFY_X509_STRICT if strict else 0',
      'c = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)',
      'c.request("GET", "/v2/")',
      'print(c.getresponse().status)',
    ].join('\n');
    for (const host of ['localhost', '127.0.0.1'])
      for (const mode of ['default', 'strict']) {
        const result = await run('/usr/bin/python3', [
          '-c',
          script,
          host,
          String(port),
          caFile,
          mode,
        ]);
        expect({ host, mode, status: result.stdout.trim() }).toEqual({ host, mode, status: '200' });
      }
    // The test can fail: a CA that did not sign it is refused.
    const stranger = join(directory, 'stranger.crt');
    await writeFile(stranger, createCertificateAuthority('stranger', lifetime).certificatePem);
    await expect(
      run('/usr/bin/python3', ['-c', script, 'localhost', String(port), stranger, 'default']),
    ).rejects.toThrow(/CERTIFICATE_VERIFY_FAILED/);
  });

  it('serves renewed certificates and a rolled CA without a failed pull', async () => {
    const caFile = volume.path('ca.crt');
    const upstream = new Upstream(
      new URL(`https://127.0.0.1:${port}`),
      await readFile(caFile),
      'localhost',
      { caFile, reloadIntervalMillis: 200 },
    );
    const firstCa = plan.ca.certificatePem;
    const failures: string[] = [];
    let pulls = 0;
    let running = true;
    const pull = async (get: (path: string) => Promise<Buffer>) => {
      while (running) {
        try {
          const manifest = await get('/v2/team/app/manifests/v1');
          const blob = await get(`/v2/team/app/blobs/${image.blobDigest}`);
          if (manifest.toString() !== image.manifest || !blob.equals(image.blob))
            failures.push('wrong content');
          pulls += 1;
        } catch (error) {
          failures.push(String(error));
        }
      }
    };
    const loops = [
      pull((path) => upstreamGet(upstream, path)),
      pull((path) => upstreamGet(upstream, path)),
      // The manifest through the pool, the blob as a cache fill fetches it.
      pull(async (path) =>
        path.includes('/blobs/') ? upstreamPipe(upstream, path) : upstreamGet(upstream, path),
      ),
      pull((path) => freshGet(port, path, caFile)),
    ];
    const served = async (pem: string) => (await servedCertificate(port)) === fingerprint(pem);
    const advance = async (next: State) => {
      plan = next;
      await volume.write(filesOf(plan));
      await waitUntil('the renewed certificate to be served', () =>
        served(plan.serving.certificatePem),
      );
      const before = pulls;
      await waitUntil('pulls with it', async () => pulls >= before + 6 || failures.length > 0);
    };
    // The steps planCertificates takes (src/tls/renewal.test.ts), each written as the kubelet
    // writes a Secret volume.
    try {
      expect(await served(plan.serving.certificatePem)).toBe(true);
      const oldCa = plan.ca;
      // A renewal by the same CA.
      await advance({ ca: oldCa, serving: serve(oldCa) });
      // The CA rolls: the new one joins ca.crt in front; this renewal is still the old CA's.
      const newCa = createCertificateAuthority('berth test CA', 8 * lifetime);
      const bundle = {
        certificatePem: newCa.certificatePem + oldCa.certificatePem,
        privateKeyPem: newCa.privateKeyPem,
      };
      await advance({ ca: bundle, serving: serve(oldCa) });
      // The next renewal is signed by the new CA, which the upstream trusts since the last step.
      await advance({ ca: bundle, serving: serve(newCa) });
      // The old CA expired and left ca.crt: the upstream's new connections verify with the new.
      plan = { ca: newCa, serving: plan.serving };
      await volume.write(filesOf(plan));
      const before = pulls;
      await waitUntil(
        'pulls after the old CA left',
        async () => pulls >= before + 6 || failures.length > 0,
      );
    } finally {
      running = false;
      await Promise.all(loops);
    }
    expect({ pulls: pulls > 20, failures }).toEqual({ pulls: true, failures: [] });
    // The upstream verifies with the new CA now, on a new connection: one that kept only the
    // first CA would refuse the certificate served now.
    // A new connection (the pooled ones closed, as the registry's keep-alive timeout does).
    registry.server.closeIdleConnections();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await upstream.check(5_000)).toBe(200);
    const stale = new Upstream(
      new URL(`https://127.0.0.1:${port}`),
      Buffer.from(firstCa),
      'localhost',
    );
    await expect(stale.check(5_000)).rejects.toThrow(/certificate/);
    stale.close();
    upstream.close();
  }, 120_000);
});
