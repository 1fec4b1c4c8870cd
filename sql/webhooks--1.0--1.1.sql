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
CREATE FUNCTION webhooks._record_results(results webhooks._delivery_result[]) RETURNS SETOF bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
ALTER TABLE webhooks.webhook_logs ADD CONSTRAINT webhook_logs_attempt_check CHECK (attempt >= 0);
-- webhook-ids are written into request headers and derived from (batches):
-- one written by hand must not add a header (a line break) or stall every
-- split behind it (a batch id that _batch_msg_id cannot move).  Ids from
-- 1.0 (msg_<id>) and the extension's (msg_ + 32 hex digits) pass.
ALTER TABLE webhooks.deliveries ADD CONSTRAINT deliveries_msg_id_check
    CHECK (msg_id OPERATOR(pg_catalog.~) '^msg_[0-9A-Za-z]{1,64}$');
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
         WHERE d.state IN ('pending', 'held')
           AND NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = d.webhook_id)
        RETURNING d.*)
    INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, delivery_id, attempt,
                                       outcome, msg_id)
    SELECT o.webhook_id, 'webhook no longer exists', webhooks._json_or_null(o.body), o.id, o.attempts,
           'dead', o.msg_id
      FROM o;
    GET DIAGNOSTICS n = ROW_COUNT;
    WITH o AS (
        DELETE FROM webhooks.event_batches b
         WHERE NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = b.webhook_id)
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

------------------------------------------------------------------------------
-- Privileges of the objects added by this version
------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION webhooks._new_msg_id(), webhooks._batch_msg_id(text, bigint),
    webhooks._record_results(webhooks._delivery_result[]), webhooks._deactivate_gone(bigint[], text),
    webhooks._prune(timestamptz, integer), webhooks._sweep_orphans() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks._new_msg_id(), webhooks._batch_msg_id(text, bigint) TO webhooks_admin;
