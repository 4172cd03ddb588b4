-- Tenant close cascade helpers (ADR 0015). Needs "common" (emit, jobj, js, now_ms).

-- Every cascade event carries this provenance tag (EventDataTenantCascade.cascade_reason).
local CASCADE_REASON = 'tenant_closed'

-- The emit context of one cascade step. The correlation id is the one the close recorded in the
-- cascade state when it flipped the tenant, so events of a resumed cascade still name the close
-- that started it; request and trace ids are those of the call doing the work.
local function cascade_ctx(state_key, event_base, request_id, trace_id, actor, tenant)
  return {
    now = now_ms(), event_base = event_base, request_id = request_id, trace_id = trace_id,
    actor = actor, tenant = tenant, source = 'cycles-admin',
    correlation_id = redis.call('HGET', state_key, 'correlation_id') or '',
  }
end

-- Emits one *_via_tenant_cascade event. `parts` are jobj key/raw-value pairs; cascade_reason is
-- appended. The length operator is undefined on a table with nil holes, hence table.maxn.
local function emit_cascade(outbox, ctx, event_type, category, scope, parts)
  local n = table.maxn(parts)
  parts[n + 1] = 'cascade_reason'
  parts[n + 2] = js(CASCADE_REASON)
  return emit(outbox, ctx, event_type, category, scope, jobj(parts))
end
