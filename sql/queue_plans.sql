-- The maintenance's statements over the queue keep linear plans whatever the
-- statistics said when their plans were cached.  The queue is small most of
-- the time (it holds live work only), so autovacuum often records a nearly
-- empty table; a plan cached then must not turn quadratic once a backlog
-- arrives.  Counted as tuples read in this transaction
-- (pg_stat_xact_user_tables), not timed.
ALTER TABLE webhooks.deliveries SET (autovacuum_enabled = false);
INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
VALUES ('plans', 'EmailOpens', 'https://hooks.example.com/plans', true);
INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
SELECT id, 'EmailOpens', '{}' FROM webhooks.webhooks WHERE name = 'plans';
-- the statistics of a queue holding one row; the plans are cached now
VACUUM ANALYZE webhooks.deliveries;
SELECT webhooks._sweep_orphans() AS swept;
-- a backlog of 3,000
INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
SELECT w.id, 'EmailOpens', '{}' FROM webhooks.webhooks w, generate_series(1, 3000) WHERE w.name = 'plans';
BEGIN;
SELECT webhooks._sweep_orphans() AS swept;
SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) < 10 * 3001 AS linear
  FROM pg_stat_xact_user_tables WHERE relid = 'webhooks.deliveries'::regclass;
COMMIT;
-- Drained, the queue keeps its pages (1.5: vacuum_truncate = false on the
-- queue tables): VACUUM frees them for the next backlog instead of taking
-- the ACCESS EXCLUSIVE lock that truncating needs
SELECT pg_relation_size('webhooks.deliveries') AS backlog_size \gset
DELETE FROM webhooks.deliveries;
VACUUM webhooks.deliveries;
SELECT pg_relation_size('webhooks.deliveries') = :backlog_size AS pages_kept,
       :backlog_size > 8192 * 10 AS backlog_took_pages;
SELECT c.relname, c.reloptions, t.reloptions AS toast_reloptions
  FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid
 WHERE c.oid IN ('webhooks.deliveries'::regclass, 'webhooks.event_batches'::regclass) ORDER BY c.relname;
-- webhook_stats counts the queue through its indexes (1.6), not by reading
-- every page the backlog left: pending, in flight (leased: due at the
-- lease's end) and held rows, then no sequential scan of the queue
INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state, next_attempt_at, lease_until)
SELECT w.id, 'EmailOpens', '{}', s.state, now() + s.due, now() + s.lease
  FROM webhooks.webhooks w,
       (VALUES ('pending', interval '0', NULL::interval), ('pending', interval '1 minute', interval '1 minute'),
               ('pending', interval '1 hour', NULL), ('held', interval '0', NULL)) s(state, due, lease)
 WHERE w.name = 'plans';
VACUUM webhooks.deliveries;
-- (the backend's counts since its last flush of statistics: the difference
-- within one transaction)
BEGIN;
SELECT seq_scan AS seq_before FROM pg_stat_xact_user_tables WHERE relid = 'webhooks.deliveries'::regclass \gset
SELECT pending, in_flight, held FROM webhooks.webhook_stats WHERE webhook_name = 'plans';
SELECT seq_scan - :seq_before AS seq_scans FROM pg_stat_xact_user_tables WHERE relid = 'webhooks.deliveries'::regclass;
COMMIT;
DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.webhooks WHERE name = 'plans';
ALTER TABLE webhooks.deliveries RESET (autovacuum_enabled);
