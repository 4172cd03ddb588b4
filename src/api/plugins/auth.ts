import type { FastifyRequest } from 'fastify';
import { hasPermission } from '../../domain/auth.js';
import type { Authenticator } from '../../domain/authenticator.js';
import { CyclesError } from '../../domain/errors.js';

/**
 * Authentication hooks. The runtime plane answers an invalid tenant key with 401 (protocol);
 * the governance plane answers 403 (reference behaviour), so the plane picks the code.
 */
export interface AuthHooks {
  tenant(permission: string | string[]): (request: FastifyRequest) => Promise<void>;
  tenantOrAdmin(permission: string | string[]): (request: FastifyRequest) => Promise<void>;
  admin(): (request: FastifyRequest) => Promise<void>;
  /**
   * The admin-key check against a key read some other way than X-Admin-API-Key, e.g. the
   * password of HTTP Basic credentials on the documentation pages (a browser cannot add headers).
   */
  adminFrom(presented: (request: FastifyRequest) => string | undefined): (request: FastifyRequest) => Promise<void>;
}

/** Which credentials a hook accepts; the OpenAPI document states it as the route's `security`. */
export type AuthKind = 'tenant' | 'tenantOrAdmin' | 'admin';
const AUTH_KIND = Symbol('cyclesAuthKind');
type TaggedHook = ((request: FastifyRequest) => Promise<void>) & { [AUTH_KIND]?: AuthKind };

function tag(kind: AuthKind, hook: (request: FastifyRequest) => Promise<void>): TaggedHook {
  return Object.assign(hook, { [AUTH_KIND]: kind });
}

/** The credentials a route's hooks accept, or undefined when none of them is an auth hook. */
export function authKindOf(hooks: unknown): AuthKind | undefined {
  for (const hook of ([] as unknown[]).concat(hooks ?? [])) {
    const kind = typeof hook === 'function' ? (hook as TaggedHook)[AUTH_KIND] : undefined;
    if (kind !== undefined) return kind;
  }
  return undefined;
}

function header(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined || s.trim() === '' ? undefined : s.trim();
}

export function authHooks(auth: Authenticator, invalidKeyCode: 'UNAUTHORIZED' | 'FORBIDDEN'): AuthHooks {
  const checkAdmin = (request: FastifyRequest, presented: string | undefined): void => {
    if (presented === undefined) throw new CyclesError('UNAUTHORIZED', 'Missing X-Admin-API-Key header');
    if (!auth.adminKeyConfigured) throw new CyclesError('INTERNAL_ERROR', 'Server misconfiguration: admin API key not set');
    if (!auth.verifyAdminKey(presented)) throw new CyclesError('UNAUTHORIZED', 'Invalid admin API key');
    request.cycles.auth = { kind: 'admin' };
  };

  const checkTenant = async (request: FastifyRequest, permission: string | string[]): Promise<void> => {
    const secret = header(request, 'x-cycles-api-key');
    if (secret === undefined) throw new CyclesError('UNAUTHORIZED', 'Missing X-Cycles-API-Key header');
    const result = await auth.authenticateTenant(secret);
    if (!result.ok) throw new CyclesError(invalidKeyCode, `Invalid API key: ${result.reason}`);
    // The key is authenticated even if it lacks the permission: a failure is then the tenant's.
    request.cycles.auth = result.auth;
    const needed = Array.isArray(permission) ? permission : [permission];
    if (needed.length > 0 && !needed.some((p) => hasPermission(result.auth.permissions, p))) {
      throw new CyclesError(
        invalidKeyCode === 'UNAUTHORIZED' ? 'FORBIDDEN' : 'INSUFFICIENT_PERMISSIONS',
        `API key lacks required permission: ${needed.join(' or ')}`,
      );
    }
  };

  return {
    tenant: (permission) => tag('tenant', async (request) => checkTenant(request, permission)),
    tenantOrAdmin: (permission) => tag('tenantOrAdmin', async (request) => {
      const adminKey = header(request, 'x-admin-api-key');
      if (adminKey !== undefined) return checkAdmin(request, adminKey);
      return checkTenant(request, permission);
    }),
    admin: () => tag('admin', async (request) => checkAdmin(request, header(request, 'x-admin-api-key'))),
    adminFrom: (presented) => tag('admin', async (request) => {
      const key = presented(request);
      checkAdmin(request, key === undefined || key.trim() === '' ? undefined : key.trim());
    }),
  };
}
