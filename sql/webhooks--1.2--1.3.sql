-- webhooks 1.2 -> 1.3: ALTER EXTENSION webhooks UPDATE
--
-- Bounded storage (issue 11).  The queue, webhooks.deliveries, holds live
-- work only (pending and held deliveries); a delivery that finishes leaves
-- it in the transaction that records its outcome, for
-- webhooks.delivery_history.  That table and webhooks.webhook_logs are
-- partitioned by time and lose whole partitions past
-- webhooks.log_retention, so storage is bounded at any rate and no row is
-- deleted one by one.  webhook_stats reads per-period summaries kept with
-- the history, not the history itself.
--
-- The update moves a 1.2 install's finished deliveries and log rows into
-- the new tables: no row is lost, ids and webhook-ids are kept
-- (test/t/067_upgrade_1_2.pl).

\echo Use "ALTER EXTENSION webhooks UPDATE" to load this file. \quit

------------------------------------------------------------------------------
-- Periods: the width of a partition, and of a statistics row
------------------------------------------------------------------------------

-- webhooks.log_retention in seconds, as the server has it now
CREATE FUNCTION webhooks._log_retention_s() RETURNS integer
    AS 'MODULE_PATHNAME', 'webhooks_log_retention_s' LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;

-- 24 partitions per retention period, never narrower than 10 seconds: 7 days
-- of retention (the default) make 7-hour partitions, 1 day 1-hour ones, and
-- the 1-minute minimum (for tests) 10-second ones.
CREATE FUNCTION webhooks._period_width(retention_s integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest(retention_s OPERATOR(pg_catalog./) 24, 10)
$$;

-- the start of the period holding t: periods are aligned on the Unix epoch
CREATE FUNCTION webhooks._period_start(t timestamptz, width integer) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.to_timestamp(pg_catalog.floor(pg_catalog.date_part('epoch', t)
                                   OPERATOR(pg_catalog./) width::double precision)
                                   OPERATOR(pg_catalog.*) width::double precision)
$$;

-- Latency histogram buckets of enqueue-to-delivery times: bucket 0 is
-- under 1 ms, bucket b >= 1 holds [1.1^(b-1), 1.1^b) ms, so a percentile
-- read from them is within 5 %.
CREATE FUNCTION webhooks._latency_bucket(created_at timestamptz, finished_at timestamptz) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN ms IS NULL OR ms OPERATOR(pg_catalog.<) 1 THEN 0::smallint
                ELSE least(1 OPERATOR(pg_catalog.+)
                         pg_catalog.floor(pg_catalog.ln(ms) OPERATOR(pg_catalog./) pg_catalog.ln(1.1::double precision)),
                         32767)::smallint END
      FROM (SELECT pg_catalog.date_part('epoch', finished_at OPERATOR(pg_catalog.-) created_at)
                   OPERATOR(pg_catalog.*) 1000::double precision AS ms) x
$$;

-- the latency a bucket stands for: its geometric middle
CREATE FUNCTION webhooks._bucket_ms(bucket smallint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN bucket OPERATOR(pg_catalog.=) 0 THEN 0.5::double precision
                ELSE pg_catalog.power(1.1::double precision,
                                      bucket::double precision OPERATOR(pg_catalog.-) 0.5::double precision) END
$$;

------------------------------------------------------------------------------
-- History: finished deliveries and failed attempts, partitioned by time
------------------------------------------------------------------------------

CREATE TABLE webhooks.delivery_history (
    id              bigint NOT NULL,
    webhook_id      bigint NOT NULL,
    event_type      text NOT NULL,
    body            text NOT NULL,
    state           text NOT NULL CHECK (state IN ('delivered', 'dead')),
    attempts        integer NOT NULL CHECK (attempts >= 0),
    created_at      timestamptz NOT NULL,
    last_attempt_at timestamptz,
    finished_at     timestamptz NOT NULL,
    last_status     integer,
    last_error      text,
    msg_id          text NOT NULL
) PARTITION BY RANGE (finished_at);
-- redeliver() finds a delivery by id; dead_deliveries and redeliver_dead()
-- read the dead ones of a webhook (few: the delivered ones are not indexed)
CREATE INDEX delivery_history_id ON webhooks.delivery_history (id);
CREATE INDEX delivery_history_dead ON webhooks.delivery_history (webhook_id, finished_at) WHERE state = 'dead';
-- rows of a time no partition covers (the worker was off for longer than
-- its partitions reach ahead) wait here; the partition made for them later
-- takes them over
CREATE TABLE webhooks.delivery_history_default PARTITION OF webhooks.delivery_history DEFAULT;
COMMENT ON TABLE webhooks.delivery_history_default IS
    'Partition of webhooks.delivery_history for rows no time-range partition covers (normally empty).';

COMMENT ON TABLE webhooks.delivery_history IS
    'Finished deliveries (delivered or dead), kept for webhooks.log_retention: partitioned by finished_at, whole partitions dropped. webhooks.redeliver() moves one back to the queue.';
COMMENT ON COLUMN webhooks.delivery_history.body IS 'The exact JSON body that was sent.';
COMMENT ON COLUMN webhooks.delivery_history.msg_id IS 'The webhook-id every attempt carried.';

-- webhook_logs becomes partitioned by occurrence_date: the 1.2 table is
-- renamed, its rows copied, then dropped.  Its identity sequence goes on
-- (renamed first, so that the new one can take its name).
ALTER TABLE webhooks.webhook_logs RENAME TO webhook_logs_1_2;
ALTER SEQUENCE webhooks.webhook_logs_id_seq RENAME TO webhook_logs_1_2_id_seq;
ALTER INDEX webhooks.webhook_logs_occurrence RENAME TO webhook_logs_1_2_occurrence;
ALTER INDEX webhooks.webhook_logs_webhook RENAME TO webhook_logs_1_2_webhook;
ALTER TABLE webhooks.webhook_logs_1_2 RENAME CONSTRAINT webhook_logs_pkey TO webhook_logs_1_2_pkey;

CREATE TABLE webhooks.webhook_logs (
    id              bigint GENERATED BY DEFAULT AS IDENTITY,
    occurrence_date timestamptz NOT NULL DEFAULT now(),
    webhook_name    text,
    webhook_id      bigint,
    status          integer,
    error_content   text,
    webhook_payload json,
    delivery_id     bigint,
    attempt         integer CHECK (attempt >= 0),
    duration_ms     double precision,
    outcome         text NOT NULL DEFAULT 'retry'
                    CHECK (outcome IN ('retry', 'dead', 'deactivated', 'discarded')),
    next_attempt_at timestamptz,
    msg_id          text,
    PRIMARY KEY (id, occurrence_date)
) PARTITION BY RANGE (occurrence_date);
CREATE INDEX webhook_logs_occurrence ON webhooks.webhook_logs (occurrence_date);
CREATE INDEX webhook_logs_webhook ON webhooks.webhook_logs (webhook_id, occurrence_date);
CREATE TABLE webhooks.webhook_logs_default PARTITION OF webhooks.webhook_logs DEFAULT;
COMMENT ON TABLE webhooks.webhook_logs_default IS
    'Partition of webhooks.webhook_logs for rows no time-range partition covers (normally empty).';

COMMENT ON TABLE webhooks.webhook_logs IS
    'Audit log: one row per failed delivery attempt (the specification''s Webhook Logs), kept for webhooks.log_retention: partitioned by occurrence_date, whole partitions dropped.';
COMMENT ON COLUMN webhooks.webhook_logs.occurrence_date IS 'When the attempt was made.';
COMMENT ON COLUMN webhooks.webhook_logs.status IS 'HTTP status of the response; NULL when no response arrived.';
COMMENT ON COLUMN webhooks.webhook_logs.error_content IS 'The response body (truncated to webhooks.response_body_limit) or the transport error.';
COMMENT ON COLUMN webhooks.webhook_logs.webhook_payload IS 'The JSON body that was sent.';
COMMENT ON COLUMN webhooks.webhook_logs.outcome IS 'What followed: retry (scheduled at next_attempt_at), dead (no attempts left), deactivated (410 Gone), discarded (webhook deleted).';
COMMENT ON COLUMN webhooks.webhook_logs.msg_id IS 'The webhook-id of the attempt (the delivery''s msg_id).';

------------------------------------------------------------------------------
-- Statistics per webhook and period, kept with the history
------------------------------------------------------------------------------

-- Delivered deliveries by latency bucket (enqueue to delivery).
CREATE TABLE webhooks.history_latency (
    webhook_id   bigint NOT NULL,
    period_start timestamptz NOT NULL,
    bucket       smallint NOT NULL,
    deliveries   bigint NOT NULL,
    last_success timestamptz,
    PRIMARY KEY (webhook_id, period_start, bucket)
);
COMMENT ON TABLE webhooks.history_latency IS
    'Delivered deliveries per webhook, period (a history partition''s time range) and latency bucket: what webhook_stats reads instead of the history.';

-- Dead deliveries and failed attempts.
CREATE TABLE webhooks.history_counts (
    webhook_id      bigint NOT NULL,
    period_start    timestamptz NOT NULL,
    dead            bigint NOT NULL DEFAULT 0,
    failed_attempts bigint NOT NULL DEFAULT 0,
    last_failure    timestamptz,
    PRIMARY KEY (webhook_id, period_start)
);
COMMENT ON TABLE webhooks.history_counts IS
    'Dead deliveries and failed attempts per webhook and period: what webhook_stats reads instead of the history and the log.';

-- The history's statement triggers keep them: every way a row enters or
-- leaves the history (the worker, redeliver(), the orphan sweep, this
-- update) goes through them.  Dropped partitions take their periods' rows
-- with them (_maintain_history).  They run as the extension's owner: an
-- administrator who redelivers or logs by hand cannot write the summaries
-- otherwise.
CREATE FUNCTION webhooks._history_added() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w integer := webhooks._period_width(webhooks._log_retention_s());
BEGIN
    INSERT INTO webhooks.history_latency AS s (webhook_id, period_start, bucket, deliveries, last_success)
    SELECT n.webhook_id, webhooks._period_start(n.finished_at, w),
           webhooks._latency_bucket(n.created_at, n.finished_at) AS b,
           pg_catalog.count(*), pg_catalog.max(n.finished_at)
      FROM new_rows n
     WHERE n.state OPERATOR(pg_catalog.=) 'delivered'
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (webhook_id, period_start, bucket) DO UPDATE
       SET deliveries = s.deliveries OPERATOR(pg_catalog.+) excluded.deliveries,
           last_success = greatest(s.last_success, excluded.last_success);
    INSERT INTO webhooks.history_counts AS s (webhook_id, period_start, dead)
    SELECT n.webhook_id, webhooks._period_start(n.finished_at, w), pg_catalog.count(*)
      FROM new_rows n
     WHERE n.state OPERATOR(pg_catalog.=) 'dead'
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (webhook_id, period_start) DO UPDATE
       SET dead = s.dead OPERATOR(pg_catalog.+) excluded.dead;
    RETURN NULL;
END
$$;

CREATE FUNCTION webhooks._history_removed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w integer := webhooks._period_width(webhooks._log_retention_s());
BEGIN
    UPDATE webhooks.history_latency s
       SET deliveries = greatest(s.deliveries OPERATOR(pg_catalog.-) o.n, 0)
      FROM (SELECT x.webhook_id, webhooks._period_start(x.finished_at, w) AS p,
                   webhooks._latency_bucket(x.created_at, x.finished_at) AS b,
                   pg_catalog.count(*) AS n
              FROM old_rows x WHERE x.state OPERATOR(pg_catalog.=) 'delivered' GROUP BY 1, 2, 3) o
     WHERE s.webhook_id OPERATOR(pg_catalog.=) o.webhook_id AND s.period_start OPERATOR(pg_catalog.=) o.p
       AND s.bucket OPERATOR(pg_catalog.=) o.b;
    UPDATE webhooks.history_counts s
       SET dead = greatest(s.dead OPERATOR(pg_catalog.-) o.n, 0)
      FROM (SELECT x.webhook_id, webhooks._period_start(x.finished_at, w) AS p, pg_catalog.count(*) AS n
              FROM old_rows x WHERE x.state OPERATOR(pg_catalog.=) 'dead' GROUP BY 1, 2) o
     WHERE s.webhook_id OPERATOR(pg_catalog.=) o.webhook_id AND s.period_start OPERATOR(pg_catalog.=) o.p;
    RETURN NULL;
END
$$;

CREATE FUNCTION webhooks._logs_added() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w integer := webhooks._period_width(webhooks._log_retention_s());
BEGIN
    INSERT INTO webhooks.history_counts AS s (webhook_id, period_start, failed_attempts, last_failure)
    SELECT n.webhook_id, webhooks._period_start(n.occurrence_date, w), pg_catalog.count(*),
           pg_catalog.max(n.occurrence_date)
      FROM new_rows n
     WHERE n.webhook_id IS NOT NULL
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (webhook_id, period_start) DO UPDATE
       SET failed_attempts = s.failed_attempts OPERATOR(pg_catalog.+) excluded.failed_attempts,
           last_failure = greatest(s.last_failure, excluded.last_failure);
    RETURN NULL;
END
$$;

CREATE TRIGGER history_added AFTER INSERT ON webhooks.delivery_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks._history_added();
CREATE TRIGGER history_removed AFTER DELETE ON webhooks.delivery_history
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks._history_removed();
CREATE TRIGGER logs_added AFTER INSERT ON webhooks.webhook_logs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks._logs_added();

------------------------------------------------------------------------------
-- Partitions: made ahead, dropped whole past the retention
------------------------------------------------------------------------------

-- the range partitions of a history table, with their bounds
CREATE FUNCTION webhooks._history_partitions(parent regclass)
RETURNS TABLE (partition regclass, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp SET datestyle = 'ISO, YMD' AS $$
    SELECT c.oid::regclass, b[1]::timestamptz, b[2]::timestamptz
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid,
           pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                   'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS b
     WHERE i.inhparent OPERATOR(pg_catalog.=) parent AND b IS NOT NULL
$$;

-- Make the partition of parent for [s, e), named after its start (UTC),
-- with the rows the default partition holds for that range, owned by the
-- extension (so that pg_dump leaves it out and DROP EXTENSION takes it).
-- False when a lock another session holds made it wait past lock_timeout.
CREATE FUNCTION webhooks._make_partition(parent regclass, key text, s timestamptz, e timestamptz)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET datestyle = 'ISO, YMD' SET lock_timeout = '200ms' AS $$
DECLARE
    dflt regclass := pg_catalog.format('%s_default', parent)::regclass;
    part text := pg_catalog.format('%s_%s',
                     (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) parent),
                     pg_catalog.to_char(s AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MISS'));
    moved jsonb;
BEGIN
    -- rows the default partition holds for this range move into it
    EXECUTE pg_catalog.format('WITH d AS (DELETE FROM %s x WHERE x.%I OPERATOR(pg_catalog.>=) $1 '
                              '                AND x.%I OPERATOR(pg_catalog.<) $2 RETURNING x.*) '
                              'SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(d)) FROM d', dflt, key, key)
        USING s, e INTO moved;
    EXECUTE pg_catalog.format('CREATE TABLE webhooks.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                              part, parent, s, e);
    EXECUTE pg_catalog.format('REVOKE ALL ON webhooks.%I FROM PUBLIC', part);
    EXECUTE pg_catalog.format('COMMENT ON TABLE webhooks.%I IS %L', part,
                              pg_catalog.format('Partition of %s: rows of %s from %s to %s (UTC), dropped whole past webhooks.log_retention.',
                                                parent, key, s AT TIME ZONE 'UTC', e AT TIME ZONE 'UTC'));
    IF moved IS NOT NULL THEN
        EXECUTE pg_catalog.format('INSERT INTO webhooks.%I SELECT * FROM pg_catalog.jsonb_populate_recordset(NULL::%s, $1)',
                                  part, parent) USING moved;
    END IF;
    -- (inside CREATE or ALTER EXTENSION it is a member already)
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                      AND d.objid OPERATOR(pg_catalog.=) pg_catalog.format('webhooks.%I', part)::regclass
                      AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
        EXECUTE pg_catalog.format('ALTER EXTENSION webhooks ADD TABLE webhooks.%I', part);
    END IF;
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RAISE LOG 'webhooks: partition % not made yet: another session uses %', part, parent;
    RETURN false;
END
$$;

-- One table's partitions: drop those that ended before the cutoff, make
-- them from "since" (or now) to four periods ahead, at least ten minutes.
-- A lock another session holds (a long read of the log) skips the
-- partition until the next call: lock_timeout keeps the worker from
-- queueing behind it and everyone else behind the worker.
CREATE FUNCTION webhooks._maintain_partitions(parent regclass, key text, width integer, cutoff timestamptz,
                                              since timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET datestyle = 'ISO, YMD' SET lock_timeout = '200ms' AS $$
DECLARE
    p record;
    s timestamptz;
    e timestamptz;
    first timestamptz;
    horizon timestamptz := pg_catalog.now() OPERATOR(pg_catalog.+)
                           pg_catalog.make_interval(secs => greatest(4 OPERATOR(pg_catalog.*) width, 600));
    today timestamptz := webhooks._period_start(pg_catalog.now(), width);
    dflt regclass := pg_catalog.format('%s_default', parent)::regclass;
    n integer := 0;
BEGIN
    FOR p IN SELECT * FROM webhooks._history_partitions(parent) h
              WHERE h.upper_bound OPERATOR(pg_catalog.<=) cutoff ORDER BY h.lower_bound
    LOOP
        BEGIN
            IF EXISTS (SELECT FROM pg_catalog.pg_depend d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
                          AND d.objid OPERATOR(pg_catalog.=) p.partition
                          AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
                EXECUTE pg_catalog.format('ALTER EXTENSION webhooks DROP TABLE %s', p.partition);
            END IF;
            EXECUTE pg_catalog.format('DROP TABLE %s', p.partition);
            n := n OPERATOR(pg_catalog.+) 1;
        EXCEPTION WHEN lock_not_available THEN
            RAISE LOG 'webhooks: partition % not dropped yet: another session uses %', p.partition, parent;
        END;
    END LOOP;
    -- what the default partition holds past the retention goes too (rows
    -- another session holds, a redelivery, are skipped)
    EXECUTE pg_catalog.format('DELETE FROM %s x WHERE x.ctid = ANY (ARRAY(SELECT y.ctid FROM %s y '
                              ' WHERE y.%I OPERATOR(pg_catalog.<) $1 FOR UPDATE SKIP LOCKED))', dflt, dflt, key)
        USING cutoff;

    SELECT pg_catalog.min(h.lower_bound), pg_catalog.max(h.upper_bound) INTO first, s
      FROM webhooks._history_partitions(parent) h;
    -- since before the first partition: fill in up to it
    IF first IS NOT NULL AND since OPERATOR(pg_catalog.<) first THEN
        e := webhooks._period_start(greatest(since, cutoff), width);
        WHILE e OPERATOR(pg_catalog.<) first LOOP
            s := e;
            e := least(webhooks._period_start(s, width) OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => width), first);
            EXIT WHEN NOT webhooks._make_partition(parent, key, s, e);
            n := n OPERATOR(pg_catalog.+) 1;
        END LOOP;
        SELECT pg_catalog.max(h.upper_bound) INTO s FROM webhooks._history_partitions(parent) h;
    END IF;
    IF s IS NULL THEN
        s := CASE WHEN since IS NULL THEN today
                  ELSE webhooks._period_start(least(greatest(since, cutoff), today), width) END;
    ELSIF s OPERATOR(pg_catalog.<) today THEN
        s := today;       -- the gap's rows stay in the default partition until they expire
    END IF;
    WHILE s OPERATOR(pg_catalog.<) horizon LOOP
        e := webhooks._period_start(s, width) OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => width);
        EXIT WHEN NOT webhooks._make_partition(parent, key, s, e);
        n := n OPERATOR(pg_catalog.+) 1;
        s := e;
    END LOOP;
    RETURN n;
END
$$;

-- The history's upkeep, from the worker's maintenance: both tables'
-- partitions, and the statistics of the periods dropped.  Returns when the
-- oldest partition left expires (the worker comes back then).
CREATE FUNCTION webhooks._maintain_history(retention_s integer, since timestamptz DEFAULT NULL) RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w integer := webhooks._period_width(retention_s);
    keep interval := pg_catalog.make_interval(secs => retention_s);
    cutoff timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) keep;
    n integer;
BEGIN
    n := webhooks._maintain_partitions('webhooks.delivery_history', 'finished_at', w, cutoff, since)
         OPERATOR(pg_catalog.+)
         webhooks._maintain_partitions('webhooks.webhook_logs', 'occurrence_date', w, cutoff, since);
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE DEBUG 'webhooks: made or dropped % history partitions', n;
    END IF;
    DELETE FROM webhooks.history_latency s
     WHERE s.period_start OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => w) OPERATOR(pg_catalog.<=) cutoff;
    DELETE FROM webhooks.history_counts s
     WHERE s.period_start OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => w) OPERATOR(pg_catalog.<=) cutoff;
    RETURN (SELECT pg_catalog.min(h.upper_bound) OPERATOR(pg_catalog.+) keep
              FROM (SELECT * FROM webhooks._history_partitions('webhooks.delivery_history')
                    UNION ALL
                    SELECT * FROM webhooks._history_partitions('webhooks.webhook_logs')) h);
END
$$;
COMMENT ON FUNCTION webhooks._maintain_history(integer, timestamptz) IS
    'Used by the worker''s maintenance: makes the history''s partitions ahead of time, drops those past the retention with their statistics; returns when the oldest partition left expires.';

------------------------------------------------------------------------------
-- Writing outcomes
------------------------------------------------------------------------------

-- Record outcomes (the worker records successes with its own statements).
-- As in 1.1: only rows whose lease is still the one that produced the
-- result are written, rows or webhooks another session holds are skipped,
-- the ids written are returned.  A retry stays in the queue (held when its
-- webhook is inactive); a finished delivery moves to the history.
CREATE OR REPLACE FUNCTION webhooks._record_results(results webhooks._delivery_result[]) RETURNS SETOF bigint
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
    retried AS (
        UPDATE webhooks.deliveries d SET
               state = CASE WHEN w.is_active THEN 'pending' ELSE 'held' END,
               next_attempt_at = coalesce(r.next_attempt_at, d.next_attempt_at),
               lease_until = NULL, lease_token = NULL,
               last_status = r.status, last_error = r.error
          FROM r, w
         WHERE d.id IN (SELECT mine.id FROM mine) AND r.delivery_id = d.id AND w.id = d.webhook_id
           AND r.state = 'pending'
        RETURNING d.id),
    finished AS (
        DELETE FROM webhooks.deliveries d USING r
         WHERE d.id IN (SELECT mine.id FROM mine) AND r.delivery_id = d.id AND r.state <> 'pending'
        RETURNING d.*, r.state AS final_state, r.finished_at AS final_at, r.status AS final_status,
                  r.error AS final_error),
    moved AS (
        INSERT INTO webhooks.delivery_history (id, webhook_id, event_type, body, state, attempts, created_at,
                                               last_attempt_at, finished_at, last_status, last_error, msg_id)
        SELECT f.id, f.webhook_id, f.event_type, f.body, f.final_state, f.attempts, f.created_at,
               f.last_attempt_at, coalesce(f.final_at, pg_catalog.now()), f.final_status, f.final_error, f.msg_id
          FROM finished f
        RETURNING id),
    written AS (SELECT retried.id FROM retried UNION ALL SELECT moved.id FROM moved),
    logs AS (
        INSERT INTO webhooks.webhook_logs (occurrence_date, webhook_name, webhook_id, status, error_content,
               webhook_payload, delivery_id, attempt, duration_ms, outcome, next_attempt_at, msg_id)
        SELECT r.occurred_at, r.webhook_name, r.webhook_id, r.status, r.error,
               webhooks._json_or_null(r.payload), r.delivery_id, r.attempt, r.duration_ms,
               r.log_outcome, r.log_next_at, r.msg_id
          FROM r JOIN written ON written.id = r.delivery_id
         WHERE r.log_outcome IS NOT NULL)
    SELECT written.id FROM written;
END
$$;

-- Events whose webhook was deleted while they were being enqueued die with a
-- log row, never silently: the queued ones move to the history as dead.
-- The orphans are listed once (= ANY (ARRAY(...)), an initplan): as
-- "id IN (subquery)", a plan cached while autovacuum had seen the queue
-- nearly empty rescanned the whole queue for every row of it, and a backlog
-- of 5,000 took 17 s (sql/queue_plans.sql).
CREATE OR REPLACE FUNCTION webhooks._sweep_orphans() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    m bigint;
BEGIN
    WITH o AS (
        DELETE FROM webhooks.deliveries d
         WHERE d.id = ANY (ARRAY(SELECT x.id FROM webhooks.deliveries x
                                  WHERE NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = x.webhook_id)
                                    FOR UPDATE SKIP LOCKED))
        RETURNING d.*),
    h AS (
        INSERT INTO webhooks.delivery_history (id, webhook_id, event_type, body, state, attempts, created_at,
                                               last_attempt_at, finished_at, last_status, last_error, msg_id)
        SELECT o.id, o.webhook_id, o.event_type, o.body, 'dead', o.attempts, o.created_at, o.last_attempt_at,
               pg_catalog.now(), o.last_status, 'webhook no longer exists', o.msg_id
          FROM o)
    INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, delivery_id, attempt,
                                       outcome, msg_id)
    SELECT o.webhook_id, 'webhook no longer exists', webhooks._json_or_null(o.body), o.id, o.attempts,
           'dead', o.msg_id
      FROM o;
    GET DIAGNOSTICS n = ROW_COUNT;
    WITH o AS (
        DELETE FROM webhooks.event_batches b
         WHERE b.id = ANY (ARRAY(SELECT x.id FROM webhooks.event_batches x
                                  WHERE NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = x.webhook_id)
                                    FOR UPDATE SKIP LOCKED))
        RETURNING b.*)
    INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, outcome, msg_id)
    SELECT o.webhook_id, 'webhook no longer exists', webhooks._json_or_null(e.body), 'dead',
           webhooks._batch_msg_id(o.first_msg_id, e.i - 1)
      FROM o, pg_catalog.string_to_table(o.bodies, E'\n') WITH ORDINALITY AS e(body, i);
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n + m;
END
$$;

-- The queue holds no finished rows: deleting a webhook leaves its history
-- to expire with the retention.
CREATE OR REPLACE FUNCTION webhooks._webhooks_delete_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM webhooks.deliveries WHERE webhook_id = OLD.id;
    n := n + coalesce((SELECT sum(events) FROM webhooks.event_batches WHERE webhook_id = OLD.id), 0);
    IF n > 0 THEN
        RAISE EXCEPTION 'webhook "%" has % undelivered deliveries', OLD.name, n
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for them, or call webhooks.delete_webhook(name, discard_pending => true) to log and drop them.';
    END IF;
    RETURN OLD;
END
$$;

DROP FUNCTION webhooks._prune(timestamptz, integer);

------------------------------------------------------------------------------
-- The row trigger runs as its caller
------------------------------------------------------------------------------

-- A SECURITY DEFINER function's SET search_path is applied and undone on
-- every call: for the row trigger, on every row, and most of what it added
-- to an INSERT.  The C code now does as the function's owner what it reads
-- and writes in schema webhooks, under search_path pg_catalog, pg_temp, as
-- PostgreSQL's foreign-key triggers act as the table's owner
-- (src/payload.c, webhooks_enqueue_event).
ALTER FUNCTION webhooks.enqueue_event() SECURITY INVOKER RESET search_path;

------------------------------------------------------------------------------
-- Redelivery: from the history back to the queue
------------------------------------------------------------------------------

-- The webhook row is locked FOR SHARE before the delivery is touched (the
-- order of an activation and its trigger, as in 1.1), then the history row
-- FOR UPDATE: a concurrent redeliver() of the same delivery waits, then
-- finds it queued.  It keeps its id and webhook-id.
CREATE OR REPLACE FUNCTION webhooks.redeliver(delivery_id bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h webhooks.delivery_history;
    q text;
BEGIN
    PERFORM FROM webhooks.webhooks w
     WHERE w.id = coalesce((SELECT x.webhook_id FROM webhooks.delivery_history x WHERE x.id = delivery_id LIMIT 1),
                           (SELECT x.webhook_id FROM webhooks.deliveries x WHERE x.id = delivery_id))
       FOR SHARE;
    SELECT * INTO h FROM webhooks.delivery_history x WHERE x.id = delivery_id LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        SELECT x.state INTO q FROM webhooks.deliveries x WHERE x.id = delivery_id;
        IF FOUND THEN
            RAISE EXCEPTION 'delivery % is still %', delivery_id, q
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Only delivered and dead deliveries can be redelivered.';
        END IF;
        RAISE EXCEPTION 'delivery % does not exist', delivery_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Delivered and dead deliveries are kept for webhooks.log_retention.';
    END IF;
    IF NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = h.webhook_id) THEN
        RAISE EXCEPTION 'the webhook of delivery % no longer exists', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A delivery is bound to the webhook that was active when it was enqueued.',
                  HINT = 'Its payload is in webhooks.delivery_history; enqueue it again with webhooks.emit().';
    END IF;
    DELETE FROM webhooks.delivery_history x WHERE x.id = delivery_id;
    INSERT INTO webhooks.deliveries (id, webhook_id, event_type, body, state, attempts, next_attempt_at,
                                     created_at, last_attempt_at, last_status, last_error, msg_id)
    SELECT h.id, h.webhook_id, h.event_type, h.body, CASE WHEN w.is_active THEN 'pending' ELSE 'held' END,
           0, pg_catalog.now(), h.created_at, h.last_attempt_at, h.last_status, h.last_error, h.msg_id
      FROM webhooks.webhooks w WHERE w.id = h.webhook_id;
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
    WITH h AS (
        DELETE FROM webhooks.delivery_history x
         WHERE x.webhook_id = w.id AND x.state = 'dead' AND x.finished_at >= since
        RETURNING x.*)
    INSERT INTO webhooks.deliveries (id, webhook_id, event_type, body, state, attempts, next_attempt_at,
                                     created_at, last_attempt_at, last_status, last_error, msg_id)
    SELECT h.id, h.webhook_id, h.event_type, h.body, CASE WHEN w.is_active THEN 'pending' ELSE 'held' END,
           0, pg_catalog.now(), h.created_at, h.last_attempt_at, h.last_status, h.last_error, h.msg_id
      FROM h ORDER BY h.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM webhooks._wake_worker();
    RETURN n;
END
$$;

------------------------------------------------------------------------------
-- Views over the new layout (same columns)
------------------------------------------------------------------------------

CREATE OR REPLACE VIEW webhooks.dead_deliveries AS
SELECT d.id AS delivery_id, w.name AS webhook_name, d.webhook_id, d.event_type, d.attempts,
       d.created_at, d.finished_at AS died_at, d.last_status, d.last_error,
       webhooks._json_or_null(d.body) AS payload, d.msg_id
  FROM webhooks.delivery_history d LEFT JOIN webhooks.webhooks w ON w.id = d.webhook_id
 WHERE d.state = 'dead';

-- Every delivery within the retention, wherever it is: what support staff
-- ask ("what happened to msg_..."), in the shape of the queue's rows.
CREATE VIEW webhooks.all_deliveries AS
SELECT d.id, d.webhook_id, d.event_type, d.body, d.state, d.attempts, d.next_attempt_at, d.lease_until,
       d.lease_token, d.created_at, d.last_attempt_at, NULL::timestamptz AS finished_at, d.last_status,
       d.last_error, d.msg_id
  FROM webhooks.deliveries d
UNION ALL
SELECT h.id, h.webhook_id, h.event_type, h.body, h.state, h.attempts, NULL, NULL, NULL, h.created_at,
       h.last_attempt_at, h.finished_at, h.last_status, h.last_error, h.msg_id
  FROM webhooks.delivery_history h;
COMMENT ON VIEW webhooks.all_deliveries IS
    'Every delivery within webhooks.log_retention: the queue''s (pending, held) and the history''s (delivered, dead), with the columns of webhooks.deliveries plus finished_at.';

-- Queue counts read the queue (its size is the backlog); the rest reads the
-- statistics tables, whose size is webhooks x periods x latency buckets,
-- however long the history is.
CREATE OR REPLACE VIEW webhooks.webhook_stats AS
SELECT w.id AS webhook_id, w.name AS webhook_name, w.event_type, w.is_active,
       coalesce(d.pending, 0) + coalesce(b.queued, 0) AS pending,
       coalesce(d.in_flight, 0) AS in_flight,
       coalesce(d.held, 0) AS held,
       coalesce(l.delivered, 0) AS delivered,
       coalesce(c.failed_attempts, 0) AS failed_attempts,
       coalesce(c.dead, 0) AS dead,
       l.last_success,
       c.last_failure,
       l.latency_p50_ms,
       l.latency_p99_ms
  FROM webhooks.webhooks w
  LEFT JOIN (
    SELECT webhook_id,
           count(*) FILTER (WHERE state = 'pending') AS pending,
           count(*) FILTER (WHERE state = 'pending' AND lease_until > now()) AS in_flight,
           count(*) FILTER (WHERE state = 'held') AS held
      FROM webhooks.deliveries GROUP BY webhook_id) d ON d.webhook_id = w.id
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
COMMENT ON VIEW webhooks.webhook_stats IS
    'Per webhook: deliveries pending (including events still in batches) / in flight / held, and over the retention window delivered / dead, failed attempts, last success and failure, and enqueue-to-delivery latency (p50/p99 within 5 %).';

------------------------------------------------------------------------------
-- Moving a 1.2 install's rows (after the views: they no longer read the old table)
------------------------------------------------------------------------------

-- Partitions for the rows this update moves, and ahead.
SELECT webhooks._maintain_history(webhooks._log_retention_s(),
       (SELECT least(
                   (SELECT pg_catalog.min(d.finished_at) FROM webhooks.deliveries d
                     WHERE d.state IN ('delivered', 'dead')),
                   (SELECT pg_catalog.min(l.occurrence_date) FROM webhooks.webhook_logs_1_2 l))));

INSERT INTO webhooks.webhook_logs (id, occurrence_date, webhook_name, webhook_id, status, error_content,
                                   webhook_payload, delivery_id, attempt, duration_ms, outcome,
                                   next_attempt_at, msg_id)
SELECT id, occurrence_date, webhook_name, webhook_id, status, error_content, webhook_payload, delivery_id,
       attempt, duration_ms, outcome, next_attempt_at, msg_id
  FROM webhooks.webhook_logs_1_2 ORDER BY id;
SELECT pg_catalog.setval('webhooks.webhook_logs_id_seq', s.last_value, s.is_called)
  FROM webhooks.webhook_logs_1_2_id_seq s;
ALTER EXTENSION webhooks DROP TABLE webhooks.webhook_logs_1_2;
ALTER EXTENSION webhooks DROP SEQUENCE webhooks.webhook_logs_1_2_id_seq;
DROP TABLE webhooks.webhook_logs_1_2;

WITH f AS (
    DELETE FROM webhooks.deliveries d WHERE d.state IN ('delivered', 'dead') RETURNING d.*)
INSERT INTO webhooks.delivery_history (id, webhook_id, event_type, body, state, attempts, created_at,
                                       last_attempt_at, finished_at, last_status, last_error, msg_id)
SELECT f.id, f.webhook_id, f.event_type, f.body, f.state, f.attempts, f.created_at, f.last_attempt_at,
       coalesce(f.finished_at, f.last_attempt_at, f.created_at), f.last_status, f.last_error, f.msg_id
  FROM f ORDER BY f.id;

-- The queue: live rows only.
ALTER TABLE webhooks.deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE webhooks.deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN ('pending', 'held'));
DROP INDEX webhooks.deliveries_finished;
ALTER TABLE webhooks.deliveries DROP COLUMN finished_at;
COMMENT ON TABLE webhooks.deliveries IS
    'The queue: one row per event to deliver, bound at enqueue time to the webhook then active. States: pending (queued, retrying or in flight), held (its webhook is inactive). A finished delivery moves to webhooks.delivery_history in the transaction that records it.';

------------------------------------------------------------------------------
-- pg_dump and privileges
------------------------------------------------------------------------------

-- pg_dump keeps the webhooks and the queue (1.0's registrations); the
-- history is not dumped (its partitions belong to the extension, like its
-- other tables).  The log's id sequence is, so that ids go on after a restore.
SELECT pg_catalog.pg_extension_config_dump('webhooks.webhook_logs_id_seq', '');

REVOKE ALL ON webhooks.delivery_history, webhooks.webhook_logs, webhooks.history_latency,
       webhooks.history_counts, webhooks.delivery_history_default, webhooks.webhook_logs_default FROM PUBLIC;
REVOKE ALL ON SEQUENCE webhooks.webhook_logs_id_seq FROM PUBLIC;
GRANT USAGE ON SEQUENCE webhooks.webhook_logs_id_seq TO webhooks_admin;
REVOKE ALL ON FUNCTION webhooks._log_retention_s(), webhooks._period_width(integer),
       webhooks._period_start(timestamptz, integer), webhooks._latency_bucket(timestamptz, timestamptz),
       webhooks._bucket_ms(smallint), webhooks._history_added(), webhooks._history_removed(),
       webhooks._logs_added(), webhooks._history_partitions(regclass),
       webhooks._make_partition(regclass, text, timestamptz, timestamptz),
       webhooks._maintain_partitions(regclass, text, integer, timestamptz, timestamptz),
       webhooks._maintain_history(integer, timestamptz) FROM PUBLIC;
GRANT SELECT ON webhooks.webhook_logs, webhooks.all_deliveries TO webhooks_reader;
GRANT SELECT ON webhooks.delivery_history, webhooks.webhook_logs, webhooks.history_latency,
      webhooks.history_counts, webhooks.all_deliveries TO webhooks_admin;
GRANT INSERT ON webhooks.webhook_logs TO webhooks_admin;
-- redeliver() and redeliver_dead() run as the caller
GRANT DELETE ON webhooks.delivery_history TO webhooks_admin;
GRANT EXECUTE ON FUNCTION webhooks._log_retention_s(), webhooks._period_width(integer),
      webhooks._period_start(timestamptz, integer), webhooks._latency_bucket(timestamptz, timestamptz),
      webhooks._bucket_ms(smallint), webhooks._history_partitions(regclass) TO webhooks_admin, webhooks_reader;
