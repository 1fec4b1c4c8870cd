# Updating a live 1.0 install to the current version (through 1.1, 1.2, 1.3, 1.4;
# ALTER EXTENSION webhooks UPDATE).
#
# The node preloads the current library and installs the extension at version
# 1.0: the worker refuses that schema, says so (with the hint to update) and
# waits, so everything enqueued stays as a 1.0 install would have it.  The
# database gets rows of every kind: active and inactive webhooks, one with a
# rotated secret; pending deliveries (emit() and a row trigger), one that
# failed an attempt, one that looks in flight (a lease of a previous worker);
# held deliveries of an inactive webhook; delivered and dead ones; log rows
# (with and without a delivery); an unsplit event batch.  After the update:
# no row lost or changed, old deliveries keep their webhook-id msg_<id> (and
# their log rows name it), the batch got a first id, the worker delivers
# everything with the right ids, bodies and signatures, held rows wait for
# the activation, redelivery keeps msg_<id>, and new events get msg_ +
# UUIDv7.  Then the updated install is compared object by object with a
# fresh CREATE EXTENSION in another database, and a DROP and CREATE of
# version 1.0 in one transaction makes the worker wait again.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use WebhooksTest;

my $uuidv7 = qr/^msg_[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}$/;
my $version_msg =
  qr/webhooks worker: extension webhooks is at version 1\.0, this library needs \Q${\ latest_version()}\E/;

my $rcv = start_receiver();
my $node = new_node('upgrade', no_extension => 1);

########################################################################
# A 1.0 install under the current library: the worker waits
########################################################################
my $offset = -s $node->logfile;
sq("CREATE EXTENSION webhooks VERSION '1.0'");
is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'"), '1.0',
	'the extension is installed at version 1.0');
ok(wait_log_count($offset, $version_msg, 1, 30), 'the worker logs that the install is at 1.0 and it needs ' . latest_version());
like(log_since($offset),
	qr/$version_msg\n.*HINT:\s+Run ALTER EXTENSION webhooks UPDATE in database "postgres"\./,
	'with the hint to run ALTER EXTENSION webhooks UPDATE');
poll("SELECT query LIKE '%ALTER EXTENSION webhooks UPDATE%' FROM pg_stat_activity
	  WHERE backend_type = 'webhooks worker'",
	'pg_stat_activity shows the worker waiting for ALTER EXTENSION webhooks UPDATE', 15)
  or diag(sq("SELECT query FROM pg_stat_activity WHERE backend_type = 'webhooks worker'"));

########################################################################
# Rows of every kind, as 1.0 leaves them
########################################################################
sq(<<'SQL');
CREATE SCHEMA app;
CREATE TABLE app.email_clicks (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER clicks_webhook AFTER INSERT ON app.email_clicks
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
CREATE TABLE app.email_sends (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER sends_webhook AFTER INSERT ON app.email_sends
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailSends');
CREATE TABLE app.email_deliveries (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER deliveries_webhook AFTER INSERT ON app.email_deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailDeliveries');
SQL

my %wid;
for my $w ([ 'opens', 'EmailOpens' ], [ 'clicks', 'EmailClicks' ], [ 'sends', 'EmailSends' ],
	[ 'bounces', 'EmailBounces' ], [ 'deliv', 'EmailDeliveries' ])
{
	my ($name, $type) = @$w;
	$wid{$name} = sq("SELECT id FROM webhooks.create_webhook('$name', '$type', '"
		  . $rcv->url("/ok/$name") . "')");
}
# an inactive webhook that never had a delivery
sq("INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('spare', 'EmailComplaints', '"
	  . $rcv->url('/ok/spare') . "')");
# a rotated secret: both sign until the grace period ends
sq("SELECT webhooks.rotate_secret('clicks')");

# opens: six events by emit(), then edited into the states a 1.0 worker leaves
my @o = map { sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', $_) . "')") } 1 .. 6;
like(join(',', @o), qr/^\d+(,\d+){5}$/, 'emit() under 1.0 returns delivery ids');
my $opens_url = $rcv->url('/ok/opens');
sq(<<"SQL");
-- in flight for a worker that is gone: a lease and an attempt counted
UPDATE webhooks.deliveries SET attempts = 1, last_attempt_at = now(),
       lease_until = now() + interval '1 hour', next_attempt_at = now() + interval '1 hour'
 WHERE id = $o[2];
-- failed once, due again
UPDATE webhooks.deliveries SET attempts = 1, last_attempt_at = now(), last_status = 500,
       last_error = 'error body 500', next_attempt_at = now()
 WHERE id = $o[3];
INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, status, error_content, webhook_payload,
                                   delivery_id, attempt, duration_ms, outcome, next_attempt_at)
SELECT 'opens', webhook_id, 500, 'error body 500', body::json, id, 1, 12.5, 'retry', now()
  FROM webhooks.deliveries WHERE id = $o[3];
-- delivered
UPDATE webhooks.deliveries SET state = 'delivered', attempts = 1, last_attempt_at = now(),
       finished_at = now(), last_status = 200
 WHERE id = $o[4];
-- dead after three attempts, each logged
UPDATE webhooks.deliveries SET state = 'dead', attempts = 3, last_attempt_at = now(),
       finished_at = now(), last_status = 500, last_error = 'error body 500'
 WHERE id = $o[5];
INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, status, error_content, webhook_payload,
                                   delivery_id, attempt, duration_ms, outcome, next_attempt_at)
SELECT 'opens', d.webhook_id, 500, 'error body 500', d.body::json, d.id, a,
       10, CASE WHEN a < 3 THEN 'retry' ELSE 'dead' END, CASE WHEN a < 3 THEN now() END
  FROM webhooks.deliveries d, generate_series(1, 3) a WHERE d.id = $o[5];
SQL

# clicks: two rows through the row trigger
# one row per statement: each is a delivery row (a statement of several rows is a batch)
sq("INSERT INTO app.email_clicks VALUES (11, 2, 'c1\@example.com'); INSERT INTO app.email_clicks VALUES (12, 2, 'c2\@example.com')");
my @c = split /\n/, sq("SELECT id FROM webhooks.deliveries WHERE webhook_id = $wid{clicks} ORDER BY id");
is(scalar(@c), 2, 'the row trigger enqueued two deliveries');

# sends: one multi-row statement under the statement trigger, a batch
sq( "INSERT INTO app.email_sends SELECT 100 + g, g, 's' || g || '\@example.com'"
	  . " FROM generate_series(1, 5) g");
is( sq(
		"SELECT count(*), sum(events) FROM webhooks.event_batches WHERE webhook_id = $wid{sends};
		 SELECT count(*) FROM webhooks.deliveries WHERE webhook_id = $wid{sends}"),
	"1|5\n0",
	'the statement trigger stored one unsplit batch of five events');

# bounces: two events, then deactivated: held
my @h = map { sq("SELECT webhooks.emit('EmailBounces', '" . payload('EmailBounces', $_) . "')") } 21 .. 22;
sq("SELECT webhooks.deactivate_webhook('bounces')");

# deliv: a batch discarded by delete_webhook: log rows without a delivery
sq( "INSERT INTO app.email_deliveries SELECT 200 + g, g, 'd' || g || '\@example.com'"
	  . " FROM generate_series(1, 3) g");
sq("SELECT webhooks.delete_webhook('deliv', discard_pending => true)");

my %secret = map { split /\|/ } split /\n/, sq("SELECT name, secret FROM webhooks.webhooks");
my $clicks_previous = sq("SELECT previous_secret FROM webhooks.webhooks WHERE name = 'clicks'");
$rcv->set_secret(values %secret, $clicks_previous);

is( sq(
		"SELECT string_agg(state || ':' || n, ',' ORDER BY state)
		   FROM (SELECT state, count(*) n FROM webhooks.deliveries GROUP BY state) s"),
	'dead:1,delivered:1,held:2,pending:6',
	'deliveries: 6 pending (one leased), 2 held, 1 delivered, 1 dead');
is( sq(
		"SELECT string_agg(outcome || ':' || n, ',' ORDER BY outcome)
		   FROM (SELECT outcome, count(*) n FROM webhooks.webhook_logs GROUP BY outcome) s"),
	'dead:1,discarded:3,retry:3', 'log rows: 3 retry, 1 dead, 3 discarded');
is($rcv->count(real('/')), 0, 'the waiting worker sent nothing');

# Every 1.0 column of every table, per table (and per state), as counts and
# digests: identical before and after the update.
my $snapshot_sql = <<'SQL';
SELECT 'snap', t, k, n, md5(r) FROM (
  SELECT 'webhooks' t, '' k, count(*) n, string_agg(ROW(id, name, event_type, target_url, is_active,
         secret, previous_secret, previous_secret_expires_at, auth_token, headers, deactivated_reason,
         created_at, updated_at)::text, E'\n' ORDER BY id) r
    FROM webhooks.webhooks
  UNION ALL
  SELECT 'deliveries', state, count(*), string_agg(ROW(id, webhook_id, event_type, body, state, attempts,
         CASE WHEN state IN ('pending', 'held') THEN next_attempt_at END,
         CASE WHEN state IN ('pending', 'held') THEN lease_until END,
         created_at, last_attempt_at, finished_at, last_status,
         last_error)::text, E'\n' ORDER BY id)
    FROM webhooks.DELIVERIES GROUP BY state
  UNION ALL
  SELECT 'event_batches', '', count(*), string_agg(ROW(id, webhook_id, event_type, events, bodies,
         created_at)::text, E'\n' ORDER BY id)
    FROM webhooks.event_batches
  UNION ALL
  SELECT 'webhook_logs', outcome, count(*), string_agg(ROW(id, occurrence_date, webhook_name, webhook_id,
         status, error_content, webhook_payload::text, delivery_id, attempt, duration_ms, outcome,
         next_attempt_at)::text, E'\n' ORDER BY id)
    FROM webhooks.webhook_logs GROUP BY outcome
  UNION ALL
  SELECT 'event_types', '', count(*), string_agg(ROW(event_type, label, description, fields,
         example::text)::text, E'\n' ORDER BY event_type)
    FROM webhooks.event_types) s
ORDER BY t, k;
SQL
my $before = sq($snapshot_sql =~ s/DELIVERIES/deliveries/r);
my %body_of = map { split /\|/, $_, 2 } split /\n/, sq("SELECT id, body FROM webhooks.deliveries");
my $max_id = sq("SELECT max(id) FROM webhooks.deliveries");
ok(log_since($offset) !~ /webhooks worker: serving database/,
	'the worker never served the 1.0 install');
my @msgs = log_since($offset) =~ /$version_msg/g;
is(scalar(@msgs), 1, 'the version message was logged once, not at every check');

########################################################################
# ALTER EXTENSION webhooks UPDATE, and what it left, seen before the
# worker can act (same transaction)
########################################################################
$offset = -s $node->logfile;
my $t_update = Time::HiRes::time();
my $out = sq(<<"SQL");
BEGIN;
ALTER EXTENSION webhooks UPDATE;
SELECT 'version', extversion FROM pg_extension WHERE extname = 'webhooks';
${\ ($snapshot_sql =~ s/DELIVERIES/all_deliveries/r)}
SELECT 'msgid', count(*) FILTER (WHERE msg_id = 'msg_' || id), count(*),
       count(*) FILTER (WHERE lease_token IS NOT NULL)
  FROM webhooks.all_deliveries;
SELECT 'logmsg', count(*) FILTER (WHERE msg_id = 'msg_' || delivery_id),
       count(*) FILTER (WHERE delivery_id IS NOT NULL),
       count(*) FILTER (WHERE delivery_id IS NULL AND msg_id IS NULL),
       count(*) FILTER (WHERE delivery_id IS NULL)
  FROM webhooks.webhook_logs;
SELECT 'first', first_msg_id FROM webhooks.event_batches;
SELECT 'batch', webhooks._batch_msg_id(b.first_msg_id, e.i - 1), e.body
  FROM webhooks.event_batches b, string_to_table(b.bodies, E'\\n') WITH ORDINALITY AS e(body, i)
 ORDER BY e.i;
COMMIT;
SQL
my %got;
for my $line (split /\n/, $out)
{
	my ($tag, $rest) = split /\|/, $line, 2;
	push @{ $got{$tag} }, $rest;
}
is($got{version}[0], latest_version(), 'extversion is ' . latest_version());
is( join("\n", map { "snap|$_" } @{ $got{snap} }),
	$before, 'no row lost or changed: counts and digests of every table (per state) are equal');
note("before:\n$before");
my ($with_old_id, $n_deliveries, $with_token) = split /\|/, $got{msgid}[0];
is($n_deliveries, 10, 'the ten deliveries are there');
is($with_old_id, $n_deliveries, "every pre-existing delivery has msg_id = 'msg_' || id");
is($with_token, 0, 'no lease token on rows from 1.0');
my ($log_named, $log_with_delivery, $log_unnamed, $log_without_delivery) = split /\|/,
  $got{logmsg}[0];
is($log_named, $log_with_delivery,
	"log rows of a delivery name its webhook-id (msg_id = 'msg_' || delivery_id)");
is($log_unnamed, $log_without_delivery, 'log rows without a delivery have no msg_id');
is(scalar(@{ $got{first} // [] }), 1, 'one batch is still unsplit');
like($got{first}[0] // '', $uuidv7, 'the batch got a first_msg_id, msg_ and a UUIDv7');
my %batch_body = map { split /\|/, $_, 2 } @{ $got{batch} // [] };
is(scalar(keys %batch_body), 5, 'the batch derives five distinct ids, one per body');
is(scalar(grep { $_ =~ $uuidv7 } keys %batch_body), 5, 'each of them msg_ and a UUIDv7');
is(scalar(keys %{ { reverse %batch_body } }), 5, 'and five distinct bodies');

is( sq(
		"SELECT string_agg(table_name || '.' || column_name || ' ' || data_type || ' '
		                   || is_nullable || ' ' || coalesce(column_default, '-'), E'\\n'
		                   ORDER BY table_name, column_name)
		   FROM information_schema.columns
		  WHERE table_schema = 'webhooks'
		    AND (table_name, column_name) IN (('deliveries', 'msg_id'), ('deliveries', 'lease_token'),
		                                      ('event_batches', 'first_msg_id'), ('webhook_logs', 'msg_id'))"),
	join("\n",
		'deliveries.lease_token bigint YES -',
		'deliveries.msg_id text NO webhooks._new_msg_id()',
		'event_batches.first_msg_id text NO webhooks._new_msg_id()',
		'webhook_logs.msg_id text YES -'),
	'the new columns exist, with their defaults');

########################################################################
# The worker serves the updated install
########################################################################
ok(wait_log_count($offset, qr/webhooks worker: serving database "postgres"/, 1, 10),
	'the worker starts serving within 10 s of the update');
my @pending = (@o[0 .. 3], @c);
my $expect = @pending + 5;
my $reqs = $rcv->wait_for_requests($expect, 30,
	sub { real('/ok/opens')->($_[0]) || real('/ok/clicks')->($_[0]) || real('/ok/sends')->($_[0]) });
is(scalar(@$reqs), $expect, "the $expect pending events arrived (6 deliveries, 5 batch events)");
my $first_t = (sort { $a <=> $b } map { $_->{t} } @$reqs)[0] // 0;
ok($first_t - $t_update < 10, 'the first arrived within 10 s of the update')
  or diag('after ' . ($first_t - $t_update) . ' s');
like(log_since($offset), qr/released 1 deliveries leased by a previous worker/,
	'the lease of the previous worker was released');

my %arrived;
for my $r (@$reqs)
{
	my $mid = $r->{headers}{'webhook-id'} // '';
	$arrived{$mid}++;
	my ($name) = $r->{path} =~ m{^/ok/(\w+)};
	if ($name eq 'sends')
	{
		ok(exists $batch_body{$mid}, "batch event $mid: an id derived from the batch");
		is($r->{body}, $batch_body{$mid}, "batch event $mid: the body of that offset");
	}
	else
	{
		my ($id) = $mid =~ /^msg_(\d+)$/;
		ok(defined $id && grep({ $_ == $id } @pending), "$name: webhook-id $mid is msg_<id> of a pending delivery");
		is($r->{body}, $body_of{ $id // 0 }, "$name $mid: exact body");
	}
	ok(verify_request($secret{$name}, $r), "$name $mid: signed with the webhook's secret");
	ok($r->{sig_ok} && $r->{ts_ok}, "$name $mid: the receiver's checks agree");
	ok(verify_request($clicks_previous, $r), "clicks $mid: also signed with the previous secret")
	  if $name eq 'clicks';
}
is_deeply([ sort keys %arrived ],
	[ sort((map { "msg_$_" } @pending), keys %batch_body) ],
	'each pending delivery and batch event arrived, once each')
  or diag(explain \%arrived);
poll("SELECT count(*) = $expect FROM webhooks.all_deliveries
	  WHERE webhook_id IN ($wid{opens}, $wid{clicks}, $wid{sends}) AND state = 'delivered'
	    AND (id > $max_id OR id IN (" . join(',', @pending) . "))",
	'they are recorded as delivered', 30);
is( sq(
		"SELECT string_agg(msg_id, ',' ORDER BY msg_id) FROM webhooks.all_deliveries
		  WHERE webhook_id = $wid{sends}"),
	join(',', sort keys %batch_body),
	'the split stored the ids the batch derived');
is( sq("SELECT string_agg(id || ':' || state, ',' ORDER BY id) FROM webhooks.all_deliveries
		 WHERE id IN ($o[4], $o[5], $h[0], $h[1])"),
	"$o[4]:delivered,$o[5]:dead,$h[0]:held,$h[1]:held",
	'delivered and dead rows stay so, held rows stay held');
is($rcv->count(real('/ok/bounces')), 0, 'nothing was sent for the held deliveries');

########################################################################
# Held rows wait for the activation; redelivery keeps msg_<id>
########################################################################
sq("SELECT webhooks.activate_webhook('bounces')");
$reqs = $rcv->wait_for_requests(2, 30, real('/ok/bounces'));
is_deeply([ sort map { $_->{headers}{'webhook-id'} } @$reqs ],
	[ sort map { "msg_$_" } @h ], 'activated, the held deliveries arrive with msg_<id>');
for my $r (@$reqs)
{
	my ($id) = $r->{headers}{'webhook-id'} =~ /^msg_(\d+)$/;
	is($r->{body}, $body_of{ $id // 0 }, "held msg_" . ($id // '?') . ": exact body");
	ok(verify_request($secret{bounces}, $r) && $r->{sig_ok}, "held msg_" . ($id // '?') . ": signed");
}

$rcv->clear_log;
sq("SELECT webhooks.redeliver($o[4]), webhooks.redeliver($o[5])");
$reqs = $rcv->wait_for_requests(2, 30, real('/ok/opens'));
is_deeply([ sort map { $_->{headers}{'webhook-id'} } @$reqs ],
	[ sort map { "msg_$_" } @o[4, 5] ],
	'redeliver() of the delivered and the dead row: sent with their msg_<id>');
is_deeply([ sort map { $_->{body} } @$reqs ], [ sort map { $body_of{$_} } @o[4, 5] ],
	'with their bodies');
ok(!grep({ !verify_request($secret{opens}, $_) } @$reqs), 'signed');

########################################################################
# New events get msg_ + UUIDv7 ids
########################################################################
$rcv->clear_log;
my $new = sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 7) . "')");
my $new_msg = sq("SELECT msg_id FROM webhooks.all_deliveries WHERE id = $new");
like($new_msg, $uuidv7, 'a new event gets msg_ and a UUIDv7');
$out = sq(
	"BEGIN;
	 INSERT INTO app.email_sends SELECT 300 + g, g, 'n' || g || '\@example.com' FROM generate_series(1, 3) g;
	 SELECT webhooks._batch_msg_id(first_msg_id, g) FROM webhooks.event_batches, generate_series(0, 2) g;
	 COMMIT;");
my @new_batch = split /\n/, $out;
is(scalar(grep { $_ =~ $uuidv7 } @new_batch), 3, 'a new batch derives three msg_ UUIDv7 ids');
$reqs = $rcv->wait_for_requests(4, 30, sub { real('/ok/opens')->($_[0]) || real('/ok/sends')->($_[0]) });
is_deeply([ sort map { $_->{headers}{'webhook-id'} } @$reqs ],
	[ sort($new_msg, @new_batch) ], 'the new events arrive with those ids');
ok(!grep({ !$_->{sig_ok} } @$reqs), 'signed');

########################################################################
# The updated install is the install: compare with a fresh CREATE
# EXTENSION in another database
########################################################################
my $catalog_sql = <<'SQL';
WITH ext AS (SELECT oid, extconfig FROM pg_extension WHERE extname = 'webhooks'),
ns AS (SELECT oid, nspacl FROM pg_namespace WHERE nspname = 'webhooks'),
members AS (SELECT d.classid, d.objid FROM pg_depend d, ext
             WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) FROM members m
UNION ALL
SELECT 'config ' || coalesce((SELECT string_agg(c::regclass::text, ' ' ORDER BY c::regclass::text)
                                FROM ext, unnest(ext.extconfig) c), '')
UNION ALL
SELECT format('schema acl=%s', ns.nspacl) FROM ns
UNION ALL
SELECT format('relation %s kind=%s acl=%s', c.relname, c.relkind, c.relacl)
  FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
UNION ALL
SELECT format('column %s #%s %s %s notnull=%s default=%s acl=%s', c.relname,
              row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
              format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
              a.attacl)
  FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
UNION ALL
SELECT format('constraint %s %s: %s validated=%s', co.conrelid::regclass, co.conname,
              pg_get_constraintdef(co.oid), co.convalidated)
  FROM pg_constraint co JOIN ns ON co.connamespace = ns.oid
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN ns ON c.relnamespace = ns.oid
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON c.relnamespace = ns.oid
 WHERE NOT t.tgisinternal
UNION ALL
SELECT format('view %s definition md5=%s', c.relname, md5(pg_get_viewdef(c.oid)))
  FROM pg_class c JOIN ns ON c.relnamespace = ns.oid WHERE c.relkind = 'v'
UNION ALL
SELECT format('function %s config=%s acl=%s secdef=%s volatility=%s strict=%s language=%s returns=%s source md5=%s',
              p.oid::regprocedure, p.proconfig, p.proacl, p.prosecdef, p.provolatile, p.proisstrict,
              l.lanname, pg_get_function_result(p.oid), md5(p.prosrc))
  FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid JOIN pg_language l ON l.oid = p.prolang
UNION ALL
SELECT format('type %s acl=%s', t.typname, t.typacl)
  FROM pg_type t JOIN ns ON t.typnamespace = ns.oid
UNION ALL
SELECT format('comment on %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
  FROM pg_description d JOIN members m ON m.classid = d.classoid AND m.objid = d.objoid
SQL
sq('CREATE DATABASE fresh');
sq('CREATE EXTENSION webhooks', db => 'fresh');
is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'", db => 'fresh'),
	latest_version(), 'a fresh CREATE EXTENSION installs ' . latest_version());
# The history's time-range partitions depend on when each install made them
# (the update makes them from its oldest moved row on): they are compared
# by their shape below, not by name.
my $partition_name = qr/_\d{8}_\d{6}(?!\d)/;
my @updated = sort grep { !/$partition_name/ } split /\n/, sq($catalog_sql);
my @fresh = sort grep { !/$partition_name/ } split /\n/, sq($catalog_sql, db => 'fresh');
my %in_fresh = map { $_ => 1 } @fresh;
my %in_updated = map { $_ => 1 } @updated;
my @diff = (
	(map { "- $_  (updated only)" } grep { !$in_fresh{$_} } @updated),
	(map { "+ $_  (fresh only)" } grep { !$in_updated{$_} } @fresh));
ok(!@diff,
	'the updated install equals a fresh install: members, columns, constraints, indexes, '
	  . 'triggers, views, functions (search_path, privileges), relation privileges, comments')
  or diag("updated install vs fresh install:\n" . join("\n", @diff));
cmp_ok(scalar(@updated), '>', 100, 'the comparison covered ' . scalar(@updated) . ' catalog entries');
my $partition_shape_sql = <<'SQL';
SELECT i.inhparent::regclass, count(*) > 3,
       bool_and(EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype = 'e')),
       bool_and(obj_description(c.oid, 'pg_class') IS NOT NULL),
       bool_and(c.relacl IS NOT NULL AND NOT EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0)),
       bool_or(pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent IN ('webhooks.delivery_history'::regclass, 'webhooks.webhook_logs'::regclass)
 GROUP BY 1 ORDER BY 1
SQL
is(sq($partition_shape_sql), sq($partition_shape_sql, db => 'fresh'),
	'the partitions of both installs: members of the extension, commented, nothing for PUBLIC, a default one');
is(sq($partition_shape_sql),
	"webhooks.delivery_history|t|t|t|t|t\nwebhooks.webhook_logs|t|t|t|t|t",
	'the partitions: several per table, members, commented, nothing for PUBLIC');
ok(grep({ /^function webhooks\._record_results.*config=\{"search_path=pg_catalog, pg_temp",plan_cache_mode=force_custom_plan\}/ } @updated),
	'the comparison sees function settings');

########################################################################
# DROP and CREATE of version 1.0 in one transaction: the worker notices
# the new install and waits again
########################################################################
$offset = -s $node->logfile;
$rcv->clear_log;
my $again = sq(
	"BEGIN;
	 DROP EXTENSION webhooks CASCADE;
	 CREATE EXTENSION webhooks VERSION '1.0';
	 SELECT FROM webhooks.create_webhook('again', 'EmailOpens', '" . $rcv->url('/ok/again') . "');
	 SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 8) . "');
	 COMMIT;");
like($again, qr/^\d+$/, 'dropped and made again at 1.0 in one transaction, with an event queued');
$rcv->set_secret(sq("SELECT secret FROM webhooks.webhooks WHERE name = 'again'"));
ok(wait_log_count($offset, $version_msg, 1, 15),
	'the worker notices the new install and logs the version message again');
ok(log_since($offset) !~ /ERROR/,
	'it ran nothing on the 1.0 schema (no error)')
  or diag(log_since($offset));
is($rcv->count(real('/ok/again')), 0, 'and sent nothing');
$offset = -s $node->logfile;
sq('ALTER EXTENSION webhooks UPDATE');
ok(wait_log_count($offset, qr/webhooks worker: serving database "postgres"/, 1, 10),
	'updated again, the worker serves it');
$reqs = $rcv->wait_for_requests(1, 30, real('/ok/again'));
is($reqs->[0]{headers}{'webhook-id'} // '', "msg_$again", 'the queued event arrives with msg_<id>');
ok($reqs->[0]{sig_ok}, 'signed');

done_testing();
