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

-- the views
SELECT webhook_name, event_type, state, in_flight, attempts FROM webhooks.pending_deliveries ORDER BY delivery_id;
SELECT webhook_name, pending, in_flight, held, delivered, failed_attempts, dead FROM webhooks.webhook_stats ORDER BY webhook_id;

DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.webhooks;
