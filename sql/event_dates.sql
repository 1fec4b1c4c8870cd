-- eventDate does not depend on the session: the same rows and the same
-- emit() calls render byte-identical bodies whatever DateStyle and TimeZone
-- the inserting session uses.  The rule: a timestamptz is an instant; a
-- timestamp without time zone is UTC wall-clock time; a date is 00:00:00Z;
-- emit()'s text eventDate is ISO 8601 (no zone = UTC), nothing else.
\set SHOW_CONTEXT never
CREATE SCHEMA ed;
INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active) VALUES
    ('opens', 'EmailOpens', 'https://hooks.example.com/opens', true),
    ('clicks', 'EmailClicks', 'https://hooks.example.com/clicks', true),
    ('sends', 'EmailSends', 'https://hooks.example.com/sends', true);

-- The rows, stored once so every session inserts the very same values.
-- Chosen to move under the old conversions: a DST gap in New York, the day
-- before/after in Chatham (+12:45/+13:45) and Kolkata (+05:30).
CREATE TABLE ed.src (message_id int, tstz timestamptz, ts timestamp, d date, expected text);
INSERT INTO ed.src VALUES
    (1, '2024-05-10 11:30:00+00', '2024-05-10 11:30:00', '2024-05-10', NULL),
    (2, '2024-03-10 07:30:00.123456+00', '2024-03-10 02:30:00.123456', '2024-03-10', NULL),
    (3, '2024-12-31 23:59:59.999999+00', '2024-12-31 23:59:59.999999', '2024-12-31', NULL);
UPDATE ed.src SET expected = CASE message_id
    WHEN 1 THEN '2024-05-10T11:30:00.000000Z|2024-05-10T11:30:00.000000Z|2024-05-10T00:00:00.000000Z'
    WHEN 2 THEN '2024-03-10T07:30:00.123456Z|2024-03-10T02:30:00.123456Z|2024-03-10T00:00:00.000000Z'
    WHEN 3 THEN '2024-12-31T23:59:59.999999Z|2024-12-31T23:59:59.999999Z|2024-12-31T00:00:00.000000Z' END;

-- one table per date type, each with a row trigger (EmailOpens) and a
-- statement trigger (EmailClicks: a multi-row INSERT becomes a batch)
CREATE TABLE ed.t_tstz (message_id int, subscriber_id int, subscriber_email text, event_date timestamptz);
CREATE TABLE ed.t_ts (message_id int, subscriber_id int, subscriber_email text, event_date timestamp);
CREATE TABLE ed.t_date (message_id int, subscriber_id int, subscriber_email text, event_date date);
CREATE TRIGGER r AFTER INSERT ON ed.t_tstz FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
CREATE TRIGGER r AFTER INSERT ON ed.t_ts FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
CREATE TRIGGER r AFTER INSERT ON ed.t_date FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
CREATE TRIGGER s AFTER INSERT ON ed.t_tstz REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
CREATE TRIGGER s AFTER INSERT ON ed.t_ts REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
CREATE TRIGGER s AFTER INSERT ON ed.t_date REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');

-- emit()'s accepted text dates and what each must render
CREATE TABLE ed.texts (message_id int, input text, expected text);
INSERT INTO ed.texts VALUES
    (101, '2024-05-10T13:28:23.209375Z', '2024-05-10T13:28:23.209375Z'),
    (102, '2024-05-10 13:28:23', '2024-05-10T13:28:23.000000Z'),
    (103, '2024-05-10', '2024-05-10T00:00:00.000000Z'),
    (104, '2024-05-10T15:28+02:00', '2024-05-10T13:28:00.000000Z'),
    (105, '2024-05-10T08:58:23.5-04:30', '2024-05-10T13:28:23.500000Z'),
    (106, '2024-05-10T13:28:23.2093755Z', '2024-05-10T13:28:23.209376Z'),
    (107, '2024-05-11T02:13:23+1245', '2024-05-10T13:28:23.000000Z'),
    (108, '2024-03-10T02:30:00', '2024-03-10T02:30:00.000000Z'),
    (109, '2024-05-10t13:28:23z', '2024-05-10T13:28:23.000000Z'),
    (110, '2024-05-10T23:59:59.9999999+00', '2024-05-11T00:00:00.000000Z'),
    (111, '2024-02-29T12:00-00:00', '2024-02-29T12:00:00.000000Z'),
    (112, '2024-05-10 13:28:23+05', '2024-05-10T08:28:23.000000Z');
-- and forms that depend on DateStyle or TimeZone, or are not ISO 8601
CREATE TABLE ed.refused (input text);
INSERT INTO ed.refused VALUES
    ('05/10/2024'), ('10.05.2024'), ('10/05/2024 13:28'), ('May 10 2024'), ('10 May 2024'),
    ('Fri May 10 13:28:23 2024'), ('Fri 10 May 13:28:23 2024 UTC'), ('2024-05-10 13:28:23 PST'),
    ('2024-05-10 13:28:23 Europe/Warsaw'), ('2024-05-10 13:28:23 +02:00'), ('now'), ('today'),
    ('epoch'), ('infinity'), ('20240510'), ('2024-5-10'), ('2024-05-10T13'), ('2024-05-10T13:28:23,5Z'),
    ('2024-05-10T13:28:23.Z'), (' 2024-05-10'), ('2024-05-10 '), (''), ('J2460441'), ('2024-05-10Z'),
    ('2024-05-10T13:28:23+2'), ('+002024-05-10'), ('2024-05-10T13:28:23 Z'), ('24-05-10');

CREATE TABLE ed.refusals (input text, sqlstate text);
-- a session with this DateStyle and TimeZone inserts the rows and emits
CREATE PROCEDURE pg_temp.produce(datestyle text, timezone text) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM pg_catalog.set_config('DateStyle', datestyle, false);
    PERFORM pg_catalog.set_config('TimeZone', timezone, false);
    -- row by row (EmailOpens, and single-event EmailClicks straight to the queue)
    FOR r IN SELECT * FROM ed.src ORDER BY message_id LOOP
        INSERT INTO ed.t_tstz VALUES (r.message_id, 1, 'a@example.com', r.tstz);
        INSERT INTO ed.t_ts VALUES (r.message_id, 2, 'a@example.com', r.ts);
        INSERT INTO ed.t_date VALUES (r.message_id, 3, 'a@example.com', r.d);
    END LOOP;
    -- all rows in one statement (EmailClicks as a batch)
    INSERT INTO ed.t_tstz SELECT message_id, 11, 'b@example.com', tstz FROM ed.src ORDER BY message_id;
    INSERT INTO ed.t_ts SELECT message_id, 12, 'b@example.com', ts FROM ed.src ORDER BY message_id;
    INSERT INTO ed.t_date SELECT message_id, 13, 'b@example.com', d FROM ed.src ORDER BY message_id;
    FOR r IN SELECT * FROM ed.texts ORDER BY message_id LOOP
        PERFORM webhooks.emit('EmailSends', pg_catalog.jsonb_build_object(
            'messageId', r.message_id, 'subscriberId', 4, 'subscriberEmail', 'a@example.com', 'eventDate', r.input));
    END LOOP;
    FOR r IN SELECT * FROM ed.refused LOOP
        BEGIN
            PERFORM webhooks.emit('EmailSends', pg_catalog.jsonb_build_object(
                'messageId', 1, 'subscriberId', 4, 'subscriberEmail', 'a@example.com', 'eventDate', r.input));
            INSERT INTO ed.refusals VALUES (r.input, 'accepted');
        EXCEPTION WHEN others THEN
            INSERT INTO ed.refusals VALUES (r.input, SQLSTATE);
        END;
    END LOOP;
END $$;

CALL pg_temp.produce('ISO, MDY', 'UTC');
CALL pg_temp.produce('SQL, DMY', 'America/New_York');
CALL pg_temp.produce('German', 'Asia/Kolkata');
CALL pg_temp.produce('Postgres, YMD', 'Pacific/Chatham');
CALL pg_temp.produce('SQL, MDY', 'UTC+11');
RESET DateStyle;
RESET TimeZone;
SELECT webhooks._expand_batches(100) AS split;

-- per event: five sessions, one body, the expected eventDate
SELECT d.event_type, b.message_id, b.subscriber_id,
       count(*) AS sessions, count(DISTINCT d.body) AS distinct_bodies,
       bool_and(d.body::json->>'eventDate' =
                split_part(s.expected, '|', (b.subscriber_id % 10)::int)) AS expected_date
  FROM webhooks.deliveries d
  CROSS JOIN LATERAL (SELECT (d.body::json->>'messageId')::int AS message_id,
                             (d.body::json->>'subscriberId')::int AS subscriber_id) b
  JOIN ed.src s ON s.message_id = b.message_id
 WHERE d.event_type IN ('EmailOpens', 'EmailClicks')
 GROUP BY 1, 2, 3 ORDER BY 1, 3, 2;
SELECT t.message_id, t.input, count(*) AS sessions, count(DISTINCT d.body) AS distinct_bodies,
       bool_and(d.body::json->>'eventDate' = t.expected) AS expected_date
  FROM ed.texts t
  LEFT JOIN webhooks.deliveries d
    ON d.event_type = 'EmailSends' AND (d.body::json->>'messageId')::int = t.message_id
 GROUP BY 1, 2 ORDER BY 1;
-- every refused form is refused in every session, with the same error
SELECT input, count(*) AS sessions, string_agg(DISTINCT sqlstate, ',') AS sqlstates
  FROM ed.refusals GROUP BY 1 ORDER BY 1;
SELECT count(*) AS refused_but_queued FROM webhooks.deliveries
 WHERE event_type = 'EmailSends' AND (body::json->>'messageId')::int = 1;

-- the errors, in a session whose DateStyle reads 05/10/2024 as 5 October
SET DateStyle = 'SQL, DMY';
SELECT webhooks.emit('EmailSends', '{"eventDate": "05/10/2024", "messageId": 1, "subscriberId": 4, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailSends', '{"eventDate": "May 10 2024 13:28", "messageId": 1, "subscriberId": 4, "subscriberEmail": "a@example.com"}');
SELECT webhooks.emit('EmailSends', '{"eventDate": "2024-05-10 13:28:23 PST", "messageId": 1, "subscriberId": 4, "subscriberEmail": "a@example.com"}');
SELECT webhooks.build_payload('EmailSends', '{"eventDate": "2024-02-30", "messageId": 1, "subscriberId": 4, "subscriberEmail": "a@example.com"}');
SELECT webhooks.build_payload('EmailSends', '{"eventDate": "2024-05-10T24:00:00Z", "messageId": 1, "subscriberId": 4, "subscriberEmail": "a@example.com"}');
SELECT webhooks.build_payload('EmailSends', '{"eventDate": "2024-05-10T13:28:23+16:00", "messageId": 1, "subscriberId": 4, "subscriberEmail": "a@example.com"}');
SELECT webhooks.build_payload('EmailSends', '{"eventDate": "0001-01-01T00:30:00+01:00", "messageId": 1, "subscriberId": 4, "subscriberEmail": "a@example.com"}');
RESET DateStyle;

-- out-of-range column values are an error, never a body with a wrong or
-- empty eventDate, even as the first event of a fresh session
\c
\set SHOW_CONTEXT never
SELECT count(*) AS before FROM webhooks.deliveries \gset
INSERT INTO ed.t_tstz VALUES (1, 1, 'a@example.com', '-infinity');
INSERT INTO ed.t_ts VALUES (1, 1, 'a@example.com', '-infinity');
INSERT INTO ed.t_date VALUES (1, 1, 'a@example.com', '-infinity');
INSERT INTO ed.t_date VALUES (1, 1, 'a@example.com', 'infinity');
INSERT INTO ed.t_ts VALUES (1, 1, 'a@example.com', '10000-01-01 00:00:00');
SELECT count(*) - :before AS queued FROM webhooks.deliveries;
SELECT count(*) AS batches FROM webhooks.event_batches;

DROP SCHEMA ed CASCADE;
DELETE FROM webhooks.deliveries;
DELETE FROM webhooks.webhooks;
