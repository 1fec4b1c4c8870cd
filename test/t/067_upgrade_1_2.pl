# Updating a live 1.2 install (ALTER EXTENSION webhooks UPDATE, to 1.3 and on to the current version):
# issue 11's layout.  1.3 keeps only live work in the queue
# (webhooks.deliveries), moves finished deliveries to the partitioned
# webhooks.delivery_history and makes webhooks.webhook_logs partitioned.
#
# The node preloads the current library and installs the extension at version
# 1.2: the worker waits and says why.  The database gets rows of every kind
# a 1.2 install holds: pending deliveries with their webhook-ids, held rows
# of an inactive webhook, delivered and dead ones (one finished two days
# ago, inside the 7-day retention), log rows, an unsplit event batch.  The
# update loses no row and changes none (counts and digests of every column
# that 1.3 keeps, per state), the queue then holds live rows only, the
# history's rows sit in time-range partitions, webhook_stats counts the
# moved rows, log ids go on, and the worker delivers the pending events, the
# held ones once activated and a moved dead one redelivered, each with the
# webhook-id it was given under 1.2.  That the updated schema equals a
# fresh install is checked by 065_upgrade (1.0 -> 1.1 -> ... -> the current version).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('upgrade12', no_extension => 1);

my $offset = -s $node->logfile;
sq("CREATE EXTENSION webhooks VERSION '1.2'");
is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'"), '1.2',
	'the extension is installed at version 1.2');
is(wait_log_count($offset, qr/extension webhooks is at version 1\.2, this library needs \Q${\ latest_version()}\E/, 1, 30),
	1, 'the worker logs that the install is at 1.2 and it needs ' . latest_version());

########################################################################
# Rows of every kind, as 1.2 leaves them
########################################################################
upgrade_fixture($rcv);
my @o = map { sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', $_) . "')") } 1 .. 5;
sq(<<"SQL");
UPDATE webhooks.deliveries SET state = 'delivered', attempts = 1, last_attempt_at = now(),
       finished_at = now(), last_status = 200
 WHERE id = $o[2];
UPDATE webhooks.deliveries SET state = 'dead', attempts = 3, last_attempt_at = now(),
       finished_at = now(), last_status = 500, last_error = 'error body 500'
 WHERE id = $o[3];
UPDATE webhooks.deliveries SET state = 'delivered', attempts = 2, created_at = now() - interval '2 days 1 minute',
       last_attempt_at = now() - interval '2 days', finished_at = now() - interval '2 days', last_status = 204
 WHERE id = $o[4];
INSERT INTO webhooks.webhook_logs (occurrence_date, webhook_name, webhook_id, status, error_content,
                                   webhook_payload, delivery_id, attempt, duration_ms, outcome, msg_id)
SELECT now() - interval '2 days 30 seconds', 'opens', webhook_id, 503, 'busy', body::json, id, 1, 8, 'retry', msg_id
  FROM webhooks.deliveries WHERE id = $o[4];
INSERT INTO webhooks.webhook_logs (webhook_name, webhook_id, status, error_content, webhook_payload,
                                   delivery_id, attempt, duration_ms, outcome, msg_id)
SELECT 'opens', webhook_id, 500, 'error body 500', body::json, id, 3, 10, 'dead', msg_id
  FROM webhooks.deliveries WHERE id = $o[3];
SQL
sq("INSERT INTO app.email_sends SELECT 100 + g, g, 's' || g || '\@example.com' FROM generate_series(1, 5) g");
my @h = map { sq("SELECT webhooks.emit('EmailBounces', '" . payload('EmailBounces', $_) . "')") } 21 .. 22;
sq("SELECT webhooks.deactivate_webhook('bounces')");
$rcv->set_secret(split /\n/, sq("SELECT secret FROM webhooks.webhooks"));

is( sq(
		"SELECT string_agg(state || ':' || n, ',' ORDER BY state)
		   FROM (SELECT state, count(*) n FROM webhooks.deliveries GROUP BY state) s"),
	'dead:1,delivered:2,held:2,pending:2',
	'deliveries: 2 pending, 2 held, 2 delivered (one two days old), 1 dead');
is(sq("SELECT count(*) || ':' || sum(events) FROM webhooks.event_batches"), '1:5',
	'one unsplit batch of five events');
is($rcv->count(real('/')), 0, 'the waiting worker sent nothing');

# the webhook-ids the waiting events were given under 1.2, by webhook
my %want = %{ waiting_ids() };
like(join(',', map { @$_ } values %want), qr/^(msg_[0-9a-f]{32},){8}msg_[0-9a-f]{32}$/,
	'nine events waiting, each with a msg_ + UUIDv7 webhook-id');
my $dead_msg = sq("SELECT msg_id FROM webhooks.deliveries WHERE id = $o[3]");
my $max_log_id = sq("SELECT max(id) FROM webhooks.webhook_logs");

# Every column 1.3 keeps, per table and state, as counts and digests.  A
# finished delivery's next_attempt_at and lease_until mean nothing and are
# not kept (the history has no such columns); 1.2 reads the queue table,
# 1.3 the view over the queue and the history.
my $snapshot_sql = <<'SQL';
SELECT t, k, n, md5(r) FROM (
  SELECT 'webhooks' t, '' k, count(*) n, string_agg(w::text, E'\n' ORDER BY w.id) r
    FROM webhooks.webhooks w
  UNION ALL
  SELECT 'deliveries', d.state, count(*), string_agg(ROW(d.id, d.webhook_id, d.event_type, d.body, d.state,
         d.attempts, CASE WHEN d.state IN ('pending', 'held') THEN d.next_attempt_at END,
         CASE WHEN d.state IN ('pending', 'held') THEN d.lease_until END, d.lease_token, d.created_at,
         d.last_attempt_at, d.finished_at, d.last_status, d.last_error, d.msg_id)::text, E'\n' ORDER BY d.id)
    FROM webhooks.DELIVERIES d GROUP BY d.state
  UNION ALL
  SELECT 'event_batches', '', count(*), string_agg(b::text, E'\n' ORDER BY b.id)
    FROM webhooks.event_batches b
  UNION ALL
  SELECT 'webhook_logs', l.outcome, count(*), string_agg(l::text, E'\n' ORDER BY l.id)
    FROM webhooks.webhook_logs l GROUP BY l.outcome) s
ORDER BY t, k;
SQL
my $before = sq($snapshot_sql =~ s/DELIVERIES/deliveries/r);

########################################################################
# The update
########################################################################
$offset = -s $node->logfile;
# what the update left, seen before the worker can act (same transaction)
my $checks_sql = <<'SQL';
SELECT 'version', extversion FROM pg_extension WHERE extname = 'webhooks';
SELECT 'queue', string_agg(DISTINCT state, ',') FROM webhooks.deliveries;
SELECT 'history', string_agg(state || ':' || n, ',' ORDER BY state)
  FROM (SELECT state, count(*) n FROM webhooks.delivery_history GROUP BY state) s;
SELECT 'in_default', (SELECT count(*) FROM webhooks.delivery_history h
                       WHERE h.tableoid = 'webhooks.delivery_history_default'::regclass)
                   + (SELECT count(*) FROM webhooks.webhook_logs l
                       WHERE l.tableoid = 'webhooks.webhook_logs_default'::regclass);
SELECT 'finished_at', count(*) FROM pg_attribute
 WHERE attrelid = 'webhooks.deliveries'::regclass AND attname = 'finished_at' AND NOT attisdropped;
SELECT 'stats', delivered || ':' || dead || ':' || failed_attempts || ':' || (last_success IS NOT NULL)
                || ':' || (last_failure IS NOT NULL) || ':' || (latency_p50_ms > 0)
  FROM webhooks.webhook_stats WHERE webhook_name = 'opens';
SQL
my $out = sq("BEGIN; ALTER EXTENSION webhooks UPDATE; "
	  . ($snapshot_sql =~ s/DELIVERIES/all_deliveries/r) . " $checks_sql COMMIT;");
my @lines = split /\n/, $out;
my %got_check = map { split /\|/, $_, 2 } grep { /^(version|queue|history|in_default|finished_at|stats)\|/ } @lines;
is(join("\n", grep { !/^(version|queue|history|in_default|finished_at|stats)\|/ } @lines), $before,
	'the update loses no row and changes none (every column 1.3 keeps, per table and state)');
note("before:\n$before");
is($got_check{version}, latest_version(), 'extversion is ' . latest_version());
is($got_check{queue}, 'held,pending', 'the queue holds live work only');
is($got_check{history}, 'dead:1,delivered:2', 'the history holds the finished ones');
is($got_check{in_default}, '0', 'every moved row, the two-day-old ones too, is in a time-range partition');
is($got_check{finished_at}, '0', 'the queue has no finished_at any more');
is($got_check{stats}, '2:1:2:true:true:true',
	'webhook_stats counts the moved rows: 2 delivered, 1 dead, 2 failed attempts');
is(wait_log_count($offset, qr/webhooks worker: serving database "postgres"/, 1, 30), 1,
	'the worker serves the updated install');

# the pending events arrive with the ids they had; the held ones wait
my %got = map { $_ => [ $rcv->wait_for_requests(scalar(@{ $want{$_} }), 30, real("/ok/$_")) ] } 'opens', 'sends';
for my $name ('opens', 'sends')
{
	is( join(',', sort map { $_->{headers}{'webhook-id'} } @{ $got{$name} }),
		join(',', sort @{ $want{$name} }),
		"$name: every pending event delivered, with the webhook-id given under 1.2");
}
my $opens_secret = sq("SELECT secret FROM webhooks.webhooks WHERE name = 'opens'");
is(scalar(grep { verify_request($opens_secret, $_) } @{ $got{opens} }), 2,
	'and signed with the webhook\'s secret');
poll("SELECT count(*) = 0 FROM webhooks.deliveries WHERE state = 'pending'",
	'delivered, they leave the queue');
is(sq("SELECT count(*) FROM webhooks.delivery_history WHERE state = 'delivered'"), '9',
	'and join the history (2 moved, 2 emitted, 5 from the batch)');
is($rcv->count(real('/ok/bounces')), 0, 'the inactive webhook\'s rows stay held');
sq("SELECT webhooks.activate_webhook('bounces')");
is( join(',', sort map { $_->{headers}{'webhook-id'} } $rcv->wait_for_requests(2, 30, real('/ok/bounces'))),
	join(',', sort @{ $want{bounces} }),
	'activated: its held events are delivered, with the webhook-ids given under 1.2');

# a dead delivery moved by the update goes back to the queue and arrives
# with its webhook-id
$rcv->clear_log;
is(sq("SELECT webhooks.redeliver($o[3])"), 't', 'redeliver() of the moved dead delivery');
my ($req) = $rcv->wait_for_requests(1, 30, real('/ok/opens'));
is($req->{headers}{'webhook-id'} // '', $dead_msg, 'it arrives with the webhook-id given under 1.2');
poll("SELECT state = 'delivered' FROM webhooks.delivery_history WHERE id = $o[3]",
	'and is back in the history, delivered');

# log ids go on from 1.2's sequence
sq("INSERT INTO webhooks.webhook_logs (webhook_name, error_content, outcome) VALUES ('opens', 'by hand', 'retry')");
cmp_ok(sq("SELECT id FROM webhooks.webhook_logs WHERE error_content = 'by hand'"), '>', $max_log_id,
	'a new log row\'s id follows 1.2\'s last');

done_testing();
