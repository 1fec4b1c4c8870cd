-- webhooks 1.5 -> 1.6: ALTER EXTENSION webhooks UPDATE
--
-- Cheaper enqueueing (issue 11).  Sessions keep the route of an event type
-- (which webhook is active for it) across transactions instead of reading
-- webhooks.webhooks for every one; a statement trigger on that table sends
-- the relcache invalidation that makes every session read it again after a
-- change.  It fires in every session_replication_role (ENABLE ALWAYS): a
-- replica-mode load of webhooks must invalidate too.  No row changes.

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
