-- Events that found no active webhook are not delivered, but counted per
-- event type (webhooks.unrouted_events), at commit only.
\set SHOW_CONTEXT never
\set opens '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}'
\set list '{"listId": 7, "subscriberId": 2, "subscriberEmail": "a@example.com"}'
CREATE SCHEMA unrouted;
SELECT webhooks.reset_unrouted_events();

-- one row per event type, zeros included
SELECT event_type, events, last_dropped_at IS NULL AS never FROM webhooks.unrouted_events ORDER BY event_type;

-- emit() with no active webhook: NULL, and counted once
SELECT webhooks.emit('EmailOpens', :'opens') IS NULL AS not_queued;
SELECT events, last_dropped_at IS NOT NULL AS dated FROM webhooks.unrouted_events WHERE event_type = 'EmailOpens';
-- an invalid payload is an error, not an event
SELECT webhooks.emit('EmailOpens', '{"messageId": 1}');
SELECT events FROM webhooks.unrouted_events WHERE event_type = 'EmailOpens';

-- a statement trigger counts every row of its transition table
CREATE TABLE unrouted.email_clicks (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER clicks_webhook AFTER INSERT ON unrouted.email_clicks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
INSERT INTO unrouted.email_clicks SELECT i, i, 'c@example.com' FROM generate_series(1, 5) i;
SELECT events, last_dropped_at IS NOT NULL AS dated FROM webhooks.unrouted_events WHERE event_type = 'EmailClicks';

-- a row trigger counts each row
CREATE TABLE unrouted.email_sends (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER sends_webhook AFTER INSERT ON unrouted.email_sends
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailSends');
INSERT INTO unrouted.email_sends SELECT i, i, 's@example.com' FROM generate_series(1, 3) i;
SELECT events FROM webhooks.unrouted_events WHERE event_type = 'EmailSends';

-- a rolled-back transaction's events were never events
BEGIN;
SELECT webhooks.emit('EmailBounces', :'opens') IS NULL AS not_queued;
INSERT INTO unrouted.email_clicks SELECT i, i, 'c@example.com' FROM generate_series(1, 5) i;
ROLLBACK;
SELECT event_type, events, last_dropped_at IS NOT NULL AS dated FROM webhooks.unrouted_events
 WHERE event_type IN ('EmailBounces', 'EmailClicks') ORDER BY 1;

-- savepoints: a rolled-back one counts nothing (nor what was released
-- inside it), a released one counts when the transaction commits
BEGIN;
SAVEPOINT a;
SELECT webhooks.emit('EmailComplaints', :'opens') IS NULL AS not_queued;
SELECT webhooks.emit('EmailComplaints', :'opens') IS NULL AS not_queued;
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
SELECT webhooks.emit('EmailComplaints', :'opens') IS NULL AS not_queued;
RELEASE SAVEPOINT b;
SAVEPOINT c;
SELECT webhooks.emit('EmailComplaints', :'opens') IS NULL AS not_queued;
SAVEPOINT d;
INSERT INTO unrouted.email_clicks SELECT i, i, 'c@example.com' FROM generate_series(1, 10) i;
RELEASE SAVEPOINT d;
ROLLBACK TO SAVEPOINT c;
SAVEPOINT e;
SAVEPOINT f;
INSERT INTO unrouted.email_clicks SELECT i, i, 'c@example.com' FROM generate_series(1, 4) i;
RELEASE SAVEPOINT f;
RELEASE SAVEPOINT e;
-- nothing is published before the commit, not even to this session
SELECT event_type, events FROM webhooks.unrouted_events
 WHERE event_type IN ('EmailClicks', 'EmailComplaints') ORDER BY 1;
COMMIT;
SELECT event_type, events FROM webhooks.unrouted_events
 WHERE event_type IN ('EmailClicks', 'EmailComplaints') ORDER BY 1;

-- a PL/pgSQL exception block is a savepoint too
DO $$
BEGIN
    PERFORM webhooks.emit('Confirmations',
        '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com", "listId": 7}');
    RAISE EXCEPTION 'undone';
EXCEPTION WHEN raise_exception THEN
    PERFORM webhooks.emit('Subscriptions',
        '{"listId": 7, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
END
$$;
SELECT event_type, events FROM webhooks.unrouted_events
 WHERE event_type IN ('Confirmations', 'Subscriptions') ORDER BY 1;

-- an active webhook: queued, not counted (webhooks.enabled is off here)
INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
VALUES ('unrouted-opens', 'EmailOpens', 'https://hooks.example.com/opens', true);
SELECT webhooks.emit('EmailOpens', :'opens') IS NOT NULL AS queued;
CREATE TRIGGER opens_webhook AFTER INSERT ON unrouted.email_clicks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO unrouted.email_clicks SELECT i, i, 'c@example.com' FROM generate_series(1, 2) i;
SELECT (SELECT count(*) FROM webhooks.deliveries) + (SELECT coalesce(sum(events), 0) FROM webhooks.event_batches) AS queued;
SELECT event_type, events FROM webhooks.unrouted_events
 WHERE event_type IN ('EmailClicks', 'EmailOpens') ORDER BY 1;
DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.event_batches;
SELECT webhooks.delete_webhook('unrouted-opens');

-- all of it
SELECT event_type, events, last_dropped_at IS NOT NULL AS dated FROM webhooks.unrouted_events ORDER BY event_type;

-- the worker's maintenance folds the counts into the durable table; folding
-- changes no total and, done again, adds nothing
SELECT webhooks._fold_unrouted_events() >= 0 AS folded;
SELECT event_type, events FROM webhooks.unrouted_event_totals WHERE events > 0 ORDER BY 1;
SELECT webhooks.emit('EmailOpens', :'opens') IS NULL AS not_queued;
SELECT webhooks._fold_unrouted_events() >= 0 AS folded;
SELECT webhooks._fold_unrouted_events() >= 0 AS folded;
SELECT t.event_type, t.events AS saved, u.events AS shown
  FROM webhooks.unrouted_event_totals t JOIN webhooks.unrouted_events u USING (event_type)
 WHERE u.events > 0 ORDER BY 1;

-- who may read and reset
SET ROLE webhooks_writer;
SELECT count(*) FROM webhooks.unrouted_events;
RESET ROLE;
SET ROLE webhooks_reader;
SELECT count(*) FROM webhooks.unrouted_events;
SELECT webhooks.reset_unrouted_events();
RESET ROLE;
-- a reset is transactional
BEGIN;
SET LOCAL ROLE webhooks_admin;
SELECT webhooks.reset_unrouted_events();
SELECT sum(events) AS events, count(last_dropped_at) AS dated FROM webhooks.unrouted_events;
ROLLBACK;
SELECT sum(events) AS events FROM webhooks.unrouted_events;
SET ROLE webhooks_admin;
SELECT webhooks.reset_unrouted_events();
RESET ROLE;
SELECT sum(events) AS events, count(last_dropped_at) AS dated FROM webhooks.unrouted_events;
-- counting goes on after a reset
SELECT webhooks.emit('Unsubscriptions', :'list') IS NULL AS not_queued;
SELECT event_type, events FROM webhooks.unrouted_events WHERE events > 0 ORDER BY 1;

DROP SCHEMA unrouted CASCADE;
SELECT webhooks.reset_unrouted_events();
