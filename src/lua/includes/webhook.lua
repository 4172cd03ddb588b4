-- Webhook lifecycle events (admin digest §5.6), carrying the correlation id the protocol names
-- for each mutation (ctx.correlation_id). Needs "common" (emit). Webhook events have no scope.
local function emit_webhook(outbox, ctx, event_type, data_json)
  ctx.source = 'cycles-admin'
  emit(outbox, ctx, event_type, 'webhook', nil, data_json)
end
