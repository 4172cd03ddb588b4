import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { CyclesError } from '../../domain/errors.js';

/** Requests per client per clock minute on the public (unauthenticated) runtime endpoints. */
export const PUBLIC_REQUESTS_PER_MINUTE = 300;
/** Clients tracked before stale windows are evicted (and, if still over, the table cleared). */
const MAX_TRACKED_CLIENTS = 10_000;

/**
 * A fixed-window limiter keyed by the socket peer address, aligned to the clock minute, per
 * process (as the reference's public-endpoint filter): the public endpoints need no credentials,
 * so this is the only thing between them and a flood.
 */
export class MinuteLimiter {
  private readonly windows = new Map<string, { window: number; count: number }>();

  constructor(private readonly limit: number, private readonly now: () => number = Date.now) {}

  /** Counts one request; returns the headers to send and whether it is over the limit. */
  take(client: string): { limited: boolean; remaining: number; resetEpochS: number; retryAfterS: number } {
    const nowMs = this.now();
    const window = Math.floor(nowMs / 60_000);
    let w = this.windows.get(client);
    if (!w || w.window !== window) {
      if (this.windows.size >= MAX_TRACKED_CLIENTS) this.evict(window);
      w = { window, count: 0 };
      this.windows.set(client, w);
    }
    w.count += 1;
    const resetEpochS = (window + 1) * 60;
    return {
      limited: w.count > this.limit,
      remaining: Math.max(0, this.limit - w.count),
      resetEpochS,
      retryAfterS: Math.max(1, Math.ceil(((window + 1) * 60_000 - nowMs) / 1000)),
    };
  }

  private evict(window: number): void {
    for (const [k, v] of this.windows) if (v.window !== window) this.windows.delete(k);
    if (this.windows.size >= MAX_TRACKED_CLIENTS) this.windows.clear();
  }
}

/**
 * The runtime's public endpoints (runtime digest, evidence and JWKS): signed evidence is not part
 * of this implementation, so every evidence id is unknown (404) and the key set is empty, but the
 * per-client limit applies as it does on the reference (429 LIMIT_EXCEEDED with Retry-After).
 */
export async function publicRoutes(app: FastifyInstance, limiter = new MinuteLimiter(PUBLIC_REQUESTS_PER_MINUTE)): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const limit = async (request: FastifyRequest, reply: FastifyReply) => {
    const l = limiter.take(request.ip);
    reply.header('x-ratelimit-limit', String(PUBLIC_REQUESTS_PER_MINUTE));
    reply.header('x-ratelimit-remaining', String(l.remaining));
    reply.header('x-ratelimit-reset', String(l.resetEpochS));
    if (l.limited) {
      reply.header('retry-after', String(l.retryAfterS));
      throw new CyclesError('LIMIT_EXCEEDED', `Rate limit of ${PUBLIC_REQUESTS_PER_MINUTE} requests per minute exceeded; retry after ${l.retryAfterS} s`);
    }
  };
  r.get('/v1/evidence/:evidence_id', {
    schema: { params: Type.Object({ evidence_id: Type.String({ minLength: 1, maxLength: 256 }) }), hide: true },
    config: { operation: 'getEvidence' },
    onRequest: limit,
  }, async (request) => {
    throw new CyclesError('NOT_FOUND', `Evidence not found: ${request.params.evidence_id}`);
  });
  r.get('/v1/.well-known/cycles-jwks.json', {
    schema: { hide: true },
    config: { operation: 'getJwks' },
    onRequest: limit,
  }, async () => ({ keys: [] }));
}
