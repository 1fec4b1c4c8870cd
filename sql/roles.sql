-- The three roles, each tried as a real non-superuser login role: what it
-- can do, and what it is refused.  Nothing is granted to PUBLIC.
\set SHOW_CONTEXT never
CREATE ROLE regress_wh_admin LOGIN IN ROLE webhooks_admin;
CREATE ROLE regress_wh_writer LOGIN IN ROLE webhooks_writer;
CREATE ROLE regress_wh_reader LOGIN IN ROLE webhooks_reader;
CREATE ROLE regress_wh_nobody LOGIN;
CREATE SCHEMA regress_app AUTHORIZATION regress_wh_writer;

INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active, auth_token, headers)
VALUES ('opens', 'EmailOpens', 'https://hooks.example.com/opens', true, 'tok-secret', '{"X-Api-Key": "k-secret"}');

-- nobody: no access at all
SET ROLE regress_wh_nobody;
SELECT count(*) FROM webhooks.webhooks;
SELECT count(*) FROM webhooks.webhook_logs;
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT * FROM webhooks.test_connection('https://hooks.example.com/x', 'EmailOpens');
RESET ROLE;

-- reader: definitions without secrets, logs, views; nothing else
SET ROLE regress_wh_reader;
SELECT name, event_type, target_url, is_active, has_auth_token, header_names FROM webhooks.webhooks_public;
SELECT secret FROM webhooks.webhooks;
SELECT auth_token FROM webhooks.webhooks;
SELECT count(*) FROM webhooks.webhook_logs;
SELECT count(*) FROM webhooks.webhook_stats;
SELECT count(*) FROM webhooks.pending_deliveries;
SELECT count(*) FROM webhooks.dead_deliveries;
SELECT count(*) FROM webhooks.event_types;
SELECT body FROM webhooks.deliveries;
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}');
SELECT webhooks.deactivate_webhook('opens');
SELECT webhooks.redeliver(1);
UPDATE webhooks.webhooks SET is_active = false;
DELETE FROM webhooks.webhook_logs;
RESET ROLE;

-- writer: emit, and its own tables with the trigger; nothing else
SET ROLE regress_wh_writer;
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}') IS NOT NULL AS emitted;
CREATE TABLE regress_app.email_opens (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER opens_webhook AFTER INSERT ON regress_app.email_opens
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
INSERT INTO regress_app.email_opens VALUES (3, 4, 'b@example.com'), (5, 6, 'c@example.com');
SELECT count(*) FROM webhooks.deliveries;
SELECT count(*) FROM webhooks.webhooks;
SELECT count(*) FROM webhooks.webhook_logs;
SELECT count(*) FROM webhooks.webhooks_public;
INSERT INTO webhooks.deliveries (webhook_id, event_type, body) VALUES (1, 'EmailOpens', '{}');
SELECT webhooks.create_webhook('mine', 'EmailSends', 'https://hooks.example.com/mine');
SELECT webhooks.rotate_secret('opens');
SELECT * FROM webhooks.test_connection('https://hooks.example.com/x', 'EmailOpens');
RESET ROLE;
SELECT (SELECT count(*) FROM webhooks.deliveries) + (SELECT coalesce(sum(events), 0) FROM webhooks.event_batches) AS queued_by_writer;

-- a dead delivery in the history, for the admin to redeliver
INSERT INTO webhooks.delivery_history (id, webhook_id, event_type, body, state, attempts, created_at, finished_at, msg_id)
SELECT 900001, id, 'EmailOpens', '{}', 'dead', 3, now(), now(), 'msg_900001' FROM webhooks.webhooks WHERE name = 'opens';

-- admin: manages webhooks, sees secrets and tokens, reads the queue and logs
SET ROLE regress_wh_admin;
SELECT secret LIKE 'whsec_%' AS sees_secret, auth_token FROM webhooks.webhooks WHERE name = 'opens';
SELECT name, is_active FROM webhooks.deactivate_webhook('opens');
SELECT name, target_url FROM webhooks.update_webhook('opens', target_url => 'https://hooks.example.com/v2');
UPDATE webhooks.webhooks SET is_active = true WHERE name = 'opens';
SELECT webhooks.rotate_secret('opens') LIKE 'whsec_%' AS rotated;
-- redelivery moves a row from the history to the queue; a log row written
-- by hand is counted (the statistics' triggers run as the extension's owner)
SELECT dead, failed_attempts FROM webhooks.webhook_stats WHERE webhook_name = 'opens';
SELECT webhooks.redeliver_dead('opens') AS redelivered;
INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, error_content, outcome)
SELECT 'opens', id, 'noted by hand', 'retry' FROM webhooks.webhooks WHERE name = 'opens';
SELECT dead, failed_attempts FROM webhooks.webhook_stats WHERE webhook_name = 'opens';
SELECT state, count(*) FROM webhooks.deliveries GROUP BY 1;
SELECT count(*) FROM webhooks.webhook_logs;
INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('sends', 'EmailSends', 'https://hooks.example.com/sends');
SELECT webhooks.delete_webhook('sends');
DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.event_batches;
SELECT webhooks.delete_webhook('opens');
SELECT count(*) AS webhooks_left FROM webhooks.webhooks;
RESET ROLE;

-- an error never shows a secret or token
SELECT webhooks.sign('whsec_not!base64', 'msg_1', 1, '{}');

DROP SCHEMA regress_app CASCADE;
DROP ROLE regress_wh_admin, regress_wh_writer, regress_wh_reader, regress_wh_nobody;
