-- webhooks 1.1 -> 1.2: ALTER EXTENSION webhooks UPDATE
--
-- 1.2 changes no table: every row stays as 1.1 left it (test/t/066_upgrade_1_1.pl).

\echo Use "ALTER EXTENSION webhooks UPDATE" to load this file. \quit

------------------------------------------------------------------------------
-- Validation: each rule defined once (src/validate.c)
------------------------------------------------------------------------------

-- The table guard checks the auth token and the previous secret with the
-- C functions the wizard, the connection test and the worker's send-time
-- check use: 1.0 had its own copy of the token rule here, and called a bad
-- previous secret "invalid webhook secret" where the connection test said
-- "invalid previous webhook secret".
CREATE FUNCTION webhooks._check_auth_token(auth_token text) RETURNS void
    AS 'MODULE_PATHNAME', 'webhooks_check_auth_token' LANGUAGE C IMMUTABLE
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION webhooks._check_secret(secret text, previous boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'webhooks_check_secret' LANGUAGE C IMMUTABLE
    SET search_path = pg_catalog, pg_temp;

-- The rules hold for direct DML too, not only for the functions.
CREATE OR REPLACE FUNCTION webhooks._webhooks_guard() RETURNS trigger
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
    PERFORM webhooks._check_auth_token(NEW.auth_token);
    IF TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.secret THEN
        PERFORM webhooks._check_secret(NEW.secret);
    END IF;
    IF NEW.previous_secret IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.previous_secret IS DISTINCT FROM OLD.previous_secret) THEN
        PERFORM webhooks._check_secret(NEW.previous_secret, true);
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


-- Privileges of the objects added by this version
REVOKE ALL ON FUNCTION webhooks._check_auth_token(text), webhooks._check_secret(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks._check_auth_token(text), webhooks._check_secret(text, boolean) TO webhooks_admin;

-- wake the worker so it serves the updated install at once
SELECT webhooks._wake_worker();
