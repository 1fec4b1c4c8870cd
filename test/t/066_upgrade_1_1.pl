# Updating a live 1.1 install to 1.2 (ALTER EXTENSION webhooks UPDATE TO '1.2'), then on.
#
# The node preloads the current library and installs the extension at
# version 1.1: the worker waits and says why.  The database gets rows of every kind
# a 1.1 install holds: pending deliveries with their webhook-ids (msg_ +
# UUIDv7, fixed at enqueue), a delivered and a dead one with log rows, held
# rows of an inactive webhook, an unsplit event batch.  The update keeps
# every row as it was and the table guard applies 1.2's rules (one
# definition per rule, src/validate.c); updated on to the current version,
# the worker delivers the pending events with the webhook-ids they were
# given under 1.1.  That the updated schema equals a fresh install is
# checked by 065_upgrade (1.0 -> ... -> current); 067 updates a live 1.2.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('upgrade11', no_extension => 1);

my $offset = -s $node->logfile;
sq("CREATE EXTENSION webhooks VERSION '1.1'");
is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'"), '1.1',
	'the extension is installed at version 1.1');
is(wait_log_count($offset, qr/extension webhooks is at version 1\.1, this library needs \Q${\ latest_version()}\E/, 1, 30),
	1, 'the worker logs that the install is at 1.1 and it needs ' . latest_version());

########################################################################
# Rows of every kind, as 1.1 leaves them
########################################################################
upgrade_fixture($rcv);
my @o = map { sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', $_) . "')") } 1 .. 4;
sq(<<"SQL");
UPDATE webhooks.deliveries SET state = 'delivered', attempts = 1, last_attempt_at = now(),
       finished_at = now(), last_status = 200
 WHERE id = $o[2];
UPDATE webhooks.deliveries SET state = 'dead', attempts = 3, last_attempt_at = now(),
       finished_at = now(), last_status = 500, last_error = 'error body 500'
 WHERE id = $o[3];
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
	'dead:1,delivered:1,held:2,pending:2',
	'deliveries: 2 pending, 2 held, 1 delivered, 1 dead');
is(sq("SELECT count(*) || ':' || sum(events) FROM webhooks.event_batches"), '1:5',
	'one unsplit batch of five events');
is($rcv->count(real('/')), 0, 'the waiting worker sent nothing');

# the webhook-ids the pending events were given under 1.1, by path
my %want = %{ waiting_ids() };
like(join(',', map { @$_ } values %want), qr/^(msg_[0-9a-f]{32},){8}msg_[0-9a-f]{32}$/,
	'nine events waiting, each with a msg_ + UUIDv7 webhook-id');

# every column of every table, as digests per table and state
my $snapshot_sql = <<'SQL';
SELECT t, k, n, md5(r) FROM (
  SELECT 'webhooks' t, '' k, count(*) n, string_agg(w::text, E'\n' ORDER BY w.id) r
    FROM webhooks.webhooks w
  UNION ALL
  SELECT 'deliveries', d.state, count(*), string_agg(d::text, E'\n' ORDER BY d.id)
    FROM webhooks.deliveries d GROUP BY d.state
  UNION ALL
  SELECT 'event_batches', '', count(*), string_agg(b::text, E'\n' ORDER BY b.id)
    FROM webhooks.event_batches b
  UNION ALL
  SELECT 'webhook_logs', l.outcome, count(*), string_agg(l::text, E'\n' ORDER BY l.id)
    FROM webhooks.webhook_logs l GROUP BY l.outcome) s
ORDER BY t, k;
SQL
my $before = sq($snapshot_sql);

# the guard under 1.1: a bad previous secret is called a bad secret
my $e = psql_error($node,
	"UPDATE webhooks.webhooks SET previous_secret = 'whsec_bad' WHERE name = 'bounces'");
is($e->{message}, 'invalid webhook secret', 'under 1.1 the guard calls a bad previous secret "invalid webhook secret"');

########################################################################
# The update
########################################################################
$offset = -s $node->logfile;
my $out = sq("BEGIN; ALTER EXTENSION webhooks UPDATE TO '1.2'; $snapshot_sql COMMIT;");
is($out, $before, 'the update keeps every row of every table as it was');
is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'"), '1.2', 'extversion is 1.2');

# the guard under 1.2: one rule, one message, as the connection test gives
$e = psql_error($node,
	"UPDATE webhooks.webhooks SET previous_secret = 'whsec_bad' WHERE name = 'opens'");
is($e->{message}, 'invalid previous webhook secret', 'under 1.2 the guard names the previous secret');
is($e->{sqlstate}, '22023', 'with SQLSTATE 22023');

# on to the current version (067_upgrade_1_2 checks that step's rows)
sq('ALTER EXTENSION webhooks UPDATE');
is(wait_log_count($offset, qr/webhooks worker: serving database "postgres"/, 1, 30), 1,
	'updated on, the worker serves the install');

# the pending events arrive with the ids they had; the held ones wait
my %got = map { $_ => [ $rcv->wait_for_requests(scalar(@{ $want{$_} }), 30, real("/ok/$_")) ] } 'opens', 'sends';
for my $name ('opens', 'sends')
{
	is( join(',', sort map { $_->{headers}{'webhook-id'} } @{ $got{$name} }),
		join(',', sort @{ $want{$name} }),
		"$name: every pending event delivered, with the webhook-id given under 1.1");
}
my $opens_secret = sq("SELECT secret FROM webhooks.webhooks WHERE name = 'opens'");
is(scalar(grep { verify_request($opens_secret, $_) } @{ $got{opens} }), 2,
	'and signed with the webhook\'s secret');
is($rcv->count(real('/ok/bounces')), 0, 'the inactive webhook\'s rows stay held');
sq("SELECT webhooks.activate_webhook('bounces')");
is( join(',', sort map { $_->{headers}{'webhook-id'} } $rcv->wait_for_requests(2, 30, real('/ok/bounces'))),
	join(',', sort @{ $want{bounces} }),
	'activated: its held events are delivered, with the webhook-ids given under 1.1');

done_testing();
