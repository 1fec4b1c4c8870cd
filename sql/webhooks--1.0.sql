/* webhooks--1.0.sql: transactional, signed, reliably delivered HTTPS webhooks */

\echo Use "CREATE EXTENSION webhooks" to load this file. \quit

-- Refuse to install unless the library was preloaded: without it there is
-- no worker and no commit wake-up, and events would pile up unseen.
CREATE FUNCTION webhooks._check_preloaded() RETURNS void
    AS 'MODULE_PATHNAME', 'webhooks_check_preloaded' LANGUAGE C;
SELECT webhooks._check_preloaded();

------------------------------------------------------------------------------
-- Roles (cluster-wide; created once, kept when the extension is dropped)
------------------------------------------------------------------------------
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'webhooks_admin') THEN
        CREATE ROLE webhooks_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'webhooks_writer') THEN
        CREATE ROLE webhooks_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'webhooks_reader') THEN
        CREATE ROLE webhooks_reader NOLOGIN;
    END IF;
END
$roles$;

------------------------------------------------------------------------------
-- C helpers
------------------------------------------------------------------------------
CREATE FUNCTION webhooks._builtin_event_types(
    OUT event_type text, OUT label text, OUT description text,
    OUT fields jsonb, OUT example json)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'webhooks_builtin_event_types' LANGUAGE C STRICT;

CREATE FUNCTION webhooks.generate_secret() RETURNS text
    AS 'MODULE_PATHNAME', 'webhooks_generate_secret' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION webhooks.generate_secret() IS
    'A new signing secret: "whsec_" and the base64 of 32 random bytes from pg_strong_random().';

CREATE FUNCTION webhooks.sign(secret text, msg_id text, msg_timestamp bigint, body text) RETURNS text
    AS 'MODULE_PATHNAME', 'webhooks_sign' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION webhooks.sign(text, text, bigint, text) IS
    'The Standard Webhooks v1 signature ("v1,<base64 HMAC-SHA256>") of msg_id.msg_timestamp.body.';

CREATE FUNCTION webhooks.url_problem(url text, allow_private boolean DEFAULT NULL) RETURNS text
    AS 'MODULE_PATHNAME', 'webhooks_url_problem' LANGUAGE C STABLE;
COMMENT ON FUNCTION webhooks.url_problem(text, boolean) IS
    'NULL when url is an acceptable target URL, else the rule it breaks. allow_private NULL means the setting webhooks.allow_private_targets.';

CREATE FUNCTION webhooks._check_target_url(url text) RETURNS void
    AS 'MODULE_PATHNAME', 'webhooks_check_target_url' LANGUAGE C STABLE;
CREATE FUNCTION webhooks._check_headers(headers jsonb, has_auth_token boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'webhooks_check_headers' LANGUAGE C IMMUTABLE;
CREATE FUNCTION webhooks._check_secret(secret text) RETURNS void
    AS 'MODULE_PATHNAME', 'webhooks_check_secret' LANGUAGE C IMMUTABLE;
CREATE FUNCTION webhooks._json_or_null(body text) RETURNS json
    AS 'MODULE_PATHNAME', 'webhooks_json_or_null' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION webhooks._wake_worker() RETURNS void
    AS 'MODULE_PATHNAME', 'webhooks_wake_worker' LANGUAGE C VOLATILE;

CREATE FUNCTION webhooks.build_payload(event_type text, payload jsonb) RETURNS text
    AS 'MODULE_PATHNAME', 'webhooks_build_payload' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION webhooks.build_payload(text, jsonb) IS
    'Validates payload against event_type and returns the exact JSON body emit() would store.';

CREATE FUNCTION webhooks.dummy_payload(event_type text) RETURNS text
    AS 'MODULE_PATHNAME', 'webhooks_dummy_payload' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION webhooks.dummy_payload(text) IS
    'The connection test''s payload for event_type: the specification''s example, dated now.';

------------------------------------------------------------------------------
-- Event types
------------------------------------------------------------------------------
CREATE TABLE webhooks.event_types (
    event_type  text PRIMARY KEY,
    label       text NOT NULL UNIQUE,
    description text NOT NULL,
    fields      jsonb NOT NULL,
    example     json NOT NULL
);
COMMENT ON TABLE webhooks.event_types IS
    'The event types of the specification, with the payload fields each requires.';
COMMENT ON COLUMN webhooks.event_types.label IS 'Human label, e.g. "Email — Open".';
COMMENT ON COLUMN webhooks.event_types.fields IS
    'Required payload fields after eventType and eventDate, in order: [{"name", "type" (JSON type), "column" (trigger mapping)}].';
COMMENT ON COLUMN webhooks.event_types.example IS 'The specification''s example payload.';

INSERT INTO webhooks.event_types SELECT * FROM webhooks._builtin_event_types();

------------------------------------------------------------------------------
-- Webhooks
------------------------------------------------------------------------------
CREATE TABLE webhooks.webhooks (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    event_type  text NOT NULL REFERENCES webhooks.event_types (event_type),
    target_url  text NOT NULL,
    is_active   boolean NOT NULL DEFAULT false,
    secret      text NOT NULL DEFAULT webhooks.generate_secret(),
    previous_secret text,
    previous_secret_expires_at timestamptz,
    auth_token  text,
    headers     jsonb NOT NULL DEFAULT '{}',
    deactivated_reason text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhooks_name_key UNIQUE (name)
);
CREATE UNIQUE INDEX webhooks_one_active_per_event_type
    ON webhooks.webhooks (event_type) WHERE is_active;

COMMENT ON TABLE webhooks.webhooks IS
    'Webhook definitions. At most one active webhook per event type; an active webhook can only be deactivated, not edited.';
COMMENT ON COLUMN webhooks.webhooks.secret IS 'Signing secret (Standard Webhooks, "whsec_..."). Only webhooks_admin can read it.';
COMMENT ON COLUMN webhooks.webhooks.previous_secret IS 'The secret before the last rotation; also signs until previous_secret_expires_at.';
COMMENT ON COLUMN webhooks.webhooks.auth_token IS 'Sent as "Authorization: Bearer <token>" when set.';
COMMENT ON COLUMN webhooks.webhooks.headers IS 'Extra request headers, a JSON object of names to string values.';
COMMENT ON COLUMN webhooks.webhooks.deactivated_reason IS 'Why the webhook was last deactivated (e.g. the receiver answered 410 Gone).';

-- Serialises wizard runs per event type, so racing activations queue up
-- and the loser gets the clear uniqueness error, not a raw index error.
CREATE FUNCTION webhooks._lock_event_type(event_type text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('webhooks.event_type'),
                                            pg_catalog.hashtext(event_type));
$$;

-- The rules hold for direct DML too, not only for the functions.
CREATE FUNCTION webhooks._webhooks_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other text;
BEGIN
    IF NEW.name IS NULL OR btrim(NEW.name) = '' THEN
        RAISE EXCEPTION 'webhook name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(NEW.name) > 200 THEN
        RAISE EXCEPTION 'webhook name is too long'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A webhook name has at most 200 characters.';
    END IF;

    IF TG_OP = 'UPDATE' AND OLD.is_active THEN
        IF (NEW.id, NEW.name, NEW.event_type, NEW.target_url, NEW.auth_token, NEW.headers, NEW.created_at)
           IS DISTINCT FROM
           (OLD.id, OLD.name, OLD.event_type, OLD.target_url, OLD.auth_token, OLD.headers, OLD.created_at)
        THEN
            RAISE EXCEPTION 'webhook "%" is active and cannot be edited', OLD.name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Deactivate it first with webhooks.deactivate_webhook().';
        END IF;
        IF NEW.secret IS DISTINCT FROM OLD.secret AND NEW.previous_secret IS DISTINCT FROM OLD.secret THEN
            RAISE EXCEPTION 'the secret of active webhook "%" can only be rotated', OLD.name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Use webhooks.rotate_secret(), which keeps the old secret valid for a grace period.';
        END IF;
    END IF;

    IF TG_OP = 'INSERT' OR NEW.target_url IS DISTINCT FROM OLD.target_url THEN
        PERFORM webhooks._check_target_url(NEW.target_url);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.headers IS DISTINCT FROM OLD.headers
       OR NEW.auth_token IS DISTINCT FROM OLD.auth_token THEN
        PERFORM webhooks._check_headers(NEW.headers, NEW.auth_token IS NOT NULL);
    END IF;
    IF NEW.auth_token IS NOT NULL AND (NEW.auth_token = '' OR NEW.auth_token ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f\x7f]') THEN
        RAISE EXCEPTION 'invalid auth token'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An auth token is not empty and has no control characters.';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.secret THEN
        PERFORM webhooks._check_secret(NEW.secret);
    END IF;
    IF NEW.previous_secret IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.previous_secret IS DISTINCT FROM OLD.previous_secret) THEN
        PERFORM webhooks._check_secret(NEW.previous_secret);
    END IF;

    IF NEW.is_active AND (TG_OP = 'INSERT' OR NOT OLD.is_active OR NEW.event_type <> OLD.event_type) THEN
        -- serialise activations per event type: a racing session waits here,
        -- then sees the winner and gets this clear error, not a raw index error
        PERFORM webhooks._lock_event_type(NEW.event_type);
        SELECT w.name INTO other FROM webhooks.webhooks w
         WHERE w.event_type = NEW.event_type AND w.is_active AND w.id <> NEW.id;
        IF FOUND THEN
            RAISE EXCEPTION 'webhook "%" is already active for event type %', other, NEW.event_type
                USING ERRCODE = 'unique_violation',
                      DETAIL = 'Only one webhook can be active per event type.',
                      HINT = format('Deactivate "%s" first.', other);
        END IF;
        NEW.deactivated_reason := NULL;
    END IF;

    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER webhooks_guard BEFORE INSERT OR UPDATE ON webhooks.webhooks
    FOR EACH ROW EXECUTE FUNCTION webhooks._webhooks_guard();

------------------------------------------------------------------------------
-- Deliveries (the queue) and the audit log
------------------------------------------------------------------------------
CREATE TABLE webhooks.deliveries (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL,
    event_type      text NOT NULL,
    body            text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'held', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    finished_at     timestamptz,
    last_status     integer,
    last_error      text
);
CREATE INDEX deliveries_due ON webhooks.deliveries (webhook_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_finished ON webhooks.deliveries (finished_at) WHERE finished_at IS NOT NULL;

COMMENT ON TABLE webhooks.deliveries IS
    'One row per event to deliver, bound at enqueue time to the webhook then active. States: pending (queued or retrying), held (its webhook is inactive), delivered, dead (attempts exhausted).';
COMMENT ON COLUMN webhooks.deliveries.body IS 'The exact JSON body sent on every attempt.';
COMMENT ON COLUMN webhooks.deliveries.next_attempt_at IS 'When a pending delivery is due; while in flight, the end of the worker''s lease.';
COMMENT ON COLUMN webhooks.deliveries.lease_until IS 'Set while the worker holds the delivery; an expired lease makes it claimable again.';
COMMENT ON COLUMN webhooks.deliveries.finished_at IS 'When it was delivered or went dead; pruned after webhooks.log_retention.';

-- A multi-row INSERT under the statement trigger stores its events as
-- compact batch rows; the worker splits them into deliveries.
CREATE TABLE webhooks.event_batches (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    webhook_id  bigint NOT NULL,
    event_type  text NOT NULL,
    events      integer NOT NULL CHECK (events > 0),
    bodies      text COMPRESSION lz4 NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE webhooks.event_batches IS
    'Events of one multi-row statement, waiting for the worker to split them into deliveries (within milliseconds of commit). One small compressed row instead of a queue row per event keeps bulk enqueueing cheap.';
COMMENT ON COLUMN webhooks.event_batches.bodies IS 'The JSON bodies, one per line (a body never contains a raw newline).';

-- Split up to max_batches batches into deliveries; returns the deliveries made.
-- Called by the worker; callable by hand when the worker is off.
CREATE FUNCTION webhooks._expand_batches(max_batches integer DEFAULT 1) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b webhooks.event_batches;
    n bigint := 0;
    done integer := 0;
BEGIN
    WHILE done < max_batches LOOP
        DELETE FROM webhooks.event_batches
         WHERE id = (SELECT id FROM webhooks.event_batches ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING * INTO b;
        EXIT WHEN NOT FOUND;
        INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state, created_at)
        SELECT b.webhook_id, b.event_type, x.body,
               CASE WHEN EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = b.webhook_id AND w.is_active)
                    THEN 'pending' ELSE 'held' END,
               b.created_at
          FROM string_to_table(b.bodies, E'\n') WITH ORDINALITY AS x(body, i)
         ORDER BY x.i;
        n := n + b.events;
        done := done + 1;
    END LOOP;
    RETURN n;
END
$$;

CREATE TABLE webhooks.webhook_logs (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    occurrence_date timestamptz NOT NULL DEFAULT now(),
    webhook_name    text,
    webhook_id      bigint,
    status          integer,
    error_content   text,
    webhook_payload json,
    delivery_id     bigint,
    attempt         integer,
    duration_ms     double precision,
    outcome         text NOT NULL DEFAULT 'retry'
                    CHECK (outcome IN ('retry', 'dead', 'deactivated', 'discarded')),
    next_attempt_at timestamptz
);
CREATE INDEX webhook_logs_occurrence ON webhooks.webhook_logs (occurrence_date);
CREATE INDEX webhook_logs_webhook ON webhooks.webhook_logs (webhook_id, occurrence_date);

COMMENT ON TABLE webhooks.webhook_logs IS
    'Audit log: one row per failed delivery attempt (the specification''s Webhook Logs).';
COMMENT ON COLUMN webhooks.webhook_logs.occurrence_date IS 'When the attempt was made.';
COMMENT ON COLUMN webhooks.webhook_logs.status IS 'HTTP status of the response; NULL when no response arrived.';
COMMENT ON COLUMN webhooks.webhook_logs.error_content IS 'The response body (truncated to webhooks.response_body_limit) or the transport error.';
COMMENT ON COLUMN webhooks.webhook_logs.webhook_payload IS 'The JSON body that was sent.';
COMMENT ON COLUMN webhooks.webhook_logs.outcome IS 'What followed: retry (scheduled at next_attempt_at), dead (no attempts left), deactivated (410 Gone), discarded (webhook deleted).';

-- pg_dump keeps the user data of these tables
SELECT pg_catalog.pg_extension_config_dump('webhooks.webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.webhooks_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.deliveries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.webhook_logs', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.event_batches', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.event_batches_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.webhook_logs_id_seq', '');

-- Deactivating holds a webhook's pending deliveries; activating releases them.
CREATE FUNCTION webhooks._webhooks_hold() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.is_active AND NOT OLD.is_active THEN
        UPDATE webhooks.deliveries SET state = 'pending', next_attempt_at = now()
         WHERE webhook_id = NEW.id AND state = 'held';
        PERFORM webhooks._wake_worker();
    ELSIF OLD.is_active AND NOT NEW.is_active THEN
        UPDATE webhooks.deliveries SET state = 'held'
         WHERE webhook_id = NEW.id AND state = 'pending' AND lease_until IS NULL;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER webhooks_hold AFTER UPDATE OF is_active ON webhooks.webhooks
    FOR EACH ROW EXECUTE FUNCTION webhooks._webhooks_hold();

-- Deleting a webhook must not silently lose what is queued for it.
CREATE FUNCTION webhooks._webhooks_delete_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM webhooks.deliveries
     WHERE webhook_id = OLD.id AND state IN ('pending', 'held');
    n := n + coalesce((SELECT sum(events) FROM webhooks.event_batches WHERE webhook_id = OLD.id), 0);
    IF n > 0 THEN
        RAISE EXCEPTION 'webhook "%" has % undelivered deliveries', OLD.name, n
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for them, or call webhooks.delete_webhook(name, discard_pending => true) to log and drop them.';
    END IF;
    DELETE FROM webhooks.deliveries WHERE webhook_id = OLD.id;
    RETURN OLD;
END
$$;
CREATE TRIGGER webhooks_delete_guard BEFORE DELETE ON webhooks.webhooks
    FOR EACH ROW EXECUTE FUNCTION webhooks._webhooks_delete_guard();

------------------------------------------------------------------------------
-- The connection test and the wizard
------------------------------------------------------------------------------
CREATE FUNCTION webhooks.test_connection(
    target_url text,
    event_type text,
    auth_token text DEFAULT NULL,
    headers jsonb DEFAULT '{}',
    secret text DEFAULT NULL,
    name text DEFAULT NULL,
    previous_secret text DEFAULT NULL,
    OUT ok boolean,
    OUT occurrence_date timestamptz,
    OUT webhook_name text,
    OUT webhook_id bigint,
    OUT status integer,
    OUT error_content text,
    OUT webhook_payload json,
    OUT duration_ms double precision)
    RETURNS record
    AS 'MODULE_PATHNAME', 'webhooks_test_connection' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION webhooks.test_connection(text, text, text, jsonb, text, text, text) IS
    'Sends a dummy payload of event_type to target_url, signed with secret (and previous_secret, as during a rotation), and reports the outcome like a log row, plus ok and the duration.';

-- raise the wizard's error for a failed connection test
CREATE FUNCTION webhooks._raise_test_failure(webhook_name text, r record) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'connection test for webhook "%" failed', webhook_name
        USING ERRCODE = 'WH001',
              DETAIL = format('status: %s; error content: %s; payload: %s',
                              coalesce(r.status::text, 'none'), r.error_content, r.webhook_payload),
              HINT = 'Make sure the target answers a POST with a 2xx status. Nothing was stored.';
END
$$;

CREATE FUNCTION webhooks._require(value text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% is required', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF btrim(value) = '' THEN
        RAISE EXCEPTION '% is required', what
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It is empty.';
    END IF;
END
$$;

CREATE FUNCTION webhooks._require_event_type(event_type text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM webhooks.event_types t WHERE t.event_type = _require_event_type.event_type) THEN
        RAISE EXCEPTION 'unknown event type "%"', event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The event types are listed in webhooks.event_types, e.g. EmailOpens.';
    END IF;
END
$$;

CREATE FUNCTION webhooks._require_no_active(event_type text, except_id bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other text;
BEGIN
    SELECT w.name INTO other FROM webhooks.webhooks w
     WHERE w.event_type = _require_no_active.event_type AND w.is_active
       AND w.id IS DISTINCT FROM except_id;
    IF FOUND THEN
        RAISE EXCEPTION 'webhook "%" is already active for event type %', other, event_type
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Only one webhook can be active per event type.',
                  HINT = format('Deactivate "%s" first.', other);
    END IF;
END
$$;

CREATE FUNCTION webhooks.create_webhook(
    name text,
    event_type text,
    target_url text,
    auth_token text DEFAULT NULL,
    headers jsonb DEFAULT '{}')
    RETURNS webhooks.webhooks
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_secret text := webhooks.generate_secret();
    t record;
    result webhooks.webhooks;
BEGIN
    -- the specification's order: fields filled, event type, URL, name, uniqueness, test
    PERFORM webhooks._require(name, 'webhook name');
    PERFORM webhooks._require(event_type, 'event type');
    PERFORM webhooks._require(target_url, 'target URL');
    PERFORM webhooks._require_event_type(event_type);
    PERFORM webhooks._check_target_url(target_url);
    PERFORM webhooks._check_headers(coalesce(headers, '{}'), auth_token IS NOT NULL);
    IF EXISTS (SELECT FROM webhooks.webhooks w WHERE w.name = create_webhook.name) THEN
        RAISE EXCEPTION 'webhook "%" already exists', name
            USING ERRCODE = 'unique_violation', HINT = 'Choose another name.';
    END IF;
    PERFORM webhooks._lock_event_type(event_type);
    PERFORM webhooks._require_no_active(event_type);

    t := webhooks.test_connection(target_url, event_type, auth_token,
                                  coalesce(headers, '{}'), v_secret, name);
    IF NOT t.ok THEN
        PERFORM webhooks._raise_test_failure(name, t);
    END IF;

    BEGIN
        INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active, secret, auth_token, headers)
        VALUES (name, event_type, target_url, true, v_secret, auth_token, coalesce(headers, '{}'))
        RETURNING * INTO result;
    EXCEPTION WHEN unique_violation THEN
        -- lost a race with direct DML or another session
        PERFORM webhooks._require_no_active(event_type);
        RAISE;
    END;
    RETURN result;
END
$$;
COMMENT ON FUNCTION webhooks.create_webhook(text, text, text, text, jsonb) IS
    'The wizard: checks the fields, the event type, the URL, the name and that no other webhook is active for the event type, runs the connection test, and stores the webhook already active.';

CREATE FUNCTION webhooks._get_webhook(name text, lock boolean DEFAULT true) RETURNS webhooks.webhooks
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result webhooks.webhooks;
BEGIN
    PERFORM webhooks._require(name, 'webhook name');
    IF lock THEN
        SELECT * INTO result FROM webhooks.webhooks w WHERE w.name = _get_webhook.name FOR UPDATE;
    ELSE
        SELECT * INTO result FROM webhooks.webhooks w WHERE w.name = _get_webhook.name;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM webhooks.webhooks lists the webhooks.';
    END IF;
    RETURN result;
END
$$;

CREATE FUNCTION webhooks.activate_webhook(name text) RETURNS webhooks.webhooks
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(name);
    t record;
BEGIN
    IF w.is_active THEN
        RAISE NOTICE 'webhook "%" is already active', name;
        RETURN w;
    END IF;
    PERFORM webhooks._lock_event_type(w.event_type);
    PERFORM webhooks._require_no_active(w.event_type, w.id);
    t := webhooks.test_connection(w.target_url, w.event_type, w.auth_token, w.headers, w.secret, w.name,
                                  CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END);
    IF NOT t.ok THEN
        PERFORM webhooks._raise_test_failure(name, t);
    END IF;
    BEGIN
        UPDATE webhooks.webhooks SET is_active = true WHERE id = w.id RETURNING * INTO w;
    EXCEPTION WHEN unique_violation THEN
        PERFORM webhooks._require_no_active(w.event_type, w.id);
        RAISE;
    END;
    RETURN w;
END
$$;
COMMENT ON FUNCTION webhooks.activate_webhook(text) IS
    'Re-checks that no other webhook is active for the event type, re-runs the connection test, and activates; held deliveries resume.';

CREATE FUNCTION webhooks.deactivate_webhook(name text, reason text DEFAULT NULL) RETURNS webhooks.webhooks
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(name);
BEGIN
    IF NOT w.is_active THEN
        RAISE NOTICE 'webhook "%" is already inactive', name;
        RETURN w;
    END IF;
    UPDATE webhooks.webhooks SET is_active = false,
           deactivated_reason = coalesce(reason, 'deactivated by ' || session_user)
     WHERE id = w.id RETURNING * INTO w;
    RETURN w;
END
$$;
COMMENT ON FUNCTION webhooks.deactivate_webhook(text, text) IS
    'Deactivates a webhook; its pending deliveries are held until it is activated again.';

CREATE FUNCTION webhooks.update_webhook(
    name text,
    new_name text DEFAULT NULL,
    event_type text DEFAULT NULL,
    target_url text DEFAULT NULL,
    auth_token text DEFAULT NULL,
    headers jsonb DEFAULT NULL)
    RETURNS webhooks.webhooks
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(name);
BEGIN
    IF w.is_active THEN
        RAISE EXCEPTION 'webhook "%" is active and cannot be edited', name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Deactivate it first with webhooks.deactivate_webhook().';
    END IF;
    IF new_name IS NOT NULL THEN
        PERFORM webhooks._require(new_name, 'webhook name');
        IF new_name <> w.name AND EXISTS (SELECT FROM webhooks.webhooks x WHERE x.name = new_name) THEN
            RAISE EXCEPTION 'webhook "%" already exists', new_name
                USING ERRCODE = 'unique_violation', HINT = 'Choose another name.';
        END IF;
    END IF;
    IF event_type IS NOT NULL THEN
        PERFORM webhooks._require_event_type(event_type);
        IF event_type <> w.event_type AND EXISTS (
            SELECT FROM webhooks.deliveries d WHERE d.webhook_id = w.id AND d.state IN ('pending', 'held')
            UNION ALL SELECT FROM webhooks.event_batches b WHERE b.webhook_id = w.id) THEN
            RAISE EXCEPTION 'webhook "%" has undelivered % deliveries', name, w.event_type
                USING ERRCODE = 'object_in_use',
                      DETAIL = 'Its queued payloads are of the old event type.',
                      HINT = 'Activate it to deliver them, or delete them with webhooks.delete_webhook(name, discard_pending => true).';
        END IF;
    END IF;
    IF target_url IS NOT NULL THEN
        PERFORM webhooks._require(target_url, 'target URL');
    END IF;
    UPDATE webhooks.webhooks x SET
        name = coalesce(new_name, x.name),
        event_type = coalesce(update_webhook.event_type, x.event_type),
        target_url = coalesce(update_webhook.target_url, x.target_url),
        auth_token = CASE WHEN update_webhook.auth_token IS NULL THEN x.auth_token
                          WHEN update_webhook.auth_token = '' THEN NULL
                          ELSE update_webhook.auth_token END,
        headers = coalesce(update_webhook.headers, x.headers)
     WHERE x.id = w.id RETURNING * INTO w;
    RETURN w;
END
$$;
COMMENT ON FUNCTION webhooks.update_webhook(text, text, text, text, text, jsonb) IS
    'Edits an inactive webhook; NULL keeps a field, auth_token => '''' removes the token.';

CREATE FUNCTION webhooks.delete_webhook(name text, discard_pending boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(name);
BEGIN
    IF discard_pending THEN
        INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, error_content, webhook_payload,
                                           delivery_id, attempt, outcome)
        SELECT w.name, w.id, 'discarded: webhook deleted by ' || session_user, webhooks._json_or_null(d.body),
               d.id, d.attempts, 'discarded'
          FROM webhooks.deliveries d
         WHERE d.webhook_id = w.id AND d.state IN ('pending', 'held');
        DELETE FROM webhooks.deliveries d WHERE d.webhook_id = w.id AND d.state IN ('pending', 'held');
        INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, error_content, webhook_payload, outcome)
        SELECT w.name, w.id, 'discarded: webhook deleted by ' || session_user, webhooks._json_or_null(x.body), 'discarded'
          FROM webhooks.event_batches b, string_to_table(b.bodies, E'\n') AS x(body)
         WHERE b.webhook_id = w.id;
        DELETE FROM webhooks.event_batches b WHERE b.webhook_id = w.id;
    END IF;
    DELETE FROM webhooks.webhooks x WHERE x.id = w.id;
END
$$;
COMMENT ON FUNCTION webhooks.delete_webhook(text, boolean) IS
    'Deletes a webhook. Refused while deliveries are queued for it, unless discard_pending, which logs each one in webhook_logs (outcome discarded).';

CREATE FUNCTION webhooks.rotate_secret(name text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(name);
    v_secret text := webhooks.generate_secret();
BEGIN
    UPDATE webhooks.webhooks x SET
        previous_secret = x.secret,
        previous_secret_expires_at = now() + pg_catalog.current_setting('webhooks.secret_grace_period')::interval,
        secret = v_secret
     WHERE x.id = w.id;
    RETURN v_secret;
END
$$;
COMMENT ON FUNCTION webhooks.rotate_secret(text) IS
    'Replaces the signing secret and returns the new one; the old one keeps signing for webhooks.secret_grace_period.';

------------------------------------------------------------------------------
-- Enqueueing
------------------------------------------------------------------------------
CREATE FUNCTION webhooks.emit(event_type text, payload jsonb) RETURNS bigint
    AS 'MODULE_PATHNAME', 'webhooks_emit'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION webhooks.emit(text, jsonb) IS
    'Enqueues one event in the current transaction; returns the delivery id, or NULL when no webhook is active for the event type.';

CREATE FUNCTION webhooks.enqueue_event() RETURNS trigger
    AS 'MODULE_PATHNAME', 'webhooks_enqueue_event'
    LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION webhooks.enqueue_event() IS
    'Trigger function, argument the event type: enqueues an event per inserted row (row trigger, or statement trigger with REFERENCING NEW TABLE).';

------------------------------------------------------------------------------
-- Operations
------------------------------------------------------------------------------
CREATE FUNCTION webhooks.redeliver(delivery_id bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d webhooks.deliveries;
BEGIN
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
    UPDATE webhooks.deliveries x SET
        state = CASE WHEN w.is_active THEN 'pending' ELSE 'held' END,
        attempts = 0, next_attempt_at = now(), lease_until = NULL, finished_at = NULL
      FROM webhooks.webhooks w
     WHERE x.id = delivery_id AND w.id = x.webhook_id;
    PERFORM webhooks._wake_worker();
    RETURN true;
END
$$;
COMMENT ON FUNCTION webhooks.redeliver(bigint) IS
    'Queues a delivered or dead delivery again, with a fresh retry schedule and the same webhook-id.';

CREATE FUNCTION webhooks.redeliver_dead(webhook_name text, since timestamptz DEFAULT '-infinity') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w webhooks.webhooks := webhooks._get_webhook(webhook_name, false);
    n bigint;
BEGIN
    UPDATE webhooks.deliveries x SET
        state = CASE WHEN w.is_active THEN 'pending' ELSE 'held' END,
        attempts = 0, next_attempt_at = now(), lease_until = NULL, finished_at = NULL
     WHERE x.webhook_id = w.id AND x.state = 'dead' AND x.finished_at >= since;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM webhooks._wake_worker();
    RETURN n;
END
$$;
COMMENT ON FUNCTION webhooks.redeliver_dead(text, timestamptz) IS
    'Queues again every dead delivery of a webhook that died at or after since; returns how many.';

------------------------------------------------------------------------------
-- Views
------------------------------------------------------------------------------
CREATE VIEW webhooks.pending_deliveries AS
SELECT d.id AS delivery_id, w.name AS webhook_name, d.webhook_id, d.event_type, d.state,
       coalesce(d.lease_until > now(), false) AS in_flight, d.attempts, d.next_attempt_at, d.created_at,
       d.last_attempt_at, d.last_status, d.last_error
  FROM webhooks.deliveries d LEFT JOIN webhooks.webhooks w ON w.id = d.webhook_id
 WHERE d.state IN ('pending', 'held');
COMMENT ON VIEW webhooks.pending_deliveries IS
    'Deliveries not yet delivered: queued, retrying, in flight, or held by an inactive webhook.';

CREATE VIEW webhooks.dead_deliveries AS
SELECT d.id AS delivery_id, w.name AS webhook_name, d.webhook_id, d.event_type, d.attempts,
       d.created_at, d.finished_at AS died_at, d.last_status, d.last_error, webhooks._json_or_null(d.body) AS payload
  FROM webhooks.deliveries d LEFT JOIN webhooks.webhooks w ON w.id = d.webhook_id
 WHERE d.state = 'dead';
COMMENT ON VIEW webhooks.dead_deliveries IS
    'Deliveries whose attempts are exhausted; webhooks.redeliver() or redeliver_dead() queue them again.';

CREATE VIEW webhooks.webhook_stats AS
SELECT w.id AS webhook_id, w.name AS webhook_name, w.event_type, w.is_active,
       coalesce(d.pending, 0) + coalesce(b.queued, 0) AS pending,
       coalesce(d.in_flight, 0) AS in_flight,
       coalesce(d.held, 0) AS held,
       coalesce(d.delivered, 0) AS delivered,
       coalesce(l.failed_attempts, 0) AS failed_attempts,
       coalesce(d.dead, 0) AS dead,
       d.last_success,
       l.last_failure,
       d.latency_p50_ms,
       d.latency_p99_ms
  FROM webhooks.webhooks w
  LEFT JOIN (
    SELECT webhook_id,
           count(*) FILTER (WHERE state = 'pending') AS pending,
           count(*) FILTER (WHERE state = 'pending' AND lease_until > now()) AS in_flight,
           count(*) FILTER (WHERE state = 'held') AS held,
           count(*) FILTER (WHERE state = 'delivered') AS delivered,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           max(finished_at) FILTER (WHERE state = 'delivered') AS last_success,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at) * 1000)
               FILTER (WHERE state = 'delivered') AS latency_p50_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at) * 1000)
               FILTER (WHERE state = 'delivered') AS latency_p99_ms
      FROM webhooks.deliveries GROUP BY webhook_id) d ON d.webhook_id = w.id
  LEFT JOIN (
    SELECT webhook_id, count(*) AS failed_attempts, max(occurrence_date) AS last_failure
      FROM webhooks.webhook_logs GROUP BY webhook_id) l ON l.webhook_id = w.id
  LEFT JOIN (
    SELECT webhook_id, sum(events) AS queued
      FROM webhooks.event_batches GROUP BY webhook_id) b ON b.webhook_id = w.id;
COMMENT ON VIEW webhooks.webhook_stats IS
    'Per webhook: deliveries pending (including events still in batches) / in flight / held / delivered / dead, failed attempts, last success and failure, and enqueue-to-delivery latency (over the retention window).';

CREATE VIEW webhooks.webhooks_public AS
SELECT id, name, event_type, target_url, is_active, auth_token IS NOT NULL AS has_auth_token,
       (SELECT coalesce(array_agg(k ORDER BY k), '{}') FROM jsonb_object_keys(headers) k) AS header_names,
       deactivated_reason, created_at, updated_at
  FROM webhooks.webhooks;
COMMENT ON VIEW webhooks.webhooks_public IS
    'The webhooks without their secrets, tokens and header values, for webhooks_reader.';

------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC
------------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA webhooks FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhooks FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhooks FROM PUBLIC;

GRANT USAGE ON SCHEMA webhooks TO webhooks_admin, webhooks_writer, webhooks_reader;

-- reader: definitions without secrets, logs, queue views
GRANT SELECT ON webhooks.event_types, webhooks.webhooks_public, webhooks.webhook_logs,
      webhooks.pending_deliveries, webhooks.dead_deliveries, webhooks.webhook_stats
   TO webhooks_reader;

-- writer: emit events and attach the trigger to its own tables
GRANT SELECT ON webhooks.event_types TO webhooks_writer;
GRANT EXECUTE ON FUNCTION webhooks.emit(text, jsonb), webhooks.enqueue_event(),
      webhooks.build_payload(text, jsonb)
   TO webhooks_writer;

-- admin: everything a human operator does
GRANT SELECT ON ALL TABLES IN SCHEMA webhooks TO webhooks_admin;
GRANT INSERT, UPDATE, DELETE ON webhooks.webhooks TO webhooks_admin;
GRANT UPDATE, DELETE ON webhooks.deliveries, webhooks.event_batches TO webhooks_admin;
GRANT INSERT ON webhooks.deliveries TO webhooks_admin;
GRANT INSERT ON webhooks.webhook_logs TO webhooks_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA webhooks TO webhooks_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhooks TO webhooks_admin;
REVOKE EXECUTE ON FUNCTION webhooks._builtin_event_types(), webhooks._check_preloaded() FROM webhooks_admin;

-- wake the worker so it notices the new extension without a restart
SELECT webhooks._wake_worker();
