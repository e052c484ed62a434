import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { ClusterConnection } from '../../kube/config.ts';

/** A GET of the API server that answers JSON, for `accept`; rejects on any status but 200. */
export type ClusterGet = (path: string, accept: string) => Promise<unknown>;

const timeoutMillis = 5_000;

/**
 * GETs with the connection's credentials and an Accept header of the caller's choosing: the
 * API server answers `/openid/v1/jwks` only as `application/jwk-set+json`, which the general
 * client (always `application/json`) is refused (406).
 */
export function clusterGet(connection: ClusterConnection): ClusterGet {
  return async (path, accept) => {
    const url = new URL(
      `${connection.server.pathname.replace(/\/$/, '')}${path}`,
      connection.server,
    );
    const options: RequestOptions = { method: 'GET', headers: { Accept: accept } };
    await connection.applyTo(options);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const text = await new Promise<string>((resolve, reject) => {
      const req = send(url, options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode === 200) resolve(body);
          else reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${body.slice(0, 200)}`));
        });
      });
      req.on('error', reject);
      req.setTimeout(timeoutMillis, () => req.destroy(new Error(`GET ${path} timed out`)));
      req.end();
    });
    return JSON.parse(text) as unknown;
  };
}
