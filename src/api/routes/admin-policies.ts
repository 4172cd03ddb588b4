import type { FastifyInstance } from 'fastify';
import type { AdminDeps } from '../admin-app.js';

/** Policies, and the audit-log and method handling the governance plane adds. */
export async function adminPolicyRoutes(_app: FastifyInstance, _deps: AdminDeps): Promise<void> {}
