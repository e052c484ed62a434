import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpsServer } from 'node:https';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { getCACertificates, setDefaultCACertificates } from 'node:tls';
import { PassThrough, Writable } from 'node:stream';
import { createCertificateAuthority, issueServingCertificate } from '../tls/certificates.ts';
import { GetPipeError, pipeGet } from './get-pipe.ts';

/**
 * pipeGet against a TCP server that answers with bytes the test writes, so each way an S3
 * server can frame, split, refuse or break off an answer is met on purpose.
 */
describe('pipeGet', () => {
  let server: Server;
  let answer: (socket: Socket, request: string) => void;
  let requests: string[];

  beforeEach(async () => {
    requests = [];
    server = createServer((socket) => {
      let text = '';
      socket.on('data', (data: Buffer) => {
        text += data.toString('latin1');
        if (text.includes('\r\n\r\n')) {
          requests.push(text);
          answer(socket, text);
          text = '';
        }
      });
      socket.on('error', () => undefined);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
  });
  afterEach(async () => {
    server.close();
    await once(server, 'close');
  });

  const endpoint = () => new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const get = {
    host: 's3.test',
    path: '/bucket/key',
    headers: { authorization: 'AWS4 x', range: 'bytes=0-' },
  };

  /** A destination that keeps what it is given and calls back after `delayMillis`. */
  function collector(delayMillis = 0): Writable & { bytes: () => Buffer } {
    const chunks: Buffer[] = [];
    const sink = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _encoding, callback) {
        // A copy: the buffer goes back to the pool once called back.
        chunks.push(Buffer.from(chunk));
        if (delayMillis > 0) setTimeout(callback, delayMillis);
        else callback();
      },
    });
    return Object.assign(sink, { bytes: () => Buffer.concat(chunks) });
  }

  it('sends the signed headers with Connection: close and copies a body that arrives in many pieces, head split too', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    answer = (socket) => {
      const head = Buffer.from(
        `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nETag: "x"\r\n\r\n`,
      );
      // The head in two writes, split inside the blank line, then the body in odd sizes.
      socket.write(head.subarray(0, head.length - 3));
      setTimeout(() => {
        socket.write(head.subarray(head.length - 3));
        for (let offset = 0; offset < body.length; offset += 100_003)
          socket.write(body.subarray(offset, offset + 100_003));
        socket.end();
      }, 20);
    };
    const sink = collector(1);
    const result = await pipeGet(endpoint(), get, sink);
    expect(result).toEqual({ status: 200, copied: body.length });
    expect(createHash('sha256').update(sink.bytes()).digest('hex')).toBe(
      createHash('sha256').update(body).digest('hex'),
    );
    expect(requests[0]).toMatch(
      /^GET \/bucket\/key HTTP\/1\.1\r\nhost: s3\.test\r\nconnection: close\r\n/,
    );
    expect(requests[0]).toContain('authorization: AWS4 x\r\n');
    expect(requests[0]).toContain('range: bytes=0-\r\n');
  });

  it('stops reading while the destination is behind, and still copies every byte', async () => {
    const body = randomBytes(4 * 1024 * 1024);
    answer = (socket) => {
      socket.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${body.length}\r\n\r\n`);
      socket.end(body);
    };
    // What the destination holds and has not called back: without backpressure the whole body
    // (the server writes it at once) would pile up here.
    let most = 0;
    const chunks: Buffer[] = [];
    const slow = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _encoding, callback) {
        most = Math.max(most, slow.writableLength);
        chunks.push(Buffer.from(chunk));
        setTimeout(callback, 5);
      },
    });
    const result = await pipeGet(endpoint(), get, slow);
    expect(result).toEqual({ status: 206, copied: body.length });
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2 * 256 * 1024);
  });

  it('writes exactly Content-Length bytes when the server sends more', async () => {
    answer = (socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n');
      setTimeout(() => socket.end(Buffer.from('0123456789trailing bytes')), 10);
    };
    const sink = collector();
    expect(await pipeGet(endpoint(), get, sink)).toEqual({ status: 200, copied: 10 });
    expect(sink.bytes().toString()).toBe('0123456789');
  });

  it('returns an error answer with its body, read only as far as its length says', async () => {
    const xml = '<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>';
    answer = (socket) => {
      socket.write(
        `HTTP/1.1 503 Slow Down\r\nContent-Length: ${xml.length}\r\nConnection: keep-alive\r\n\r\n${xml}`,
      );
    };
    const sink = collector();
    expect(await pipeGet(endpoint(), get, sink)).toEqual({ status: 503, body: xml });
    expect(sink.bytes().length).toBe(0);
  });

  it('refuses a 2xx framed other than by Content-Length, before writing a byte', async () => {
    answer = (socket) => {
      socket.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    };
    const sink = collector();
    const failure = await pipeGet(endpoint(), get, sink).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(GetPipeError);
    expect(failure).toMatchObject({ code: 'BadAnswer', bodyStarted: false });
    expect((failure as Error).message).toContain('without a Content-Length');
    expect(sink.bytes().length).toBe(0);
  });

  it('fails, saying how much was missing, when the server closes in the middle of the body', async () => {
    answer = (socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
      socket.end(Buffer.alloc(600, 1));
    };
    const failure = await pipeGet(endpoint(), get, collector()).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'ConnectionBroken', bodyStarted: true });
    expect((failure as Error).message).toContain('400 bytes of the answer unsent');
  });

  it('fails without a byte written when nothing listens', async () => {
    const closed = endpoint();
    server.close();
    await once(server, 'close');
    const failure = await pipeGet(closed, get, collector()).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'ECONNREFUSED', bodyStarted: false });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
  });

  it('lets go of the server connection when the client goes away', async () => {
    let serverSide: Socket | undefined;
    answer = (socket) => {
      serverSide = socket;
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n');
      socket.write(Buffer.alloc(512 * 1024));
    };
    const client = new PassThrough();
    const piping = pipeGet(endpoint(), get, client);
    await once(client, 'data');
    client.destroy();
    const failure = await piping.catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'DestinationClosed' });
    // The server sees its connection end (reset, as data was still in flight).
    const side = serverSide as Socket;
    if (!side.destroyed) await new Promise((resolve) => side.once('close', resolve));
    expect(side.destroyed).toBe(true);
  });

  it('reaches an IPv6 address written in brackets, as URL keeps it', async () => {
    const body = Buffer.from('over IPv6');
    const v6 = createServer((socket) => {
      socket.once('data', () =>
        socket.end(
          Buffer.concat([
            Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`),
            body,
          ]),
        ),
      );
    });
    v6.listen(0, '::1');
    await once(v6, 'listening');
    try {
      const sink = collector();
      const url = new URL(`http://[::1]:${(v6.address() as AddressInfo).port}`);
      expect(await pipeGet(url, get, sink)).toEqual({ status: 200, copied: body.length });
      expect(sink.bytes().toString()).toBe('over IPv6');
    } finally {
      v6.close();
    }
  });

  describe('over TLS', () => {
    const hour = 3_600_000;
    const ca = createCertificateAuthority('get-pipe test CA', hour);
    const serving = issueServingCertificate(ca, 's3.test', ['localhost', '127.0.0.1'], hour);
    const body = randomBytes(1024 * 1024);
    let https: ReturnType<typeof createHttpsServer>;
    let port: number;
    const trusted = getCACertificates('default');

    beforeAll(async () => {
      https = createHttpsServer(
        { key: serving.privateKeyPem, cert: serving.certificatePem },
        (_request, response) => {
          response.setHeader('Content-Length', body.length);
          response.end(body);
        },
      );
      https.listen(0, '127.0.0.1');
      await once(https, 'listening');
      port = (https.address() as AddressInfo).port;
    });
    afterAll(() => {
      setDefaultCACertificates(trusted);
      https.close();
    });

    it('copies the body from a server whose certificate names the host or the address', async () => {
      setDefaultCACertificates([...trusted, ca.certificatePem]);
      for (const host of ['localhost', '127.0.0.1']) {
        const sink = collector();
        const answer = await pipeGet(new URL(`https://${host}:${port}`), get, sink);
        expect(answer).toEqual({ status: 200, copied: body.length });
        expect(sink.bytes().equals(body)).toBe(true);
      }
    });

    it('refuses a certificate the process does not trust, before a byte is written', async () => {
      setDefaultCACertificates(trusted);
      const sink = collector();
      const failure = await pipeGet(new URL(`https://localhost:${port}`), get, sink).catch(
        (error: unknown) => error,
      );
      expect(failure).toMatchObject({ bodyStarted: false });
      expect((failure as GetPipeError).code).toMatch(/CERT|SIGNATURE|ISSUER/);
      expect(sink.bytes().length).toBe(0);
    });
  });
});
