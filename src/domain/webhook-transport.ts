import { createHmac, randomBytes } from 'node:crypto';
import { lookup as dnsLookup } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import type { BlockList, LookupFunction } from 'node:net';
import { addressBlocked } from './webhooks.js';

/**
 * One webhook POST (events digest §2.6, §2.8): HTTP/1.1, the exact body signed with
 * HMAC-SHA256, redirects never followed (3xx is a failure), a connect timeout and a whole-request
 * timeout. When a block list is given, every address the host resolves to is checked at connect
 * time and the connection is pinned to the checked address, so DNS rebinding cannot slip a
 * private address in between validation and delivery.
 */

export const USER_AGENT = 'cycles-server-events/0.1.25';

export interface TransportOptions {
  connectTimeoutMs: number;
  timeoutMs: number;
  /** Addresses refused at connect time (the webhook-security block list); none = no check. */
  blockList?: BlockList | undefined;
}

export interface TransportResult {
  /** HTTP status, or 0 when no response arrived (connect error, timeout, refused address). */
  status: number;
  elapsedMs: number;
  error?: string;
}

export function sign(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', Buffer.from(secret, 'utf8')).update(Buffer.from(body, 'utf8')).digest('hex')}`;
}

export function newSpanId(): string {
  let id = randomBytes(8).toString('hex');
  while (id === '0000000000000000') id = randomBytes(8).toString('hex');
  return id;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 64 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 64 }),
};

function guardedLookup(list: BlockList): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const list4 = addresses as unknown as { address: string; family: number }[];
      const bad = list4.find((a) => addressBlocked(list, a.address));
      if (bad !== undefined || list4.length === 0) {
        const e = new Error(`Refused: ${hostname} resolves to a blocked address (${bad?.address ?? 'none'})`) as NodeJS.ErrnoException;
        e.code = 'EBLOCKED';
        return callback(e, '', 0);
      }
      const first = list4[0]!;
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: typeof list4) => void)(null, list4);
      callback(null, first.address, first.family);
    });
  };
}

export function postWebhook(rawUrl: string, body: string, headers: Record<string, string>, opts: TransportOptions): Promise<TransportResult> {
  const started = process.hrtime.bigint();
  const elapsed = () => Number((process.hrtime.bigint() - started) / 1_000_000n);
  return new Promise((resolve) => {
    let settled = false;
    let total: NodeJS.Timeout | undefined;
    const done = (r: TransportResult) => {
      if (settled) return;
      settled = true;
      if (total) clearTimeout(total);
      resolve(r);
    };
    let url: URL;
    try {
      url = new URL(rawUrl);
    } catch {
      done({ status: 0, elapsedMs: 0, error: `Invalid URL: ${rawUrl}` });
      return;
    }
    const secure = url.protocol === 'https:';
    if (!secure && url.protocol !== 'http:') {
      done({ status: 0, elapsedMs: 0, error: `Unsupported scheme: ${url.protocol}` });
      return;
    }
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    if (opts.blockList && isIP(host) !== 0 && addressBlocked(opts.blockList, host)) {
      done({ status: 0, elapsedMs: 0, error: `Refused: ${host} is in a blocked address range` });
      return;
    }
    const payload = Buffer.from(body, 'utf8');
    let req: http.ClientRequest;
    try {
      req = (secure ? https : http).request({
        protocol: url.protocol,
        hostname: host,
        port: url.port || (secure ? 443 : 80),
        path: `${url.pathname}${url.search}`,
        method: 'POST',
        agent: secure ? agents.https : agents.http,
        headers: { ...headers, 'Content-Length': String(payload.length) },
        ...(opts.blockList ? { lookup: guardedLookup(opts.blockList) } : {}),
      });
    } catch (err) {
      done({ status: 0, elapsedMs: elapsed(), error: (err as Error).message });
      return;
    }
    total = setTimeout(() => {
      req.destroy(new Error(`Request timed out after ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    req.on('socket', (socket) => {
      if (!socket.connecting) return;
      const connectTimer = setTimeout(() => req.destroy(new Error(`Connect timed out after ${opts.connectTimeoutMs} ms`)), opts.connectTimeoutMs);
      socket.once('connect', () => clearTimeout(connectTimer));
      socket.once('close', () => clearTimeout(connectTimer));
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => done({ status: res.statusCode ?? 0, elapsedMs: elapsed() }));
      res.on('error', (err) => done({ status: res.statusCode ?? 0, elapsedMs: elapsed(), error: err.message }));
    });
    req.on('error', (err) => done({ status: 0, elapsedMs: elapsed(), error: err.message }));
    req.end(payload);
  });
}

/** The failure reason label of an attempt (events digest §2.8). */
export function failureReason(status: number): 'http_4xx' | 'http_5xx' | 'transport_error' {
  if (status >= 400 && status < 500) return 'http_4xx';
  if (status >= 500 && status < 600) return 'http_5xx';
  return 'transport_error';
}
