-- webhooks 1.1 -> 1.2: ALTER EXTENSION webhooks UPDATE
--
-- 1.2 changes no table: every row stays as 1.1 left it (test/t/066_upgrade_1_1.pl).

\echo Use "ALTER EXTENSION webhooks UPDATE" to load this file. \quit

-- wake the worker so it serves the updated install at once
SELECT webhooks._wake_worker();
