import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendError } from '../base.js';
import type { AuthHooks } from './auth.js';
import { browserAdminCheck } from './docs.js';

export const QUEUE_CONSOLE_PATH = '/admin/queues';

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
    const check = browserAdminCheck(hooks);
    scope.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      const refused = await check(request, reply);
      // Answered here: bull-board installs its own error handler inside its plugin.
      if (refused) return sendError(reply, request, refused);
    });
    await scope.register(adapter.registerPlugin(), { prefix: QUEUE_CONSOLE_PATH });
  });
}
