-- webhooks 1.3 -> 1.4: ALTER EXTENSION webhooks UPDATE
--
-- Every database, several workers (issue 12): a launcher starts delivery
-- workers in each database with the extension (webhooks.workers_per_database
-- of them).  No table changes; webhooks.workers() lists the workers of every
-- database from shared memory.

\echo Use "ALTER EXTENSION webhooks UPDATE" to load this file. \quit

CREATE FUNCTION webhooks.workers(
    OUT database name, OUT worker integer, OUT pid integer, OUT in_flight integer,
    OUT last_claim_at timestamptz, OUT commit_wakeups bigint)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'webhooks_workers' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION webhooks.workers() IS
    'The delivery workers of every database: their number in the database, pid, requests in flight, last claim, and how many commits woke them.';
REVOKE ALL ON FUNCTION webhooks.workers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks.workers() TO webhooks_reader, webhooks_admin;
