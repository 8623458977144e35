// A small JSON client for the Kubernetes API: one keep-alive HTTPS agent,
// credentials from @kubernetes/client-node's KubeConfig (kubeconfig file or
// in-cluster service account; refreshed periodically so rotated tokens are
// picked up), and failures classified as StoreErrors by HTTP status:
//   409 Conflict → Conflict, or AlreadyExists when the Status reason says so
//   404 → NotFound; 400/422 → Invalid; anything else (5xx, 429, network) → Transient.
// Watches are left to client-node's informers.
import { Agent, request, type RequestOptions } from 'node:https';
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import { StoreError, StoreErrorKind } from '../store.ts';

/** Content types for PATCH (Kubernetes API conventions). */
export const PATCH_TYPES = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
} as const;

/** A request's options. */
export interface KubeRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  query?: Record<string, string | undefined>;
  body?: unknown;
  contentType?: string;
}

const CREDENTIALS_TTL_MS = 60_000;
const REQUEST_TIMEOUT_MS = 30_000;

/** See the file comment. */
export class KubeHttp {
  private readonly kc: KubeConfig;
  private readonly server: URL;
  private agent: Agent | HttpAgent | undefined;
  private headers: Record<string, string> = {};
  private loadedAt = 0;
  /** Requests sent (for tests and metrics). */
  requests = 0;

  constructor(kc: KubeConfig) {
    this.kc = kc;
    const cluster = kc.getCurrentCluster();
    if (cluster === null) throw new Error('kubeconfig has no current cluster');
    this.server = new URL(cluster.server);
  }

  private async credentials(): Promise<void> {
    if (this.agent !== undefined && Date.now() - this.loadedAt < CREDENTIALS_TTL_MS) return;
    const opts: RequestOptions = { headers: {} };
    await this.kc.applyToHTTPSOptions(opts);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (typeof v === 'string') headers[k] = v;
    if (typeof opts.auth === 'string') headers['authorization'] = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    this.headers = headers;
    if (this.agent === undefined) {
      this.agent = this.server.protocol === 'http:'
        ? new HttpAgent({ keepAlive: true, maxSockets: 32 })
        : new Agent({
          keepAlive: true, maxSockets: 32, ca: opts.ca, cert: opts.cert, key: opts.key,
          ...(opts.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: opts.rejectUnauthorized }),
          ...(opts.servername === undefined ? {} : { servername: opts.servername }),
        });
    }
    this.loadedAt = Date.now();
  }

  /** Sends one request; resolves to the decoded JSON body, rejects with a StoreError. */
  async send<T>(req: KubeRequest): Promise<T> {
    await this.credentials();
    const url = new URL(this.server.toString().replace(/\/$/, '') + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
    const headers: Record<string, string> = { ...this.headers, accept: 'application/json' };
    if (body !== undefined) {
      headers['content-type'] = req.contentType ?? 'application/json';
      headers['content-length'] = String(body.length);
    }
    this.requests += 1;
    const send = url.protocol === 'http:' ? httpRequest : request;
    return new Promise<T>((resolve, reject) => {
      const r = send(url, { method: req.method, headers, agent: this.agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(new StoreError(StoreErrorKind.Transient, `${req.method} ${req.path}: ${e.message}`)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let decoded: unknown;
          try {
            decoded = text === '' ? {} : JSON.parse(text);
          } catch {
            decoded = { message: text.slice(0, 500) };
          }
          if (status >= 200 && status < 300) resolve(decoded as T);
          else reject(classify(status, decoded, `${req.method} ${req.path}`));
        });
      });
      r.on('timeout', () => r.destroy(new Error('request timed out')));
      r.on('error', (e) => reject(new StoreError(StoreErrorKind.Transient, `${req.method} ${req.path}: ${e.message}`)));
      r.end(body);
    });
  }

  /** Closes idle connections. */
  close(): void {
    this.agent?.destroy();
  }
}

/** Turns an error response into a StoreError. */
export function classify(status: number, body: unknown, what: string): StoreError {
  const s = (typeof body === 'object' && body !== null ? body : {}) as { reason?: string; message?: string };
  const message = `${what}: ${status} ${s.reason ?? ''}: ${s.message ?? ''}`.trim();
  if (status === 409) return new StoreError(s.reason === 'AlreadyExists' ? StoreErrorKind.AlreadyExists : StoreErrorKind.Conflict, message, status);
  if (status === 404) return new StoreError(StoreErrorKind.NotFound, message, status);
  if (status === 400 || status === 422) return new StoreError(StoreErrorKind.Invalid, message, status);
  return new StoreError(StoreErrorKind.Transient, message, status);
}
