/**
 * Every Redis key name is built here. Keys of one tenant carry the hash tag `{<tenant_id>}` so a
 * tenant lives in one Cluster slot and every ledger script touches a single slot. Cross-tenant
 * indexes (tenant registry, API-key lookup, audit) are separate keys no tenant script touches.
 *
 * Layout (P = configurable prefix, default "cycles"):
 *   P:{t}:tenant                 hash    tenant record (status, runtime defaults, fields)
 *   P:{t}:b:<scope>:<unit>       hash    budget ledger (allocated, spent, reserved, debt, ...)
 *   P:{t}:budgets                zset    "scope|unit" members, score 0 (lexicographic listing)
 *   P:{t}:bunits                 hash    scope -> comma list of units that have a ledger
 *   P:{t}:rs                     hash    reservation records: short id -> MessagePack record (ADR 0019)
 *   P:{t}:rlog                   stream  reservation short ids, entry id = created_at (listing, purge)
 *   P:{t}:rlogc                  string  last log entry the retention purge examined
 *   P:{t}:exp                    zset    ACTIVE reservation short ids scored by expires_at + grace
 *   P:{t}:ik                     hash    live reserve idempotency: idem_field(key) -> short id
 *   P:{t}:i:<endpoint>:<key>     hash    idempotency record of dry runs, decide, extend, events
 *   P:{t}:r:<reservation_id>     hash    (before ADR 0019) reservation record; migrated at start
 *   P:{t}:rix                    zset    (before ADR 0019) listing index; migrated at start
 *   P:{t}:outbox                 stream  events waiting for the relay
 *   P:{t}:keys                   set     API key ids of the tenant
 *   P:tenants                    zset    tenant registry, scored by created_at
 *   P:key:<key_id>               hash    API key record (hash of the secret, never the secret)
 *   P:keyhash:<sha256>           string  key_id, for authentication
 *   P:{audit}:log:<log_id>       string  audit entry (JSON)
 *   P:{audit}:idx:<tenant|_all>  zset    audit ids scored by timestamp
 */
export class Keys {
  constructor(readonly prefix: string) {}

  /** The hash-tagged prefix shared by every key of one tenant. */
  tenantPrefix(tenantId: string): string {
    return `${this.prefix}:{${tenantId}}:`;
  }

  tenant(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}tenant`;
  }

  budget(tenantId: string, scope: string, unit: string): string {
    return `${this.tenantPrefix(tenantId)}b:${scope}:${unit}`;
  }

  budgetIndex(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}budgets`;
  }

  budgetUnits(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}bunits`;
  }

  /** The tenant's reservation records (one field per reservation, ADR 0019). */
  reservations(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}rs`;
  }

  /** Reservation log: one entry per reservation in creation order. */
  reservationLog(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}rlog`;
  }

  /** Where the retention purge left off in the reservation log. */
  reservationPurgeCursor(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}rlogc`;
  }

  /** Live reserve idempotency index: idempotency key digest -> reservation short id. */
  reserveIdempotencyIndex(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}ik`;
  }

  /** Before ADR 0019: one hash per reservation. Read only by the layout migration. */
  legacyReservation(tenantId: string, reservationId: string): string {
    return `${this.tenantPrefix(tenantId)}r:${reservationId}`;
  }

  /** Before ADR 0019: the listing zset. Read only by the layout migration. */
  legacyReservationIndex(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}rix`;
  }

  expiryIndex(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}exp`;
  }

  idempotency(tenantId: string, endpoint: string, key: string): string {
    return `${this.tenantPrefix(tenantId)}i:${endpoint}:${key}`;
  }

  outbox(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}outbox`;
  }

  tenantKeys(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}keys`;
  }

  tenantRegistry(): string {
    return `${this.prefix}:tenants`;
  }

  apiKey(keyId: string): string {
    return `${this.prefix}:key:${keyId}`;
  }

  apiKeyByHash(secretHash: string): string {
    return `${this.prefix}:keyhash:${secretHash}`;
  }

  /** Pub/sub channel on which API-key and tenant changes invalidate in-process auth caches. */
  authInvalidationChannel(): string {
    return `${this.prefix}:auth-invalidate`;
  }

  auditEntry(logId: string): string {
    return `${this.prefix}:{audit}:log:${logId}`;
  }

  auditIndex(tenantOrAll: string): string {
    return `${this.prefix}:{audit}:idx:${tenantOrAll}`;
  }

  // --- governance listings and API-key lookups (admin plane) ---

  // --- policies and audit (admin plane) ---
  // A policy lives in its tenant's slot, and its id carries the tenant (ADR 0011):
  //   P:{t}:pol:<policy_id>   hash    policy record (JSON-valued fields for caps and limits)
  //   P:{t}:pols              zset    policy ids, score 0 (ascending id order for listing)
  //   P:{t}:polnames          hash    policy name -> policy_id (names are unique per tenant)

  policy(tenantId: string, policyId: string): string {
    return `${this.tenantPrefix(tenantId)}pol:${policyId}`;
  }

  policyIndex(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}pols`;
  }

  policyNames(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}polnames`;
  }

  // --- webhooks (admin plane) ---
  // A subscription lives in its owner's slot (`__system__` for platform-owned ones), and its id
  // carries the owner (`whsub_<owner>_<16 hex>`, as policy ids do, ADR 0011):
  //   P:{t}:wh:<subscription_id>     hash    subscription record (signing secret AES-256-GCM encrypted)
  //   P:{t}:whs                      zset    subscription ids of the owner, score 0 (id order)
  //   P:webhooks                     zset    every subscription id, score 0 (cross-owner admin listing)
  //   P:config:webhook-security      string  WebhookSecurityConfig JSON (absent = defaults)

  webhook(ownerId: string, subscriptionId: string): string {
    return `${this.tenantPrefix(ownerId)}wh:${subscriptionId}`;
  }

  webhookIndex(ownerId: string): string {
    return `${this.tenantPrefix(ownerId)}whs`;
  }

  webhookRegistry(): string {
    return `${this.prefix}:webhooks`;
  }

  webhookSecurityConfig(): string {
    return `${this.prefix}:config:webhook-security`;
  }

  // --- bulk actions (admin plane) ---
  //   P:bulk:<endpoint>:<key>   string  idempotency claim, then the stored response (JSON),
  //                                     15-minute TTL; endpoint = tenants-bulk | budgets-bulk | webhooks-bulk
  // Cross-tenant (a tenant bulk action spans tenants), so it carries no tenant hash tag; every
  // command touches this one key alone.

  bulkIdempotency(endpoint: string, key: string): string {
    return `${this.prefix}:bulk:${endpoint}:${key}`;
  }

  // --- events and deliveries (events service; ADR 0014) ---
  // The relay turns outbox entries into stored events and delivery records:
  //   P:event:<event_id>             string  Event JSON (wire shape), TTL EVENT_TTL_DAYS; no hash tag,
  //                                          so events spread over the Cluster and a by-id GET needs
  //                                          no tenant
  //   P:{t}:events                   zset    event ids of tenant t (or __system__), score timestamp ms
  //   P:events:_all                  zset    every event id, score timestamp ms (cross-tenant listing)
  //   P:events:corr:<correlation_id> set     event ids sharing a correlation id, TTL EVENT_TTL_DAYS
  // A delivery lives in its subscription owner's slot, next to the subscription, so one script
  // updates the delivery and the subscription's failure counters together:
  //   P:{o}:dl:<delivery_id>         hash    WebhookDelivery fields (+ tenant_id of the event, attempted_at_ms)
  //   P:{o}:whd:<subscription_id>    zset    delivery ids of one subscription, score attempted_at ms
  //   P:{o}:replay:<subscription_id> string  replay lock, held while a replay request selects and enqueues
  //   P:outbox-notify                channel tenant ids whose outbox just received an entry

  event(eventId: string): string {
    return `${this.prefix}:event:${eventId}`;
  }

  tenantEvents(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}events`;
  }

  allEvents(): string {
    return `${this.prefix}:events:_all`;
  }

  eventCorrelation(correlationId: string): string {
    return `${this.prefix}:events:corr:${correlationId}`;
  }

  delivery(ownerId: string, deliveryId: string): string {
    return `${this.tenantPrefix(ownerId)}dl:${deliveryId}`;
  }

  subscriptionDeliveries(ownerId: string, subscriptionId: string): string {
    return `${this.tenantPrefix(ownerId)}whd:${subscriptionId}`;
  }

  replayLock(ownerId: string, subscriptionId: string): string {
    return `${this.tenantPrefix(ownerId)}replay:${subscriptionId}`;
  }

  outboxNotifyChannel(): string {
    return `${this.prefix}:outbox-notify`;
  }

  // --- auth-failure throttle ---
  //   P:authfail:<ip>:<window>   string  failed authentications of one client IP in one fixed
  //                                      60 s window (window = floor(epoch ms / 60000)); INCR +
  //                                      PEXPIRE to the window's end (ADR 0016)
  // Cross-tenant (the client is not yet known), so it carries no tenant hash tag; every command
  // touches this one key alone.

  authFailures(ip: string, window: number): string {
    return `${this.prefix}:authfail:${ip}:${window}`;
  }

  // --- tenant close cascade ---
  // Progress of a tenant's close cascade (ADR 0015), in the tenant's slot:
  //   P:{t}:cascade            hash    correlation_id of the originating close, state, timestamps
  //   P:{t}:cascade:released   hash    "scope|unit" -> amount already returned to that ledger by
  //                                    releasing its reservations (summed into the aggregate event)
  //   P:{t}:cascade:keys       hash    key_id -> 'pending:<prior status>' | 'done' | 'skipped'
  // And one cross-tenant index, outside every tenant script:
  //   P:cascade:pending        zset    tenant ids whose cascade has not finished, score = start ms

  cascadeState(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}cascade`;
  }

  cascadeReleased(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}cascade:released`;
  }

  cascadeKeys(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}cascade:keys`;
  }

  cascadePending(): string {
    return `${this.prefix}:cascade:pending`;
  }

  // --- rate limits ---
  // Runtime request limits (ADR 0017), in the tenant's slot so one script checks both buckets:
  //   P:{t}:rl:tenant            string  token-bucket state of tenant t: the epoch microsecond at
  //                                      which the bucket is full again (GCRA theoretical arrival
  //                                      time); PEXPIRE to that moment, so an idle bucket vanishes
  //   P:{t}:rl:key:<key_id>      string  the same for one API key of tenant t

  rateLimitTenant(tenantId: string): string {
    return `${this.tenantPrefix(tenantId)}rl:tenant`;
  }

  rateLimitKey(tenantId: string, keyId: string): string {
    return `${this.tenantPrefix(tenantId)}rl:key:${keyId}`;
  }
}
