# Updating a live 1.3 install to 1.4 (ALTER EXTENSION webhooks UPDATE):
# issue 12 adds webhooks.workers() and changes no table.
#
# The node preloads the 1.4 library and installs the extension at version
# 1.3: the worker waits and says why.  The database gets live rows (pending
# deliveries with their webhook-ids, a held one, an unsplit batch, a log
# row written by hand).  The update changes no row (digests of every
# table), webhooks.workers() lists the database's worker, and the worker
# delivers the pending events and the batch with the webhook-ids they were
# given under 1.3.  That the updated schema equals a fresh install is
# checked by 065_upgrade.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('upgrade13', no_extension => 1);

my $offset = -s $node->logfile;
sq("CREATE EXTENSION webhooks VERSION '1.3'");
is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'"), '1.3',
	'the extension is installed at version 1.3');
is(wait_log_count($offset, qr/extension webhooks is at version 1\.3, this library needs 1\.4/, 1, 30),
	1, 'the worker logs that the install is at 1.3 and it needs 1.4');
poll("SELECT query LIKE 'waiting for ALTER EXTENSION webhooks UPDATE%' FROM pg_stat_activity
       WHERE backend_type = 'webhooks worker'", 'and waits in pg_stat_activity', 30);

########################################################################
# live rows, as 1.3 leaves them
########################################################################
upgrade_fixture($rcv);
my @opens = map { sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', $_) . "')") } 1 .. 3;
sq("SELECT webhooks.emit('EmailBounces', '" . payload('EmailBounces', 1) . "')");
sq("SELECT webhooks.deactivate_webhook('bounces')");
sq("INSERT INTO app.email_sends SELECT g, g, 's' || g || '\@example.com' FROM generate_series(1, 3) g");
sq("INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, outcome)
    SELECT id, 'by hand', '{}', 'retry' FROM webhooks.webhooks WHERE name = 'opens'");

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
my $before = sq($digest_sql);
like($before, qr/^deliveries\|4\|/m, 'four queued deliveries (three pending, one held)');
like($before, qr/^batches\|1\|/m, 'an unsplit batch');
like($before, qr/^logs\|1\|/m, 'a log row');
my %want = map { sq("SELECT msg_id FROM webhooks.deliveries WHERE id = $_") => 1 } @opens;

########################################################################
# the update
########################################################################
my $after = sq("BEGIN; ALTER EXTENSION webhooks UPDATE; $digest_sql
                SELECT 'version', extversion, '' FROM pg_extension WHERE extname = 'webhooks'; COMMIT;");
my ($version) = $after =~ /^version\|([^|]*)\|/m;
$after =~ s/\n?^version\|.*$//m;
is($version, '1.4', 'extversion is 1.4');
is($after, $before, 'the update changes no row of the queue, the batches, the log or the webhooks');

is(wait_log_count($offset, qr/webhooks worker: serving database "postgres"/, 1, 30), 1,
	'the worker serves the updated install');
my @got = $rcv->wait_for_requests(6, 30, real('/ok/'));
is(scalar(grep { $want{ $_->{headers}{'webhook-id'} } } @got), 3,
	'the pending events are delivered with the webhook-ids 1.3 gave them');
is(scalar(grep { $_->{path} eq '/ok/sends' } @got), 3, 'and the batch\'s three events');
is(scalar(grep { $_->{path} eq '/ok/bounces' } @got), 0, 'the held event waits for its webhook');
poll("SELECT count(*) = 1 FROM webhooks.workers() WHERE database = 'postgres' AND worker = 0
       AND pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker')",
	'webhooks.workers() lists the worker');

$node->stop;
done_testing();
