-- Every kind of bad input to the wizard and the management functions gets a
-- clear error with a SQLSTATE and changes nothing.  (The connection test
-- itself and the success paths run against a real receiver in the TAP tests;
-- here the checks that come before it.)
\set VERBOSITY default
\set SHOW_CONTEXT never

-- an active webhook written directly (no connection test; delivery is off here)
INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
VALUES ('opens', 'EmailOpens', 'https://hooks.example.com/opens', true);

-- the specification's order: fields filled ...
SELECT webhooks.create_webhook(NULL, 'EmailOpens', 'https://hooks.example.com/x');
SELECT webhooks.create_webhook('  ', 'EmailOpens', 'https://hooks.example.com/x');
SELECT webhooks.create_webhook('x', NULL, 'https://hooks.example.com/x');
SELECT webhooks.create_webhook('x', 'EmailOpens', '');
-- ... event type known ...
SELECT webhooks.create_webhook('x', 'EmailOpened', 'http://hooks.example.com/x');
-- ... valid HTTPS URL ...
SELECT webhooks.create_webhook('x', 'EmailOpens', 'http://hooks.example.com/x');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://user:pw@hooks.example.com/x');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://10.1.2.3/x');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://localhost/x');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://169.254.169.254/latest/meta-data');
-- ... valid extra headers ...
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://hooks.example.com/x', headers => '{"webhook-signature": "forged"}');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://hooks.example.com/x', auth_token => 't', headers => '{"Authorization": "Basic x"}');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://hooks.example.com/x', headers => '{"X-A": "a\r\nX-B: b"}');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://hooks.example.com/x', headers => '{"X A": "a"}');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://hooks.example.com/x', headers => '{"X-A": 1}');
SELECT webhooks.create_webhook('x', 'EmailOpens', 'https://hooks.example.com/x', headers => '["X-A"]');
-- ... name free ...
SELECT webhooks.create_webhook('opens', 'EmailSends', 'https://hooks.example.com/x');
-- ... no other active webhook for the event type (the error names it)
SELECT webhooks.create_webhook('opens-2', 'EmailOpens', 'https://hooks.example.com/x');

SELECT regress.sqlstate($$SELECT webhooks.create_webhook(NULL, 'EmailOpens', 'https://hooks.example.com/x')$$) AS null_name,
       regress.sqlstate($$SELECT webhooks.create_webhook('', 'EmailOpens', 'https://hooks.example.com/x')$$) AS empty_name,
       regress.sqlstate($$SELECT webhooks.create_webhook('x', 'Nope', 'https://hooks.example.com/x')$$) AS unknown_type,
       regress.sqlstate($$SELECT webhooks.create_webhook('x', 'EmailOpens', 'ftp://hooks.example.com/x')$$) AS bad_url,
       regress.sqlstate($$SELECT webhooks.create_webhook('opens', 'EmailSends', 'https://hooks.example.com/x')$$) AS name_taken,
       regress.sqlstate($$SELECT webhooks.create_webhook('o2', 'EmailOpens', 'https://hooks.example.com/x')$$) AS type_taken;

-- nothing was stored by any of that
SELECT name, event_type, is_active FROM webhooks.webhooks ORDER BY id;

-- management functions on names that do not exist
SELECT webhooks.activate_webhook('nope');
SELECT webhooks.deactivate_webhook('nope');
SELECT webhooks.update_webhook('nope', target_url => 'https://hooks.example.com/y');
SELECT webhooks.delete_webhook('nope');
SELECT webhooks.rotate_secret('nope');
SELECT webhooks.activate_webhook(NULL);

-- editing an active webhook is refused, whichever way
SELECT webhooks.update_webhook('opens', target_url => 'https://hooks.example.com/y');
UPDATE webhooks.webhooks SET target_url = 'https://hooks.example.com/y' WHERE name = 'opens';
UPDATE webhooks.webhooks SET name = 'renamed' WHERE name = 'opens';
UPDATE webhooks.webhooks SET headers = '{"X-A": "b"}' WHERE name = 'opens';
UPDATE webhooks.webhooks SET secret = webhooks.generate_secret() WHERE name = 'opens';
SELECT regress.sqlstate($$UPDATE webhooks.webhooks SET event_type = 'EmailSends' WHERE name = 'opens'$$) AS edit_active;

-- a second active webhook for the type, by direct DML
INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
VALUES ('opens-2', 'EmailOpens', 'https://hooks.example.com/opens2', true);
SELECT regress.sqlstate($$INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
                          VALUES ('opens-2', 'EmailOpens', 'https://hooks.example.com/o', true)$$) AS second_active;
-- bad values by direct DML
INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('bad', 'EmailSends', 'https://127.0.0.1/x');
INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('bad', 'Nope', 'https://hooks.example.com/x');
INSERT INTO webhooks.webhooks (name, event_type, target_url, secret) VALUES ('bad', 'EmailSends', 'https://hooks.example.com/x', 'secret');
INSERT INTO webhooks.webhooks (name, event_type, target_url, auth_token) VALUES ('bad', 'EmailSends', 'https://hooks.example.com/x', E'tok\nen');
INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('', 'EmailSends', 'https://hooks.example.com/x');

-- rotation is the one change an active webhook accepts
SELECT secret AS old_secret FROM webhooks.webhooks WHERE name = 'opens' \gset
SELECT webhooks.rotate_secret('opens') <> :'old_secret' AS rotated;
SELECT previous_secret = :'old_secret' AS old_kept,
       previous_secret_expires_at > now() + interval '23 hours' AS grace_period
  FROM webhooks.webhooks WHERE name = 'opens';

-- deactivate, then edit
SELECT name, is_active, deactivated_reason FROM webhooks.deactivate_webhook('opens');
SELECT (webhooks.deactivate_webhook('opens')).is_active AS still_active;
SELECT name, target_url, auth_token, headers
  FROM webhooks.update_webhook('opens', target_url => 'https://hooks.example.com/v2',
                               auth_token => 'tok', headers => '{"X-Source": "crm"}');
SELECT name, auth_token FROM webhooks.update_webhook('opens', auth_token => '');
SELECT webhooks.update_webhook('opens', target_url => 'http://hooks.example.com/v2');
SELECT webhooks.update_webhook('opens', event_type => 'Nope');
SELECT webhooks.update_webhook('opens', new_name => '');
SELECT webhooks.update_webhook('opens', headers => '{"Content-Type": "text/plain"}');
INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('other', 'EmailSends', 'https://hooks.example.com/o');
SELECT webhooks.update_webhook('opens', new_name => 'other');
-- activation re-checks uniqueness before its connection test
INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
VALUES ('opens-3', 'EmailOpens', 'https://hooks.example.com/o3', true);
SELECT webhooks.activate_webhook('opens');

-- a held delivery blocks deletion
UPDATE webhooks.webhooks SET is_active = false WHERE name = 'opens-3';
UPDATE webhooks.webhooks SET is_active = true WHERE name = 'opens';
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}') IS NOT NULL AS queued;
UPDATE webhooks.webhooks SET is_active = false WHERE name = 'opens';
SELECT state, count(*) FROM webhooks.deliveries GROUP BY 1;
SELECT webhooks.delete_webhook('opens');
SELECT regress.sqlstate($$SELECT webhooks.delete_webhook('opens')$$) AS delete_held;
SELECT webhooks.delete_webhook('opens', discard_pending => true);
SELECT webhook_name, status, error_content LIKE 'discarded: webhook deleted%' AS discarded, outcome,
       webhook_payload->>'eventType' AS event_type
  FROM webhooks.webhook_logs;
SELECT count(*) AS deliveries_left FROM webhooks.deliveries;

-- redelivery needs a finished delivery
SELECT webhooks.redeliver(424242);
UPDATE webhooks.webhooks SET is_active = true WHERE name = 'opens-3';
SELECT webhooks.emit('EmailOpens', '{"messageId": 1, "subscriberId": 2, "subscriberEmail": "a@example.com"}') AS id \gset
SELECT webhooks.redeliver(:id);
SELECT webhooks.redeliver_dead('nope');
SELECT webhooks.redeliver_dead('opens-3') AS none_dead;

-- the connection test's own input checks
SELECT * FROM webhooks.test_connection(NULL, 'EmailOpens');
SELECT * FROM webhooks.test_connection('https://hooks.example.com/x', '');
SELECT * FROM webhooks.test_connection('https://hooks.example.com/x', 'Nope');
SELECT * FROM webhooks.test_connection('https://hooks.example.com:0/x', 'EmailOpens');
SELECT * FROM webhooks.test_connection('https://hooks.example.com/x', 'EmailOpens', secret => 'whsec_short');
SELECT * FROM webhooks.test_connection('https://hooks.example.com/x', 'EmailOpens', headers => '{"Host": "evil"}');
SELECT * FROM webhooks.test_connection('https://hooks.example.com/x', 'EmailOpens', auth_token => E'a\r\nb');

-- clean up for the next test
DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.webhook_logs;
DELETE FROM webhooks.webhooks;
