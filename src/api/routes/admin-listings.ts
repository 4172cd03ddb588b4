import type { FastifyInstance } from 'fastify';
import type { AdminDeps } from '../admin-app.js';

/** Governance listings: tenants, budgets, API keys, admin-plane balances, key validation. */
export async function adminListingRoutes(_app: FastifyInstance, _deps: AdminDeps): Promise<void> {}
