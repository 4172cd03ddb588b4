import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendError, toCyclesError } from '../base.js';
import type { AuthHooks } from './auth.js';
import { BASIC_CHALLENGE, basicPassword } from './docs.js';

export const QUEUE_CONSOLE_PATH = '/admin/queues';

function firstHeader(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * bull-board at /admin/queues (ADR 0014): every queue of the events service with its jobs,
 * schedulers, retry and clean actions. A browser cannot add X-Admin-API-Key to a page load, so
 * the admin key is also accepted as the password of HTTP Basic credentials (any user name); a
 * 401 carries the Basic challenge so the browser prompts. Every page and API call of the console
 * goes through that check.
 */
export async function queueConsole(app: FastifyInstance, hooks: AuthHooks, queues: readonly Queue[]): Promise<void> {
  const adapter = new FastifyAdapter();
  adapter.setBasePath(QUEUE_CONSOLE_PATH);
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q)),
    serverAdapter: adapter,
    options: { uiConfig: { boardTitle: 'Cycles queues' } },
  });
  await app.register(async (scope) => {
    scope.addHook('onRoute', (route) => {
      route.config = { ...(route.config ?? {}), operation: 'queueConsole' };
      route.schema = { ...(route.schema ?? {}), hide: true } as typeof route.schema;
    });
    const check = hooks.adminFrom((request) => firstHeader(request, 'x-admin-api-key') ?? basicPassword(request.headers.authorization));
    scope.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      try {
        await check(request);
      } catch (err) {
        // Answered here: bull-board installs its own error handler inside its plugin.
        const e = toCyclesError(err);
        if (e.status === 401) reply.header('www-authenticate', BASIC_CHALLENGE);
        return sendError(reply, request, e);
      }
    });
    await scope.register(adapter.registerPlugin(), { prefix: QUEUE_CONSOLE_PATH });
  });
}
