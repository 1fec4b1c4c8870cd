-- webhooks.emit(): validation against the event type, the exact stored body,
-- and transactional enqueueing.
\set SHOW_CONTEXT never

-- no active webhook: nothing is queued, NULL is returned
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}') AS no_webhook;
SELECT count(*) FROM webhooks.deliveries;

INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active) VALUES
    ('opens', 'EmailOpens', 'https://hooks.example.com/opens', true),
    ('subs', 'Subscriptions', 'https://hooks.example.com/subs', true),
    ('confirmations', 'Confirmations', 'https://hooks.example.com/conf', true);

-- the body: eventType first, eventDate in UTC with Z, the fields in the spec's order
SELECT webhooks.emit('EmailOpens', '{"subscriberEmail": "test@test.com", "subscriberId": 5823952,
                                     "messageId": 149211, "eventDate": "2024-05-10T13:28:23.2093755Z"}') IS NOT NULL AS queued;
SELECT webhooks.emit('Subscriptions', '{"eventType": "Subscriptions", "listId": 7477, "subscriberId": 6552356,
                                        "subscriberEmail": "test@test.com", "eventDate": "2024-05-10 13:52:50.496997+02"}') IS NOT NULL AS queued;
SELECT webhooks.emit('Confirmations', '{"listId": 7480, "messageId": 149212, "subscriberId": 5823952,
                                        "subscriberEmail": "zoë \"q\" <x@y>", "eventDate": "2024-05-13T11:21:12Z"}') IS NOT NULL AS queued;
SELECT d.event_type, w.name AS bound_to, d.state, d.attempts, d.body
  FROM webhooks.deliveries d JOIN webhooks.webhooks w ON w.id = d.webhook_id ORDER BY d.id;

-- eventDate filled in when absent: the transaction's time, UTC, microseconds, Z
BEGIN;
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}') AS id \gset
SELECT body::json->>'eventDate' = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS dated_now
  FROM webhooks.deliveries WHERE id = :id;
COMMIT;

-- every event type accepts the specification's example and renders it byte for byte
SELECT event_type, webhooks.build_payload(event_type, example::jsonb) = example::text AS example_round_trips
  FROM webhooks.event_types ORDER BY event_type;
SELECT event_type, webhooks.dummy_payload(event_type)::jsonb - 'eventDate' = example::jsonb - 'eventDate' AS dummy_matches
  FROM webhooks.event_types ORDER BY event_type;

-- bad payloads: each a clear error, nothing queued
SELECT count(*) AS before FROM webhooks.deliveries \gset
SELECT webhooks.emit('EmailOpened', '{}');
SELECT webhooks.emit(NULL, '{}');
SELECT webhooks.emit('EmailOpens', NULL);
SELECT webhooks.emit('EmailOpens', '[1, 2]');
SELECT webhooks.emit('EmailOpens', '"text"');
SELECT webhooks.emit('EmailOpens', '{"subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"messageId": null, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"messageId": "1", "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"messageId": 1.5, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"messageId": 1e30, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": 3}');
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com", "listId": 4}');
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com", "nested": {"a": 1}}');
SELECT webhooks.emit('EmailOpens', '{"eventType": "EmailClicks", "messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"eventType": 7, "messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"eventDate": "yesterday-ish", "messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"eventDate": 1715347703, "messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailOpens', '{"eventDate": "infinity", "messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SET webhooks.max_payload_size = 256;
SELECT webhooks.emit('EmailOpens', jsonb_build_object('messageId', 1, 'subscriberId', 2, 'subscriberEmail', repeat('x', 300)));
RESET webhooks.max_payload_size;
SELECT regress.sqlstate($$SELECT webhooks.emit('Nope', '{}')$$) AS unknown_type,
       regress.sqlstate($$SELECT webhooks.emit('EmailOpens', '{"messageId": "1", "subscriberId": 2, "subscriberEmail": "a"}')$$) AS wrong_type,
       regress.sqlstate($$SELECT webhooks.emit('EmailOpens', '{"eventDate": "x", "messageId": 1, "subscriberId": 2, "subscriberEmail": "a"}')$$) AS bad_date;
SELECT count(*) = :before AS nothing_queued FROM webhooks.deliveries;

-- transactional: a rolled-back transaction or savepoint leaves nothing
BEGIN;
SELECT webhooks.emit('EmailOpens', '{"messageId": 10, "subscriberId": 2, "subscriberEmail": "a@example.com"}') IS NOT NULL AS queued;
ROLLBACK;
BEGIN;
SELECT webhooks.emit('EmailOpens', '{"messageId": 11, "subscriberId": 2, "subscriberEmail": "a@example.com"}') IS NOT NULL AS queued;
SAVEPOINT s;
SELECT webhooks.emit('EmailOpens', '{"messageId": 12, "subscriberId": 2, "subscriberEmail": "a@example.com"}') IS NOT NULL AS queued;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT body::json->>'messageId' AS message_id FROM webhooks.deliveries
 WHERE body::json->>'messageId' IN ('10', '11', '12');

-- a deactivated webhook no longer receives new events
UPDATE webhooks.webhooks SET is_active = false WHERE name = 'subs';
SELECT webhooks.emit('Subscriptions', '{"listId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}') AS inactive;
-- and its queued deliveries are held, then released on activation
SELECT state FROM webhooks.deliveries WHERE event_type = 'Subscriptions';
UPDATE webhooks.webhooks SET is_active = true WHERE name = 'subs';
SELECT state FROM webhooks.deliveries WHERE event_type = 'Subscriptions';

-- The queue row is written without SQL (src/queue.c), keeping the table's
-- rules: a CHECK constraint an administrator adds holds for emit() and the
-- row trigger alike, and nothing is queued by the failing call
SELECT count(*) AS before FROM webhooks.deliveries \gset
ALTER TABLE webhooks.deliveries ADD CONSTRAINT regress_short_body CHECK (length(body) < 20) NOT VALID;
\set VERBOSITY terse
SELECT webhooks.emit('EmailOpens', '{"messageId": 20, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
CREATE TABLE regress_opens (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER regress_opens_webhook AFTER INSERT ON regress_opens
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO regress_opens VALUES (21, 2, 'a@example.com');
\set VERBOSITY default
ALTER TABLE webhooks.deliveries DROP CONSTRAINT regress_short_body;
SELECT count(*) - :before AS queued_despite_check FROM webhooks.deliveries;
-- a changed column default is used from the next row on (the cached
-- defaults follow the table's definition)
ALTER TABLE webhooks.deliveries ALTER COLUMN next_attempt_at SET DEFAULT now() + interval '1 hour';
INSERT INTO regress_opens VALUES (22, 2, 'a@example.com');
ALTER TABLE webhooks.deliveries ALTER COLUMN next_attempt_at SET DEFAULT now();
INSERT INTO regress_opens VALUES (23, 2, 'a@example.com');
SELECT body::json->>'messageId' AS message_id, next_attempt_at > now() + interval '59 minutes' AS later,
       state, attempts, msg_id ~ '^msg_[0-9a-f]{32}$' AS msg_id_ok
  FROM webhooks.deliveries WHERE body::json->>'messageId' IN ('22', '23') ORDER BY id;
-- a trigger on the queue table fires (such a table takes the SQL INSERT)
CREATE FUNCTION regress_queue_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'queued % for webhook %', NEW.body::json->>'messageId', NEW.webhook_id IS NOT NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER regress_seen BEFORE INSERT ON webhooks.deliveries
    FOR EACH ROW EXECUTE FUNCTION regress_queue_seen();
SELECT webhooks.emit('EmailOpens', '{"messageId": 24, "subscriberId": 2, "subscriberEmail": "a@example.com"}') IS NOT NULL AS queued;
INSERT INTO regress_opens VALUES (25, 2, 'a@example.com');
DROP TRIGGER regress_seen ON webhooks.deliveries;
DROP FUNCTION regress_queue_seen();
DROP TABLE regress_opens;
DELETE FROM webhooks.deliveries WHERE body::json->>'messageId' IN ('22', '23', '24', '25');
SELECT count(*) - :before AS queued_and_deleted FROM webhooks.deliveries;

-- the views
SELECT webhook_name, event_type, state, in_flight, attempts FROM webhooks.pending_deliveries ORDER BY delivery_id;
SELECT webhook_name, pending, in_flight, held, delivered, failed_attempts, dead FROM webhooks.webhook_stats ORDER BY webhook_id;

DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.webhooks;
