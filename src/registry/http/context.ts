import type { Request, Response } from 'express';
import type { RequestAccess } from '../auth/access-control.ts';
import type { RegistryServices } from '../services.ts';

/** What a handler gets: the request, the response, the services and counters for the access log. */
export interface HandlerContext {
  readonly req: Request;
  readonly res: Response;
  readonly services: RegistryServices;
  /** Bytes of blob or manifest content received and sent, for logs and metrics. */
  readonly traffic: { received: number; sent: number };
  /** The caller's rights when authentication is on; undefined for an open registry. */
  readonly access: RequestAccess | undefined;
}

export const apiVersionHeader = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;
