-- webhooks 1.4 -> 1.5: ALTER EXTENSION webhooks UPDATE
--
-- Sustained operation (issue 11).  The queue tables keep the pages a backlog
-- made them grow to: autovacuum no longer truncates webhooks.deliveries and
-- webhooks.event_batches.  Truncating them takes an ACCESS EXCLUSIVE lock
-- that every claim, insert and split waits behind, and the next backlog has
-- to extend the file again page by page; the space stays bounded by the
-- largest backlog and is reused through the free space map.  No row changes.

\echo Use "ALTER EXTENSION webhooks UPDATE" to load this file. \quit

-- (their TOAST tables too: a batch's bodies live there, and a truncated
-- TOAST table locks out the worker's split of the batches)
ALTER TABLE webhooks.deliveries SET (vacuum_truncate = false, toast.vacuum_truncate = false);
ALTER TABLE webhooks.event_batches SET (vacuum_truncate = false, toast.vacuum_truncate = false);
