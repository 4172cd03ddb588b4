/**
 * Scope derivation (runtime protocol §SCOPE DERIVATION). The path holds the subject levels that
 * are present, in canonical order, as `level:value` joined by `/`; missing levels are skipped.
 * Values are lower-cased, as the reference server does, so budgets created through the admin
 * plane (whose scopes are lower-cased on write) match subjects sent in any case.
 */
export const SCOPE_LEVELS = ['tenant', 'workspace', 'app', 'workflow', 'agent', 'toolset'] as const;
export type ScopeLevel = (typeof SCOPE_LEVELS)[number];

export type SubjectLevels = Partial<Record<ScopeLevel, string>>;

export interface DerivedScopes {
  /** Every cumulative prefix of the path, shortest first. */
  scopes: string[];
  /** The full path (the last derived scope). */
  scopePath: string;
}

export function deriveScopes(subject: SubjectLevels, effectiveTenant: string): DerivedScopes {
  const segments: string[] = [];
  for (const level of SCOPE_LEVELS) {
    const raw = level === 'tenant' ? (subject.tenant ?? effectiveTenant) : subject[level];
    if (raw === undefined || raw.trim() === '') continue;
    segments.push(`${level}:${raw.toLowerCase()}`);
  }
  const scopes: string[] = [];
  for (let i = 0; i < segments.length; i += 1) scopes.push(segments.slice(0, i + 1).join('/'));
  return { scopes, scopePath: scopes[scopes.length - 1] ?? '' };
}

/** All prefixes of a stored scope path (the reservation's affected_scopes). */
export function prefixesOf(scopePath: string): string[] {
  const segments = scopePath.split('/');
  return segments.map((_, i) => segments.slice(0, i + 1).join('/'));
}

/** The leaf segment of a scope path: the Balance.scope value the reference returns. */
export function leafOf(scopePath: string): string {
  const i = scopePath.lastIndexOf('/');
  return i === -1 ? scopePath : scopePath.slice(i + 1);
}

const SCOPE_ID = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

/**
 * Validates an admin-plane budget scope: `tenant:<id>` first, then later levels in canonical
 * order, each at most once. Returns the lower-cased scope and its tenant, or an error message.
 */
export function parseBudgetScope(scope: string): { scope: string; tenant: string } | { error: string } {
  if (scope.length === 0) return { error: 'scope must not be empty' };
  const segments = scope.split('/');
  let lastLevel = -1;
  const out: string[] = [];
  for (const [i, segment] of segments.entries()) {
    const colon = segment.indexOf(':');
    if (colon <= 0) return { error: `scope segment '${segment}' must be 'level:id'` };
    const level = segment.slice(0, colon) as ScopeLevel;
    const id = segment.slice(colon + 1);
    const index = SCOPE_LEVELS.indexOf(level);
    if (index === -1) return { error: `unknown scope level '${level}'` };
    if (i === 0 && level !== 'tenant') return { error: "scope must start with 'tenant:<id>'" };
    if (index <= lastLevel) return { error: `scope level '${level}' is out of canonical order or repeated` };
    if (id.length === 0 || id.length > 128 || !SCOPE_ID.test(id)) return { error: `invalid scope id '${id}'` };
    lastLevel = index;
    out.push(`${level}:${id.toLowerCase()}`);
  }
  return { scope: out.join('/'), tenant: (out[0] ?? '').slice('tenant:'.length) };
}
