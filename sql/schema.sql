-- The schema: event types, tables, indexes, privileges, comments, settings,
-- and the signing primitives against the Standard Webhooks test vectors.
CREATE EXTENSION webhooks;

-- for the tests that follow: the SQLSTATE a statement raises, or 'no error'
CREATE SCHEMA regress;
CREATE FUNCTION regress.sqlstate(cmd text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE cmd;
    RETURN 'no error';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE;
END $$;

SELECT event_type, label, fields FROM webhooks.event_types ORDER BY event_type;
SELECT event_type, example FROM webhooks.event_types ORDER BY event_type;

-- the specification's six log columns, plus ours
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'webhooks.webhook_logs'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum;

SELECT indexdef FROM pg_indexes
 WHERE schemaname = 'webhooks' AND indexname = 'webhooks_one_active_per_event_type';

-- pg_dump keeps the user data
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension WHERE extname = 'webhooks' ORDER BY 1;

-- nothing is granted to PUBLIC
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'webhooks'::regnamespace AND c.relkind IN ('r', 'v', 'S')
   AND (c.relacl IS NULL OR EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0));
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'webhooks'::regnamespace
   AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0));
SELECT rolname FROM pg_roles WHERE rolname LIKE 'webhooks\_%' ORDER BY 1;

-- every table, view and public function is commented
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'webhooks'::regnamespace AND c.relkind IN ('r', 'v')
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'webhooks'::regnamespace AND p.proname NOT LIKE '\_%'
   AND obj_description(p.oid, 'pg_proc') IS NULL;

-- SECURITY DEFINER functions pin their search_path
SELECT p.proname, p.proconfig FROM pg_proc p
 WHERE p.pronamespace = 'webhooks'::regnamespace AND p.prosecdef ORDER BY 1;

-- secrets: whsec_ + base64 of 32 random bytes, never the same twice
SELECT webhooks.generate_secret() ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS well_formed;
SELECT webhooks.generate_secret() <> webhooks.generate_secret() AS differ;

-- signatures: the official vector and the two additional ones
SELECT webhooks.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek',
                     1614265330, '{"test": 2432232314}')
       = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' AS official;
SELECT webhooks.sign('whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=', 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W',
                     1674087231, '{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}')
       = 'v1,4PMU5Dl90B4kgwxDpwuMZ/cnZ5ztf+Y+kviYQD66rJg=' AS vector_2;
SELECT webhooks.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'evt_01HX0000000000000000000000',
                     1714564800, '{"type":"email.opened","timestamp":"2024-05-01T12:00:00Z","data":{"email_id":42,"subscriber":"zoë@example.com"}}')
       = 'v1,IobhglMbiQ4Lf65x0URpuU1wojndzKe1wrv/weqgdJU=' AS vector_3_utf8;
-- bad input
SELECT webhooks.sign('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 1, '{}');
SELECT webhooks.sign('whsec_!!!!', 'msg_1', 1, '{}');
SELECT webhooks.sign('whsec_AAAA', 'msg_1', 1, '{}');
SELECT webhooks.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg.1', 1, '{}');

-- settings
SHOW webhooks.retry_schedule;
SHOW webhooks.enabled;
SHOW webhooks.allow_private_targets;
SHOW webhooks.timeout;
SET webhooks.retry_schedule = '1s';
SET webhooks.allow_private_targets = on;
ALTER SYSTEM SET webhooks.retry_schedule = '5, 10';
ALTER SYSTEM SET webhooks.retry_schedule = '5s,,5s';
ALTER SYSTEM SET webhooks.retry_schedule = 'soon';
ALTER SYSTEM SET webhooks.retry_schedule = '-5s';
ALTER SYSTEM SET webhooks.retry_schedule = '';
ALTER SYSTEM RESET webhooks.retry_schedule;
-- out of range: 17 and later also print the unit in the range, so compare
-- the message without it
DO $$
BEGIN
	SET webhooks.timeout = '50ms';
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE NOTICE '%', pg_catalog.replace(SQLERRM, ' ms', '');
END
$$;
SET webhooks.no_such_setting = 1;
