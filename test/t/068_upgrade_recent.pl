# Updating a live 1.3, 1.4 and 1.5 install to the current version
# (ALTER EXTENSION webhooks UPDATE).  1.4 adds webhooks.workers(); 1.5 stops
# autovacuum from truncating the queue tables (vacuum_truncate = false); 1.6
# adds the trigger that lets sessions keep routes across transactions.  None
# changes a row.
#
# For each of them in turn: the node (preloading the current library)
# installs the extension at that version, and the worker waits and says why.
# The database gets live rows (pending deliveries with their webhook-ids, a
# held one, an unsplit batch, a log row written by hand).  The update changes
# no row (digests of every table), the queue tables carry the new storage
# option, webhooks.workers() lists the database's worker, and the worker
# delivers the pending events and the batch with the webhook-ids they were
# given before the update.  Then the extension is dropped for the next
# version.  That the updated schema equals a fresh install is checked by
# 065_upgrade.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $latest = latest_version();
my $rcv = start_receiver();
my $node = new_node('upgrade_recent', no_extension => 1);

my $digest_sql = <<'SQL';
SELECT 'deliveries', count(*), md5(coalesce(string_agg(id || msg_id || state || body || webhook_id, ',' ORDER BY id), ''))
  FROM webhooks.deliveries;
SELECT 'batches', count(*), md5(coalesce(string_agg(first_msg_id || events || bodies, ',' ORDER BY id), ''))
  FROM webhooks.event_batches;
SELECT 'logs', count(*), md5(coalesce(string_agg(id || error_content || outcome, ',' ORDER BY id), ''))
  FROM webhooks.webhook_logs;
SELECT 'webhooks', count(*), md5(string_agg(id || name || event_type || target_url || is_active || secret, ',' ORDER BY id))
  FROM webhooks.webhooks;
SQL
my $storage_sql = "SELECT c.relname, c.reloptions, t.reloptions
  FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid
  WHERE c.oid IN ('webhooks.deliveries'::regclass, 'webhooks.event_batches'::regclass) ORDER BY c.relname";

for my $from ('1.3', '1.4', '1.5')
{
	(my $from_re = $from) =~ s/\./\\./g;
	my $offset = -s $node->logfile;
	sq("CREATE EXTENSION webhooks VERSION '$from'");
	is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'"), $from,
		"the extension is installed at version $from");
	is( wait_log_count(
			$offset, qr/extension webhooks is at version $from_re, this library needs \Q$latest\E/, 1, 30),
		1,
		"the worker logs that the install is at $from and it needs $latest");
	poll("SELECT query LIKE 'waiting for ALTER EXTENSION webhooks UPDATE%' FROM pg_stat_activity
	       WHERE backend_type = 'webhooks worker'", 'and waits in pg_stat_activity', 30);
	is(sq($storage_sql), "deliveries||\nevent_batches||", "$from: the queue tables have no storage options")
	  if $from lt '1.5';

	####################################################################
	# live rows, as this version leaves them
	####################################################################
	upgrade_fixture($rcv);
	my @opens =
	  map { sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', $_) . "')") } 1 .. 3;
	sq("SELECT webhooks.emit('EmailBounces', '" . payload('EmailBounces', 1) . "')");
	sq("SELECT webhooks.deactivate_webhook('bounces')");
	sq("INSERT INTO app.email_sends SELECT g, g, 's' || g || '\@example.com' FROM generate_series(1, 3) g");
	sq("INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, outcome)
	    SELECT id, 'by hand', '{}', 'retry' FROM webhooks.webhooks WHERE name = 'opens'");

	my $before = sq($digest_sql);
	like($before, qr/^deliveries\|4\|/m, "$from: four queued deliveries (three pending, one held)");
	like($before, qr/^batches\|1\|/m, "$from: an unsplit batch");
	like($before, qr/^logs\|1\|/m, "$from: a log row");
	my %want = map { sq("SELECT msg_id FROM webhooks.deliveries WHERE id = $_") => 1 } @opens;

	####################################################################
	# the update
	####################################################################
	my $after = sq("BEGIN; ALTER EXTENSION webhooks UPDATE; $digest_sql
	                SELECT 'version', extversion, '' FROM pg_extension WHERE extname = 'webhooks'; COMMIT;");
	my ($version) = $after =~ /^version\|([^|]*)\|/m;
	$after =~ s/\n?^version\|.*$//m;
	is($version, $latest, "$from: extversion is $latest");
	is($after, $before, "$from: the update changes no row of the queue, the batches, the log or the webhooks");
	is( sq($storage_sql),
		"deliveries|{vacuum_truncate=false}|{vacuum_truncate=false}\n"
		  . "event_batches|{vacuum_truncate=false}|{vacuum_truncate=false}",
		"$from: autovacuum no longer truncates the queue tables or their TOAST tables");
	is(sq("SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'webhooks.webhooks'::regclass
	        AND tgname = 'webhooks_routes_changed'"), 'A',
		"$from: the routes trigger exists and fires in every replication role");

	is(wait_log_count($offset, qr/webhooks worker: serving database "postgres"/, 1, 30),
		1, "$from: the worker serves the updated install");
	my @got = $rcv->wait_for_requests(6, 30, real('/ok/'));
	is(scalar(grep { $want{ $_->{headers}{'webhook-id'} } } @got),
		3, "$from: the pending events are delivered with the webhook-ids $from gave them");
	is(scalar(grep { $_->{path} eq '/ok/sends' } @got), 3, "$from: and the batch's three events");
	is(scalar(grep { $_->{path} eq '/ok/bounces' } @got), 0, "$from: the held event waits for its webhook");
	is( sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 4) . "') IS NOT NULL;
	        SELECT webhooks._route_kept('EmailOpens')"),
		"t\nt", "$from: an event emitted after the update is routed, and the session keeps its route");
	my @all = $rcv->wait_for_requests(7, 30, real('/ok/'));
	is(scalar(@all), 7, "$from: and it is delivered");
	poll("SELECT count(*) = 1 FROM webhooks.workers() WHERE database = 'postgres' AND worker = 0
	       AND pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker')",
		"$from: webhooks.workers() lists the worker");

	# for the next version: a clean database and request log
	sq("DROP EXTENSION webhooks CASCADE; DROP SCHEMA app CASCADE");
	$rcv->clear_log;
}

$node->stop;
done_testing();
