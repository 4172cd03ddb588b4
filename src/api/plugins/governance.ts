import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { failureAuditEntry, type AuditLog } from '../../domain/audit.js';
import { wasThrottled } from './auth-throttle.js';

/**
 * Request handling only the governance plane has (admin digest §0.4, §2.8), added as root hooks
 * of the admin app so they see every request, matched or not. The runtime plane is untouched.
 */

/** A client-supplied X-Request-Id is echoed only when it is short and of a safe charset. */
const INBOUND_REQUEST_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** The inbound X-Request-Id to adopt, or undefined to keep the generated one. */
export function inboundRequestId(value: unknown): string | undefined {
  const s = Array.isArray(value) ? value[0] : value;
  return typeof s === 'string' && INBOUND_REQUEST_ID.test(s) ? s : undefined;
}

/** The error code and message of a sent error envelope, when the payload is one. */
function envelopeOf(payload: unknown): { error?: string; message?: string } {
  if (typeof payload !== 'string' || payload.length === 0 || payload[0] !== '{') return {};
  try {
    const body = JSON.parse(payload) as { error?: unknown; message?: unknown };
    return {
      ...(typeof body.error === 'string' ? { error: body.error } : {}),
      ...(typeof body.message === 'string' ? { message: body.message } : {}),
    };
  } catch {
    return {};
  }
}

const ENVELOPE = Symbol('cyclesErrorEnvelope');
type WithEnvelope = FastifyReply & { [ENVELOPE]?: { error?: string; message?: string } };

export function governanceHooks(app: FastifyInstance, audit: AuditLog): void {
  // Runs after the base correlation hook (root hooks run in registration order) and before any
  // route's authentication, so even a 401 carries the client's id.
  app.addHook('onRequest', async (request, reply) => {
    const inbound = inboundRequestId(request.headers['x-request-id']);
    if (inbound === undefined || !request.cycles) return;
    request.cycles.requestId = inbound;
    reply.header('x-request-id', inbound);
  });

  // The error envelope is read as it is sent; the audit row is written once the answer is out,
  // so a slow or absent Redis never delays an error answer.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (reply.statusCode >= 400) (reply as WithEnvelope)[ENVELOPE] = envelopeOf(payload);
    return payload;
  });

  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    // A throttled request writes no row (admin digest §0.2): a flood must not become audit writes.
    if (reply.statusCode < 400 || wasThrottled(request)) return;
    const envelope = (reply as WithEnvelope)[ENVELOPE] ?? {};
    const { entry, ttlMs } = failureAuditEntry({
      method: request.method,
      url: request.url,
      status: reply.statusCode,
      errorCode: envelope.error,
      errorMessage: envelope.message,
      auth: request.cycles?.auth,
      requestId: request.cycles?.requestId ?? String(request.id),
      traceId: request.cycles?.traceId,
      sourceIp: request.ip,
      userAgent: request.headers['user-agent'],
    });
    await audit.write(entry, Date.now(), ttlMs);
  });
}
