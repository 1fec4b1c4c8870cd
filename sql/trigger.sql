-- webhooks.enqueue_event(): rows of application tables become events, as a
-- row trigger and as a statement trigger with a transition table.
\set SHOW_CONTEXT never
CREATE SCHEMA app;
INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active) VALUES
    ('opens', 'EmailOpens', 'https://hooks.example.com/opens', true),
    ('clicks', 'EmailClicks', 'https://hooks.example.com/clicks', true),
    ('unsubs', 'Unsubscriptions', 'https://hooks.example.com/unsubs', true),
    ('confirmations', 'Confirmations', 'https://hooks.example.com/conf', true);

-- row trigger; created_at becomes eventDate
CREATE TABLE app.email_opens (
    id bigserial PRIMARY KEY,
    message_id bigint NOT NULL,
    subscriber_id integer NOT NULL,
    subscriber_email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    user_agent text
);
CREATE TRIGGER email_opens_webhook AFTER INSERT ON app.email_opens
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email, created_at, user_agent) VALUES
    (149211, 5823952, 'test@test.com', '2024-05-10 13:28:23.209375+00', 'Mozilla'),
    (149212, 5823953, 'o''brien@example.com', '2024-05-10 15:00:00+02', NULL);
-- the row trigger gathers a statement's events and stores them as one batch
SELECT count(*) AS batches, sum(events) AS events FROM webhooks.event_batches;
SELECT webhooks._expand_batches() AS split;
SELECT body FROM webhooks.deliveries ORDER BY id;

-- statement trigger with a transition table: one INSERT, many events
CREATE TABLE app.email_clicks (message_id int, subscriber_id bigint, subscriber_email varchar(200), event_date timestamp);
CREATE TRIGGER email_clicks_webhook AFTER INSERT ON app.email_clicks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
-- (a timestamp column is UTC wall-clock time, whatever the session's TimeZone)
SET TIME ZONE 'Europe/Warsaw';
INSERT INTO app.email_clicks SELECT 148000 + g, g, 'user' || g || '@example.com', '2024-05-10 11:30:00'
  FROM generate_series(1, 1000) g;
RESET TIME ZONE;
-- stored as compact batches of at most 1,000 events, split by the worker
-- (which is off in this instance, so we split them here)
SELECT count(*) AS batches, sum(events) AS events FROM webhooks.event_batches;
SELECT webhook_name, pending FROM webhooks.webhook_stats WHERE webhook_name = 'clicks';
SELECT webhooks._expand_batches(10) AS split;
SELECT count(*) AS batches_left FROM webhooks.event_batches;
SELECT count(*), min(body), max(body) FROM webhooks.deliveries WHERE event_type = 'EmailClicks';
SELECT bool_and(state = 'pending') AS all_pending FROM webhooks.deliveries WHERE event_type = 'EmailClicks';
SELECT count(DISTINCT body) AS distinct_bodies FROM webhooks.deliveries WHERE event_type = 'EmailClicks';

-- camelCase columns, numeric ids, no date column (the transaction's time)
CREATE TABLE app.unsubs ("listId" numeric, "subscriberId" smallint, "subscriberEmail" text);
CREATE TRIGGER unsubs_webhook AFTER INSERT ON app.unsubs
    REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('Unsubscriptions');
BEGIN;
INSERT INTO app.unsubs VALUES (7468, 42, 'u@example.com');
SELECT body::json->>'eventDate' = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS dated_now,
       body::jsonb - 'eventDate'
  FROM webhooks.deliveries WHERE event_type = 'Unsubscriptions';
COMMIT;
INSERT INTO app.unsubs VALUES (7468.5, 42, 'u@example.com');

-- four fields in the specification's order; an UPDATE trigger sends the new row;
-- a date column is 00:00:00 UTC of that day
CREATE TABLE app.confirmations (list_id int, subscriber_email text, subscriber_id int, message_id int, event_date date);
CREATE TRIGGER confirmations_webhook AFTER INSERT OR UPDATE ON app.confirmations
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('Confirmations');
INSERT INTO app.confirmations VALUES (7480, 'test@test.com', 5823952, 149212, '2024-05-13');
UPDATE app.confirmations SET subscriber_email = 'new@test.com';
SELECT body FROM webhooks.deliveries WHERE event_type = 'Confirmations' ORDER BY id;

-- a batch whose webhook was deactivated before the split is held
INSERT INTO app.email_clicks SELECT 1, g, 'late' || g || '@example.com', NULL FROM generate_series(1, 3) g;
UPDATE webhooks.webhooks SET is_active = false WHERE name = 'clicks';
SELECT webhooks._expand_batches() AS split;
SELECT state, count(*) FROM webhooks.deliveries WHERE body LIKE '%late%' GROUP BY 1;
UPDATE webhooks.webhooks SET is_active = true WHERE name = 'clicks';
SELECT state, count(*) FROM webhooks.deliveries WHERE body LIKE '%late%' GROUP BY 1;

-- no active webhook: the insert succeeds, nothing is queued
UPDATE webhooks.webhooks SET is_active = false WHERE name = 'opens';
SELECT count(*) AS before FROM webhooks.deliveries \gset
INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email) VALUES (1, 2, 'a@example.com');
SELECT count(*) - :before AS queued FROM webhooks.deliveries;
UPDATE webhooks.webhooks SET is_active = true WHERE name = 'opens';

-- transactional: rolled back with the application's rows
SELECT count(*) AS before FROM webhooks.deliveries \gset
BEGIN;
INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email) VALUES (1, 2, 'a@example.com');
SAVEPOINT s;
INSERT INTO app.email_clicks VALUES (1, 2, 'a@example.com', now());
ROLLBACK TO s;
INSERT INTO app.email_clicks VALUES (5, 6, 'b@example.com', now()), (7, 8, 'c@example.com', now());
SELECT count(*) - :before AS queued_in_xact, (SELECT sum(events) FROM webhooks.event_batches) AS batched_in_xact
  FROM webhooks.deliveries;
ROLLBACK;
SELECT count(*) - :before AS queued_after_rollback, (SELECT count(*) FROM webhooks.event_batches) AS batches_after_rollback
  FROM webhooks.deliveries;

-- mistakes: each a clear error, and the application's insert fails with it
CREATE TABLE app.bounces (message_id bigint, subscriber_email text);
CREATE TRIGGER bounces_webhook AFTER INSERT ON app.bounces
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.bounces VALUES (1, 'a@example.com');
DROP TRIGGER bounces_webhook ON app.bounces;

CREATE TABLE app.typed (message_id text, subscriber_id int, subscriber_email text);
CREATE TRIGGER typed_webhook AFTER INSERT ON app.typed
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.typed VALUES ('1', 2, 'a@example.com');
DROP TABLE app.typed;

CREATE TABLE app.dated (message_id int, subscriber_id int, subscriber_email text, event_date text);
CREATE TRIGGER dated_webhook AFTER INSERT ON app.dated
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.dated VALUES (1, 2, 'a@example.com', 'today');
DROP TABLE app.dated;

INSERT INTO app.email_clicks VALUES (1, 2, 'a@example.com', NULL), (3, 4, NULL, NULL);

CREATE TABLE app.misc (message_id int, subscriber_id int, subscriber_email text);
CREATE TRIGGER no_table AFTER INSERT ON app.misc
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.misc VALUES (1, 2, 'a@example.com');
DROP TRIGGER no_table ON app.misc;
CREATE TRIGGER no_args AFTER INSERT ON app.misc
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event();
INSERT INTO app.misc VALUES (1, 2, 'a@example.com');
DROP TRIGGER no_args ON app.misc;
CREATE TRIGGER bad_type AFTER INSERT ON app.misc
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpened');
INSERT INTO app.misc VALUES (1, 2, 'a@example.com');
DROP TRIGGER bad_type ON app.misc;
CREATE TRIGGER on_delete AFTER DELETE ON app.misc
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.misc VALUES (1, 2, 'a@example.com');
DELETE FROM app.misc;
DROP TRIGGER on_delete ON app.misc;
SELECT webhooks.enqueue_event();
SELECT count(*) - :before AS queued_by_mistakes FROM webhooks.deliveries;

-- only AFTER triggers: a BEFORE trigger's row may still be skipped (ON
-- CONFLICT DO NOTHING, a later BEFORE trigger returning NULL), an INSTEAD OF
-- trigger's row is not a stored row; each is refused, and stores nothing
CREATE TABLE app.opens_pk (message_id int PRIMARY KEY, subscriber_id int, subscriber_email text);
INSERT INTO app.opens_pk VALUES (1, 2, 'a@example.com');
SELECT count(*) AS before, coalesce(max(id), 0) AS last_id FROM webhooks.deliveries \gset
CREATE TRIGGER before_row BEFORE INSERT ON app.opens_pk
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.opens_pk VALUES (1, 2, 'a@example.com') ON CONFLICT DO NOTHING;
INSERT INTO app.opens_pk VALUES (3, 4, 'b@example.com');
DROP TRIGGER before_row ON app.opens_pk;
CREATE FUNCTION app.skip_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER a_webhook BEFORE INSERT ON app.opens_pk
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
CREATE TRIGGER b_skip BEFORE INSERT ON app.opens_pk
    FOR EACH ROW EXECUTE FUNCTION app.skip_row();
INSERT INTO app.opens_pk VALUES (5, 6, 'c@example.com');
DROP TRIGGER a_webhook ON app.opens_pk;
DROP TRIGGER b_skip ON app.opens_pk;
CREATE TRIGGER before_update BEFORE UPDATE ON app.opens_pk
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
UPDATE app.opens_pk SET subscriber_email = 'z@example.com';
DROP TRIGGER before_update ON app.opens_pk;
CREATE TRIGGER before_stmt BEFORE INSERT ON app.opens_pk
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.opens_pk VALUES (7, 8, 'd@example.com');
DROP TRIGGER before_stmt ON app.opens_pk;
CREATE VIEW app.opens_view AS SELECT * FROM app.opens_pk;
CREATE TRIGGER instead_row INSTEAD OF INSERT ON app.opens_view
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO app.opens_view VALUES (9, 10, 'e@example.com');
DROP VIEW app.opens_view;
SELECT count(*) - :before AS queued_by_wrong_timing FROM webhooks.deliveries;
SELECT count(*) AS batches_by_wrong_timing FROM webhooks.event_batches;
SELECT message_id, subscriber_email FROM app.opens_pk ORDER BY 1;

-- AFTER row and statement triggers: an event for each row really inserted,
-- none for the row ON CONFLICT DO NOTHING skipped
CREATE TRIGGER after_row AFTER INSERT ON app.opens_pk
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
CREATE TRIGGER after_stmt AFTER INSERT ON app.opens_pk REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
INSERT INTO app.opens_pk VALUES (1, 2, 'dup@example.com'), (11, 12, 'f@example.com'), (13, 14, 'g@example.com')
    ON CONFLICT DO NOTHING;
SELECT webhooks._expand_batches(10) AS split;
SELECT event_type, body::jsonb->>'messageId' AS message_id, body::jsonb->>'subscriberEmail' AS email
  FROM webhooks.deliveries WHERE id > :last_id ORDER BY 1, (body::jsonb->>'messageId')::int;
SELECT count(*) - :before AS queued_by_after_triggers FROM webhooks.deliveries;

DROP SCHEMA app CASCADE;
DELETE FROM webhooks.event_batches;
DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.webhooks;
