import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CyclesError } from '../../domain/errors.js';
import { toCyclesError } from '../base.js';
import { authKindOf, type AuthHooks, type AuthKind } from './auth.js';

/**
 * The OpenAPI document of a plane's own routes, generated from their TypeBox schemas
 * (@fastify/swagger, dynamic mode), and Swagger UI over it (ADR 0016).
 *
 *   GET /openapi.json   the document
 *   GET /docs           Swagger UI (it loads the same document from /docs/json)
 *
 * Both need the admin key unless `public` is set (a development setting): as X-Admin-API-Key,
 * or, because a browser cannot add a header to a page load, as the password of HTTP Basic
 * credentials with any user name. A 401 carries a Basic challenge so that the browser prompts.
 */
export interface DocsSettings {
  /** SWAGGER_ENABLED: false registers nothing (the paths answer 404). */
  enabled: boolean;
  /** CYCLES_DOCS_PUBLIC: true serves the docs without the admin key. */
  public: boolean;
}

export interface DocsOptions extends DocsSettings {
  title: string;
  description: string;
}

export const DEFAULT_DOCS: DocsSettings = { enabled: true, public: false };
export const OPENAPI_PATH = '/openapi.json';
export const DOCS_PREFIX = '/docs';
/** The protocol version the document describes (the version of the routes, not of this package). */
const PROTOCOL_VERSION = '0.1.25';
export const BASIC_CHALLENGE = 'Basic realm="cycles"';

const SECURITY_SCHEMES = {
  ApiKeyAuth: { type: 'apiKey', in: 'header', name: 'X-Cycles-API-Key', description: 'Tenant-scoped API key' },
  AdminKeyAuth: { type: 'apiKey', in: 'header', name: 'X-Admin-API-Key', description: 'Operator key (ADMIN_API_KEY)' },
} as const;

const SECURITY: Record<AuthKind, Array<Record<string, string[]>>> = {
  tenant: [{ ApiKeyAuth: [] }],
  tenantOrAdmin: [{ ApiKeyAuth: [] }, { AdminKeyAuth: [] }],
  admin: [{ AdminKeyAuth: [] }],
};

/** The password of `Authorization: Basic …` credentials; the user name is ignored. */
export function basicPassword(authorization: unknown): string | undefined {
  if (typeof authorization !== 'string') return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization.trim());
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  const password = decoded.slice(colon + 1);
  return password === '' ? undefined : password;
}

function isDocsUrl(url: string): boolean {
  return url === OPENAPI_PATH || url === DOCS_PREFIX || url.startsWith(`${DOCS_PREFIX}/`);
}

function firstHeader(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The admin-key check of pages a browser opens (API docs, queue console): the key as
 * X-Admin-API-Key or, since a page load cannot carry that header, as the password of Basic
 * credentials. It resolves to the refusal (a 401 already carries the Basic challenge, so the
 * browser prompts), or undefined when the key is right; the caller throws or sends it.
 */
export function browserAdminCheck(hooks: AuthHooks): (request: FastifyRequest, reply: FastifyReply) => Promise<CyclesError | undefined> {
  const check = hooks.adminFrom((request) => firstHeader(request, 'x-admin-api-key') ?? basicPassword(request.headers.authorization));
  return async (request, reply) => {
    try {
      await check(request);
      return undefined;
    } catch (err) {
      const e = toCyclesError(err);
      if (e.status === 401) reply.header('www-authenticate', BASIC_CHALLENGE);
      return e;
    }
  };
}

/**
 * Registers the document generator and the docs routes. Call it before any other route is
 * registered: the generator collects routes as they are added.
 */
export async function apiDocs(app: FastifyInstance, hooks: AuthHooks, opts: DocsOptions): Promise<void> {
  if (!opts.enabled) return;
  await app.register(fastifySwagger, {
    mode: 'dynamic',
    openapi: {
      openapi: '3.0.3',
      info: { title: opts.title, description: opts.description, version: PROTOCOL_VERSION },
      components: { securitySchemes: SECURITY_SCHEMES },
    },
    // Each operation is named by the protocol operationId the route already carries for metrics,
    // and states the credentials its auth hook accepts (none: open). The docs routes themselves
    // are left out.
    transform: ({ schema, url, route }) => {
      if (isDocsUrl(url)) return { schema: { ...schema, hide: true }, url };
      const kind = authKindOf([route.onRequest, route.preValidation, route.preHandler]);
      const operationId = route.config?.operation;
      return {
        schema: {
          ...schema,
          ...(operationId !== undefined && schema?.operationId === undefined ? { operationId } : {}),
          security: kind === undefined ? [] : SECURITY[kind],
        },
        url,
      };
    },
  });

  await app.register(async (scope) => {
    scope.addHook('onRoute', (route) => {
      route.config = { ...(route.config ?? {}), operation: 'docs' };
    });
    if (!opts.public) {
      const check = browserAdminCheck(hooks);
      scope.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
        const refused = await check(request, reply);
        if (refused) throw refused;
      });
    }
    scope.get(OPENAPI_PATH, { schema: { hide: true } }, async () => scope.swagger());
    await scope.register(fastifySwaggerUi, { routePrefix: DOCS_PREFIX });
  });
}
