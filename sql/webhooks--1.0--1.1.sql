/* webhooks--1.0--1.1.sql: hardening (issue 8) */

\echo Use "ALTER EXTENSION webhooks UPDATE TO '1.1'" to load this file. \quit

-- Every object below is schema-qualified, and every function pins
-- search_path = pg_catalog, pg_temp: nothing another role creates can be
-- resolved by our SQL (CVE-2018-1058).

------------------------------------------------------------------------------
-- Delivery identity: webhook-ids fixed at enqueue, leases with tokens
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Poison rows: CHECK constraints
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Races: activation, split, claim, record, prune
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Payload dates, trigger timing
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Events that found no active webhook
------------------------------------------------------------------------------
