/* webhooks--1.0--1.1.sql: hardening (issue 8) */

\echo Use "ALTER EXTENSION webhooks UPDATE TO '1.1'" to load this file. \quit

-- Every object below is schema-qualified, and every function pins
-- search_path = pg_catalog, pg_temp: nothing another role creates can be
-- resolved by our SQL (CVE-2018-1058).

------------------------------------------------------------------------------
-- Delivery identity: webhook-ids fixed at enqueue, leases with tokens
------------------------------------------------------------------------------

-- Refuse to run inside a schema that someone else controls: the owner of
-- a schema can drop and replace what is in it.
DO $owner$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_namespace n
              JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
             WHERE n.nspname = 'webhooks') THEN
        RAISE EXCEPTION 'schema "webhooks" is not owned by a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The extension''s worker runs its objects as a superuser; a schema owned by another role could replace them.',
                  HINT = 'Drop or rename that schema, then CREATE EXTENSION webhooks again.';
    END IF;
END
$owner$;

CREATE FUNCTION webhooks._new_msg_id() RETURNS text
    AS 'MODULE_PATHNAME', 'webhooks_new_msg_id' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION webhooks._new_msg_id() IS
    'A new webhook-id: "msg_" and the 32 hexadecimal digits of a UUIDv7 (time-ordered, unique across installs and servers).';
CREATE FUNCTION webhooks._batch_msg_id(first_msg_id text, event_offset bigint) RETURNS text
    AS 'MODULE_PATHNAME', 'webhooks_batch_msg_id' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION webhooks._batch_msg_id(text, bigint) IS
    'The webhook-id of an event of a batch: the batch''s first id moved by the event''s offset (0 = first), the same at every split.';

-- Deliveries made before 1.1 keep the id they were sent with: msg_<id>.
ALTER TABLE webhooks.deliveries ADD COLUMN msg_id text, ADD COLUMN lease_token bigint;
UPDATE webhooks.deliveries SET msg_id = 'msg_' || id::text;
ALTER TABLE webhooks.deliveries
    ALTER COLUMN msg_id SET NOT NULL,
    ALTER COLUMN msg_id SET DEFAULT webhooks._new_msg_id();
COMMENT ON COLUMN webhooks.deliveries.msg_id IS
    'The webhook-id header: fixed when the event is enqueued, the same on every attempt and redelivery, never reused.';
COMMENT ON COLUMN webhooks.deliveries.lease_token IS
    'Set by each claim: a result is recorded only while the lease that produced it is still the current one.';

ALTER TABLE webhooks.event_batches ADD COLUMN first_msg_id text;
UPDATE webhooks.event_batches SET first_msg_id = webhooks._new_msg_id();
ALTER TABLE webhooks.event_batches
    ALTER COLUMN first_msg_id SET NOT NULL,
    ALTER COLUMN first_msg_id SET DEFAULT webhooks._new_msg_id();
COMMENT ON COLUMN webhooks.event_batches.first_msg_id IS
    'The webhook-id of the batch''s first event; the others follow it (webhooks._batch_msg_id).';

ALTER TABLE webhooks.webhook_logs ADD COLUMN msg_id text;
-- Attempts logged by 1.0 were sent as msg_<delivery id>: say so, so that a
-- webhook-id a receiver reports finds its log rows whatever their age.
UPDATE webhooks.webhook_logs SET msg_id = 'msg_' || delivery_id::text WHERE delivery_id IS NOT NULL;
COMMENT ON COLUMN webhooks.webhook_logs.msg_id IS 'The webhook-id of the attempt (the delivery''s msg_id).';

-- One delivery's outcome, as the worker hands it to _record_results().
CREATE TYPE webhooks._delivery_result AS (
    delivery_id     bigint,
    lease_token     bigint,
    state           text,        -- delivered, pending (retry or 410), dead
    status          integer,
    error           text,
    next_attempt_at timestamptz,
    finished_at     timestamptz,
    log_outcome     text,        -- NULL: no log row (delivered)
    log_next_at     timestamptz,
    occurred_at     timestamptz,
    webhook_id      bigint,
    webhook_name    text,
    msg_id          text,
    attempt         integer,
    duration_ms     double precision,
    payload         text
);

-- Record outcomes.  Only rows whose lease is still the one that produced the
-- result are written (a late result never overwrites a newer attempt, or a
-- reinstall's rows); rows or webhooks locked by another session are skipped,
-- never waited for: the ids written are returned, the worker keeps the rest
-- for its next flush.  A retry of an inactive webhook is held, judged on
-- the webhook row locked here, so a concurrent activation cannot strand it.
-- Its statement is planned on every call: a cached plan made while the
-- queue held a few rows joined by scanning all of deliveries, and kept doing
-- so once a backlog arrived.
CREATE FUNCTION webhooks._record_results(results webhooks._delivery_result[]) RETURNS SETOF bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    RETURN QUERY
    WITH r AS MATERIALIZED (SELECT * FROM pg_catalog.unnest(results)),
    w AS MATERIALIZED (
        SELECT x.id, x.is_active FROM webhooks.webhooks x
         WHERE x.id IN (SELECT r.webhook_id FROM r)
           FOR SHARE SKIP LOCKED),
    mine AS MATERIALIZED (
        SELECT d.id FROM webhooks.deliveries d
          JOIN r ON r.delivery_id = d.id AND r.lease_token = d.lease_token
          JOIN w ON w.id = d.webhook_id
           FOR UPDATE OF d SKIP LOCKED),
    upd AS (
        UPDATE webhooks.deliveries d SET
               state = CASE WHEN r.state = 'pending' AND NOT w.is_active THEN 'held' ELSE r.state END,
               next_attempt_at = coalesce(r.next_attempt_at, d.next_attempt_at),
               lease_until = NULL, lease_token = NULL, finished_at = r.finished_at,
               last_status = r.status, last_error = r.error
          FROM r, w
         WHERE d.id IN (SELECT mine.id FROM mine) AND r.delivery_id = d.id AND w.id = d.webhook_id
        RETURNING d.id),
    logs AS (
        INSERT INTO webhooks.webhook_logs (occurrence_date, webhook_name, webhook_id, status, error_content,
               webhook_payload, delivery_id, attempt, duration_ms, outcome, next_attempt_at, msg_id)
        SELECT r.occurred_at, r.webhook_name, r.webhook_id, r.status, r.error,
               webhooks._json_or_null(r.payload), r.delivery_id, r.attempt, r.duration_ms,
               r.log_outcome, r.log_next_at, r.msg_id
          FROM r JOIN upd ON upd.id = r.delivery_id
         WHERE r.log_outcome IS NOT NULL)
    SELECT upd.id FROM upd;
END
$$;
COMMENT ON FUNCTION webhooks._record_results(webhooks._delivery_result[]) IS
    'Used by the worker: writes delivery outcomes and their log rows; returns the delivery ids written (locked rows are left for a later call).';

-- 410 Gone: the receiver asks us to stop.  A webhook row locked by another
-- session is skipped (its delivery was left pending and asks again).
CREATE FUNCTION webhooks._deactivate_gone(webhook_ids bigint[], reason text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE webhooks.webhooks w SET is_active = false, deactivated_reason = reason
     WHERE w.id IN (SELECT x.id FROM webhooks.webhooks x
                     WHERE x.id = ANY (webhook_ids) AND x.is_active FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION webhooks._deactivate_gone(bigint[], text) IS
    'Used by the worker: deactivates webhooks whose target answered 410 Gone (rows locked by another session are left for the next answer).';

-- delete_webhook(..., discard_pending) logs each discarded event with its webhook-id
CREATE OR REPLACE FUNCTION webhooks.delete_webhook(name text, discard_pending boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(name);
BEGIN
    IF discard_pending THEN
        INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, error_content, webhook_payload,
                                           delivery_id, attempt, outcome, msg_id)
        SELECT w.name, w.id, 'discarded: webhook deleted by ' || session_user, webhooks._json_or_null(d.body),
               d.id, d.attempts, 'discarded', d.msg_id
          FROM webhooks.deliveries d
         WHERE d.webhook_id = w.id AND d.state IN ('pending', 'held');
        DELETE FROM webhooks.deliveries d WHERE d.webhook_id = w.id AND d.state IN ('pending', 'held');
        INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, error_content, webhook_payload, outcome, msg_id)
        SELECT w.name, w.id, 'discarded: webhook deleted by ' || session_user, webhooks._json_or_null(x.body),
               'discarded', webhooks._batch_msg_id(b.first_msg_id, x.i - 1)
          FROM webhooks.event_batches b, pg_catalog.string_to_table(b.bodies, E'\n') WITH ORDINALITY AS x(body, i)
         WHERE b.webhook_id = w.id;
        DELETE FROM webhooks.event_batches b WHERE b.webhook_id = w.id;
    END IF;
    DELETE FROM webhooks.webhooks x WHERE x.id = w.id;
END
$$;

-- The views show the webhook-id too (new columns go last).
CREATE OR REPLACE VIEW webhooks.pending_deliveries AS
SELECT d.id AS delivery_id, w.name AS webhook_name, d.webhook_id, d.event_type, d.state,
       coalesce(d.lease_until > now(), false) AS in_flight, d.attempts, d.next_attempt_at, d.created_at,
       d.last_attempt_at, d.last_status, d.last_error, d.msg_id
  FROM webhooks.deliveries d LEFT JOIN webhooks.webhooks w ON w.id = d.webhook_id
 WHERE d.state IN ('pending', 'held');

CREATE OR REPLACE VIEW webhooks.dead_deliveries AS
SELECT d.id AS delivery_id, w.name AS webhook_name, d.webhook_id, d.event_type, d.attempts,
       d.created_at, d.finished_at AS died_at, d.last_status, d.last_error,
       webhooks._json_or_null(d.body) AS payload, d.msg_id
  FROM webhooks.deliveries d LEFT JOIN webhooks.webhooks w ON w.id = d.webhook_id
 WHERE d.state = 'dead';

------------------------------------------------------------------------------
-- Poison rows: CHECK constraints
------------------------------------------------------------------------------

UPDATE webhooks.deliveries SET attempts = 0 WHERE attempts < 0;
ALTER TABLE webhooks.deliveries ADD CONSTRAINT deliveries_attempts_check CHECK (attempts >= 0);
-- 1.0 let a hand-written negative attempts reach the log (delete_webhook's discard rows)
UPDATE webhooks.webhook_logs SET attempt = 0 WHERE attempt < 0;
ALTER TABLE webhooks.webhook_logs ADD CONSTRAINT webhook_logs_attempt_check CHECK (attempt >= 0);
-- A batch's webhook-id is what every event of it derives from: one written
-- by hand that _batch_msg_id cannot move would stall every split behind it.
-- (A delivery's msg_id is checked at send time instead, like its URL and
-- headers: a CHECK is evaluated on every UPDATE, and the queue's rows are
-- updated on every claim and result.)
ALTER TABLE webhooks.event_batches ADD CONSTRAINT event_batches_first_msg_id_check
    CHECK (first_msg_id OPERATOR(pg_catalog.~) '^msg_[0-9a-f]{32}$');

------------------------------------------------------------------------------
-- Races: activation, split, claim, record, prune
------------------------------------------------------------------------------

-- Split batches into deliveries.  The batch's webhook row is locked FOR
-- SHARE while its events are stored as held or pending: an activation (an
-- UPDATE of that row) then either finishes first, and the split sees the
-- webhook active, or waits for the split to commit, and its trigger sees
-- the held rows and releases them.  Batches whose row or webhook another
-- session holds are skipped (the worker comes back within a second).  Every
-- event's webhook-id derives from the batch's, so a split that a crash
-- undid gives the same ids when it is done again.
CREATE OR REPLACE FUNCTION webhooks._expand_batches(max_batches integer DEFAULT 1) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
    n bigint := 0;
    k bigint;
    done integer := 0;
BEGIN
    WHILE done < max_batches LOOP
        SELECT x.id, w.is_active INTO b
          FROM webhooks.event_batches x JOIN webhooks.webhooks w ON w.id = x.webhook_id
         ORDER BY x.id LIMIT 1
           FOR UPDATE OF x SKIP LOCKED FOR SHARE OF w SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        WITH gone AS (DELETE FROM webhooks.event_batches x WHERE x.id = b.id RETURNING x.*)
        INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state, created_at, msg_id)
        SELECT g.webhook_id, g.event_type, e.body,
               CASE WHEN b.is_active THEN 'pending' ELSE 'held' END,
               g.created_at, webhooks._batch_msg_id(g.first_msg_id, e.i - 1)
          FROM gone g, pg_catalog.string_to_table(g.bodies, E'\n') WITH ORDINALITY AS e(body, i)
         ORDER BY e.i;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
        done := done + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Redeliveries queue a delivery as held when its webhook is inactive: they
-- read is_active under a FOR SHARE lock on the webhook row, taken before
-- the deliveries are touched (the order of an activation and its trigger).
-- An activation then either committed first, and the delivery is queued
-- pending, or waits for the redelivery to commit, and its trigger sees the
-- held row and releases it; a deactivation likewise holds what was queued
-- pending.  Without the lock a held row could be left behind an active
-- webhook, with nothing to release it.
CREATE OR REPLACE FUNCTION webhooks.redeliver(delivery_id bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d webhooks.deliveries;
BEGIN
    PERFORM FROM webhooks.webhooks w
     WHERE w.id = (SELECT x.webhook_id FROM webhooks.deliveries x WHERE x.id = delivery_id)
       FOR SHARE;
    SELECT * INTO d FROM webhooks.deliveries x WHERE x.id = delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delivery % does not exist', delivery_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Delivered and dead deliveries are kept for webhooks.log_retention.';
    END IF;
    IF d.state IN ('pending', 'held') THEN
        RAISE EXCEPTION 'delivery % is still %', delivery_id, d.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only delivered and dead deliveries can be redelivered.';
    END IF;
    IF NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = d.webhook_id) THEN
        RAISE EXCEPTION 'the webhook of delivery % no longer exists', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A delivery is bound to the webhook that was active when it was enqueued.',
                  HINT = 'Its payload is in webhooks.dead_deliveries; enqueue it again with webhooks.emit().';
    END IF;
    UPDATE webhooks.deliveries x SET
        state = CASE WHEN w.is_active THEN 'pending' ELSE 'held' END,
        attempts = 0, next_attempt_at = now(), lease_until = NULL, lease_token = NULL, finished_at = NULL
      FROM webhooks.webhooks w
     WHERE x.id = delivery_id AND w.id = x.webhook_id;
    PERFORM webhooks._wake_worker();
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION webhooks.redeliver_dead(webhook_name text, since timestamptz DEFAULT '-infinity') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(webhook_name, false);
    n bigint;
BEGIN
    SELECT * INTO w FROM webhooks.webhooks x WHERE x.id = w.id FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook "%" does not exist', webhook_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM webhooks.webhooks lists the webhooks.';
    END IF;
    UPDATE webhooks.deliveries x SET
        state = CASE WHEN w.is_active THEN 'pending' ELSE 'held' END,
        attempts = 0, next_attempt_at = now(), lease_until = NULL, lease_token = NULL, finished_at = NULL
     WHERE x.webhook_id = w.id AND x.state = 'dead' AND x.finished_at >= since;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM webhooks._wake_worker();
    RETURN n;
END
$$;

-- Hold the due rows of inactive webhooks that a claim found among its
-- candidates (an event whose enqueue was still open when its webhook was
-- deactivated).  is_active is re-read under a FOR SHARE lock on the webhook
-- row, as the split and _record_results() do: an activation that committed
-- since the candidates were read leaves the row pending (the next claim
-- takes it), one that is running makes the row wait for the next claim
-- (webhook skipped, never waited for), and one that comes later waits for
-- this transaction, then its trigger sees the held row and releases it.
CREATE FUNCTION webhooks._hold_inactive(delivery_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE webhooks.deliveries d SET state = 'held'
     WHERE d.id = ANY (delivery_ids) AND d.state = 'pending'
       AND d.webhook_id IN (SELECT w.id FROM webhooks.webhooks w
                             WHERE NOT w.is_active
                               AND w.id IN (SELECT x.webhook_id FROM webhooks.deliveries x
                                             WHERE x.id = ANY (delivery_ids))
                               FOR SHARE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION webhooks._hold_inactive(bigint[]) IS
    'Used by the worker''s claim: holds the given pending deliveries whose webhook is inactive (webhooks locked by another session are skipped); returns how many.';

-- Prune history older than cutoff, at most max_rows rows from each table.
-- Rows another session holds are skipped, and the DELETE itself re-checks
-- state and age, so a delivery redelivered while a prune runs survives.
CREATE FUNCTION webhooks._prune(cutoff timestamptz, max_rows integer) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    m bigint;
BEGIN
    DELETE FROM webhooks.deliveries d
     WHERE d.id IN (SELECT x.id FROM webhooks.deliveries x
                     WHERE x.finished_at < cutoff AND x.state IN ('delivered', 'dead')
                     LIMIT max_rows FOR UPDATE SKIP LOCKED)
       AND d.finished_at < cutoff AND d.state IN ('delivered', 'dead');
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM webhooks.webhook_logs l
     WHERE l.id IN (SELECT x.id FROM webhooks.webhook_logs x
                     WHERE x.occurrence_date < cutoff LIMIT max_rows FOR UPDATE SKIP LOCKED)
       AND l.occurrence_date < cutoff;
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n + m;
END
$$;
COMMENT ON FUNCTION webhooks._prune(timestamptz, integer) IS
    'Used by the worker: deletes delivered/dead deliveries and log rows older than cutoff (at most max_rows of each); returns how many.';

-- Events whose webhook was deleted while they were being enqueued (a race
-- that the delete guard cannot see) die with a log row, never silently.
CREATE FUNCTION webhooks._sweep_orphans() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    m bigint;
BEGIN
    WITH o AS (
        UPDATE webhooks.deliveries d SET state = 'dead', finished_at = pg_catalog.now(),
               lease_until = NULL, lease_token = NULL, last_error = 'webhook no longer exists'
         WHERE d.id IN (SELECT x.id FROM webhooks.deliveries x
                         WHERE x.state IN ('pending', 'held')
                           AND NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = x.webhook_id)
                           FOR UPDATE SKIP LOCKED)
           AND d.state IN ('pending', 'held')
        RETURNING d.*)
    INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, delivery_id, attempt,
                                       outcome, msg_id)
    SELECT o.webhook_id, 'webhook no longer exists', webhooks._json_or_null(o.body), o.id, o.attempts,
           'dead', o.msg_id
      FROM o;
    GET DIAGNOSTICS n = ROW_COUNT;
    WITH o AS (
        DELETE FROM webhooks.event_batches b
         WHERE b.id IN (SELECT x.id FROM webhooks.event_batches x
                         WHERE NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = x.webhook_id)
                           FOR UPDATE SKIP LOCKED)
        RETURNING b.*)
    INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, outcome, msg_id)
    SELECT o.webhook_id, 'webhook no longer exists', webhooks._json_or_null(e.body), 'dead',
           webhooks._batch_msg_id(o.first_msg_id, e.i - 1)
      FROM o, pg_catalog.string_to_table(o.bodies, E'\n') WITH ORDINALITY AS e(body, i);
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n + m;
END
$$;
COMMENT ON FUNCTION webhooks._sweep_orphans() IS
    'Used by the worker''s maintenance: queued events whose webhook no longer exists go dead with a log row.';

------------------------------------------------------------------------------
-- Payload dates, trigger timing
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Events that found no active webhook
------------------------------------------------------------------------------

-- emit() and the trigger count them in backend memory, publish the counts at
-- commit to shared memory (counters per database and event type, growing
-- from counting_since, when shared memory was set up: the server's start),
-- and the worker's maintenance folds them in here once a minute
-- (src/unrouted.c).  shared_since and shared_folded remember how much of
-- which counter is already in events: the view adds the rest, so it is
-- exact at any time, and folding twice adds nothing.
CREATE TABLE webhooks.unrouted_event_totals (
    event_type      text PRIMARY KEY,
    events          bigint NOT NULL DEFAULT 0 CHECK (events >= 0),
    last_dropped_at timestamptz,
    shared_since    timestamptz,
    shared_folded   bigint NOT NULL DEFAULT 0 CHECK (shared_folded >= 0)
);
COMMENT ON TABLE webhooks.unrouted_event_totals IS
    'The saved part of webhooks.unrouted_events, folded in by the worker every minute: read the view.';
COMMENT ON COLUMN webhooks.unrouted_event_totals.shared_since IS
    'The start of the shared-memory counters that shared_folded refers to (a server start).';
COMMENT ON COLUMN webhooks.unrouted_event_totals.shared_folded IS
    'The value of this database''s shared-memory counter already added to events.';

CREATE FUNCTION webhooks._unrouted_shared(
    OUT event_type text, OUT events bigint, OUT last_dropped_at timestamptz, OUT counting_since timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'webhooks_unrouted_shared' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION webhooks._unrouted_shared() IS
    'This database''s shared-memory counts of events that found no active webhook, since counting_since.';

-- Used by the worker's maintenance.  Rows another session holds (a reset in
-- progress) are skipped, not waited for: the next pass folds them.
CREATE FUNCTION webhooks._fold_unrouted_events() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    INSERT INTO webhooks.unrouted_event_totals (event_type)
    SELECT e.event_type FROM webhooks.event_types e
    ON CONFLICT (event_type) DO NOTHING;

    UPDATE webhooks.unrouted_event_totals t
       SET events = t.events + (s.events - CASE WHEN t.shared_since = s.counting_since
                                                THEN t.shared_folded ELSE 0::bigint END),
           last_dropped_at = GREATEST(t.last_dropped_at, s.last_dropped_at),
           shared_since = s.counting_since,
           shared_folded = s.events
      FROM webhooks._unrouted_shared() s
     WHERE s.event_type = t.event_type
       AND (t.shared_since IS DISTINCT FROM s.counting_since OR t.shared_folded < s.events)
       AND t.event_type IN (SELECT x.event_type FROM webhooks.unrouted_event_totals x
                             FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION webhooks._fold_unrouted_events() IS
    'Used by the worker''s maintenance: adds the shared-memory counts of unrouted events not yet saved to webhooks.unrouted_event_totals; returns the event types updated.';

CREATE VIEW webhooks.unrouted_events AS
SELECT e.event_type,
       coalesce(t.events, 0) + u.unsaved AS events,
       CASE WHEN u.unsaved > 0 THEN GREATEST(t.last_dropped_at, s.last_dropped_at)
            ELSE t.last_dropped_at END AS last_dropped_at
  FROM webhooks.event_types e
  LEFT JOIN webhooks.unrouted_event_totals t ON t.event_type = e.event_type
  LEFT JOIN webhooks._unrouted_shared() s ON s.event_type = e.event_type
 CROSS JOIN LATERAL (
       SELECT GREATEST(coalesce(s.events, 0)
                       - CASE WHEN t.shared_since = s.counting_since THEN t.shared_folded ELSE 0::bigint END,
                       0::bigint) AS unsaved) u;
COMMENT ON VIEW webhooks.unrouted_events IS
    'Per event type: committed events that found no active webhook and were not delivered, and when the last one committed. Counted since the extension was installed or webhooks.reset_unrouted_events(); a server restart loses up to the last minute''s.';
COMMENT ON COLUMN webhooks.unrouted_events.events IS
    'Events (emit() calls, trigger rows) of committed transactions that found no active webhook for their type.';
COMMENT ON COLUMN webhooks.unrouted_events.last_dropped_at IS
    'When the last transaction with such an event committed; NULL if none since the last reset.';

CREATE FUNCTION webhooks.reset_unrouted_events() RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO webhooks.unrouted_event_totals AS t
           (event_type, events, last_dropped_at, shared_since, shared_folded)
    SELECT e.event_type, 0, NULL, s.counting_since, coalesce(s.events, 0)
      FROM webhooks.event_types e
      LEFT JOIN webhooks._unrouted_shared() s ON s.event_type = e.event_type
    ON CONFLICT (event_type) DO UPDATE
       SET events = 0, last_dropped_at = NULL,
           shared_since = excluded.shared_since, shared_folded = excluded.shared_folded;
$$;
COMMENT ON FUNCTION webhooks.reset_unrouted_events() IS
    'Sets the counts of webhooks.unrouted_events of this database back to zero (transactional).';

-- counting starts at installation (shared memory may hold counts of an
-- earlier installation in this database)
SELECT webhooks.reset_unrouted_events();


------------------------------------------------------------------------------
-- Privileges of the objects added by this version
------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION webhooks._new_msg_id(), webhooks._batch_msg_id(text, bigint),
    webhooks._record_results(webhooks._delivery_result[]), webhooks._deactivate_gone(bigint[], text),
    webhooks._prune(timestamptz, integer), webhooks._sweep_orphans(), webhooks._hold_inactive(bigint[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks._new_msg_id(), webhooks._batch_msg_id(text, bigint) TO webhooks_admin;
REVOKE ALL ON webhooks.unrouted_event_totals, webhooks.unrouted_events FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks._unrouted_shared(), webhooks._fold_unrouted_events(),
    webhooks.reset_unrouted_events() FROM PUBLIC;
GRANT SELECT ON webhooks.unrouted_events TO webhooks_reader, webhooks_admin;
GRANT EXECUTE ON FUNCTION webhooks._unrouted_shared() TO webhooks_reader, webhooks_admin;
GRANT SELECT, INSERT, UPDATE ON webhooks.unrouted_event_totals TO webhooks_admin;
GRANT EXECUTE ON FUNCTION webhooks.reset_unrouted_events() TO webhooks_admin;

-- wake the worker so it serves the updated install at once
SELECT webhooks._wake_worker();
