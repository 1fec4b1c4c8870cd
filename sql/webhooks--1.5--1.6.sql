-- webhooks 1.5 -> 1.6: ALTER EXTENSION webhooks UPDATE
--
-- Cheaper enqueueing (issue 11).  Sessions keep the route of an event type
-- (which webhook is active for it) across transactions instead of reading
-- webhooks.webhooks for every one; a statement trigger on that table sends
-- the relcache invalidation that makes every session read it again after a
-- change.  It fires in every session_replication_role (ENABLE ALWAYS): a
-- replica-mode load of webhooks must invalidate too.  webhook_stats counts
-- the queue through its indexes (a new one for held rows).  No row changes.

\echo Use "ALTER EXTENSION webhooks UPDATE" to load this file. \quit

CREATE FUNCTION webhooks._routes_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'webhooks_routes_changed';
COMMENT ON FUNCTION webhooks._routes_changed() IS
    'Statement trigger on webhooks.webhooks: every session reads the active webhooks again after a change.';
CREATE TRIGGER webhooks_routes_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhooks.webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks._routes_changed();
ALTER TABLE webhooks.webhooks ENABLE ALWAYS TRIGGER webhooks_routes_changed;

-- for the tests: whether this session keeps the route of an event type
CREATE FUNCTION webhooks._route_kept(event_type text) RETURNS boolean
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'webhooks_route_kept';

REVOKE ALL ON FUNCTION webhooks._routes_changed(), webhooks._route_kept(text) FROM PUBLIC;

-- webhook_stats' queue counts no longer read the whole queue: pending from
-- deliveries_due (an index-only scan where vacuum has marked the pages
-- all-visible), in flight from the range of that index after now() (a
-- claim sets a row's due time to its lease's end), held from a new partial
-- index.  The queue keeps the pages of its largest backlog (1.5), and a
-- sequential count read all of them: 84-107 ms after three 300,000-event
-- backlogs in the soak.
CREATE INDEX deliveries_held ON webhooks.deliveries (webhook_id) WHERE state = 'held';

CREATE OR REPLACE VIEW webhooks.webhook_stats AS
SELECT w.id AS webhook_id, w.name AS webhook_name, w.event_type, w.is_active,
       coalesce(p.pending, 0) + coalesce(b.queued, 0) AS pending,
       coalesce(f.in_flight, 0) AS in_flight,
       coalesce(h.held, 0) AS held,
       coalesce(l.delivered, 0) AS delivered,
       coalesce(c.failed_attempts, 0) AS failed_attempts,
       coalesce(c.dead, 0) AS dead,
       l.last_success,
       c.last_failure,
       l.latency_p50_ms,
       l.latency_p99_ms
  FROM webhooks.webhooks w
  LEFT JOIN (
    SELECT webhook_id, count(*) AS pending
      FROM webhooks.deliveries WHERE state = 'pending' GROUP BY webhook_id) p ON p.webhook_id = w.id
  LEFT JOIN (
    SELECT webhook_id, count(*) AS in_flight
      FROM webhooks.deliveries
     WHERE state = 'pending' AND next_attempt_at > now() AND lease_until > now()
     GROUP BY webhook_id) f ON f.webhook_id = w.id
  LEFT JOIN (
    SELECT webhook_id, count(*) AS held
      FROM webhooks.deliveries WHERE state = 'held' GROUP BY webhook_id) h ON h.webhook_id = w.id
  LEFT JOIN (
    SELECT q.webhook_id, sum(q.n)::bigint AS delivered, max(q.last_success) AS last_success,
           webhooks._bucket_ms(min(q.bucket) FILTER (WHERE q.cum >= 0.5 * q.total)) AS latency_p50_ms,
           webhooks._bucket_ms(min(q.bucket) FILTER (WHERE q.cum >= 0.99 * q.total)) AS latency_p99_ms
      FROM (SELECT a.webhook_id, a.bucket, a.n, a.last_success,
                   sum(a.n) OVER (PARTITION BY a.webhook_id ORDER BY a.bucket) AS cum,
                   sum(a.n) OVER (PARTITION BY a.webhook_id) AS total
              FROM (SELECT webhook_id, bucket, sum(deliveries) AS n, max(last_success) AS last_success
                      FROM webhooks.history_latency GROUP BY webhook_id, bucket) a) q
     WHERE q.total > 0
     GROUP BY q.webhook_id) l ON l.webhook_id = w.id
  LEFT JOIN (
    SELECT webhook_id, sum(failed_attempts)::bigint AS failed_attempts, sum(dead)::bigint AS dead,
           max(last_failure) AS last_failure
      FROM webhooks.history_counts GROUP BY webhook_id) c ON c.webhook_id = w.id
  LEFT JOIN (
    SELECT webhook_id, sum(events) AS queued
      FROM webhooks.event_batches GROUP BY webhook_id) b ON b.webhook_id = w.id;
