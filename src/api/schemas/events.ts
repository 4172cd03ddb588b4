import { Type } from '@sinclair/typebox';

/**
 * Query and path schemas of the event and delivery listings (spec listEvents, getEvent,
 * listTenantEvents, listWebhookDeliveries, listTenantWebhookDeliveries). Unknown parameters are
 * accepted (additive-parameter guarantee). Enumerated values (event_type, category, status,
 * sort_by, sort_dir), the trace_id pattern, dates and the trimmed search length are checked by the
 * domain, which names the parameter and, for tenant keys, says why a type is refused; these
 * schemas only bound the raw text and type the limit.
 */

const Text = (maxLength: number) => Type.Optional(Type.String({ maxLength }));
const Instant = Text(64);
const Cursor = Text(1024);
const Limit = Type.Optional(Type.Integer());

export const AdminEventListQuery = Type.Object(
  {
    tenant_id: Text(64),
    event_type: Text(128),
    category: Text(32),
    scope: Text(1024),
    correlation_id: Text(512),
    trace_id: Text(64),
    request_id: Text(256),
    from: Instant,
    to: Instant,
    search: Text(4096),
    sort_by: Text(32),
    sort_dir: Text(8),
    cursor: Cursor,
    limit: Limit,
  },
  { additionalProperties: true },
);

export const TenantEventListQuery = Type.Object(
  {
    event_type: Text(128),
    category: Text(32),
    scope: Text(1024),
    correlation_id: Text(512),
    from: Instant,
    to: Instant,
    cursor: Cursor,
    limit: Limit,
  },
  { additionalProperties: true },
);

export const EventIdParams = Type.Object({ event_id: Type.String({ minLength: 1, maxLength: 256 }) });

export const DeliveryListQuery = Type.Object(
  {
    status: Text(32),
    from: Instant,
    to: Instant,
    cursor: Cursor,
    limit: Limit,
  },
  { additionalProperties: true },
);
