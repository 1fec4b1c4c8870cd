# The worker's housekeeping and the response-header cap:
# - delivered and dead deliveries and log rows older than
#   webhooks.log_retention are pruned (pending ones never are);
# - a rotated-out secret is dropped once its grace period has ended, and
#   deliveries are then signed with the current secret only;
# - a response whose headers exceed 64 kB is a failed attempt, logged.
# Maintenance runs when the worker starts and every minute after; the test
# restarts the worker (pg_terminate_backend) instead of waiting a minute.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('maintenance',
	conf => "webhooks.retry_schedule = '1s'\nwebhooks.log_retention = '1min'");

sq("SELECT * FROM webhooks.create_webhook('opens', 'EmailOpens', '" . $rcv->url('/ok/opens') . "')");
my $wid = sq("SELECT id FROM webhooks.webhooks WHERE name = 'opens'");

# --- retention -----------------------------------------------------------
sq("ALTER SYSTEM SET webhooks.enabled = off; SELECT pg_reload_conf();");
poll("SELECT query LIKE 'paused%' FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
	'worker paused while old rows are written');
my $body = '{"eventType":"EmailOpens","eventDate":"2024-05-10T13:28:23.209375Z","messageId":1,"subscriberId":2,"subscriberEmail":"a@b.c"}';
# The history is partitioned by time (10 s periods for a 1 min retention).
# The partitions the worker made start about now; one that ends 30 s before
# them holds the old deliveries, the default one what no partition covers.
my $first = sq("SELECT min(lower_bound) FROM webhooks._history_partitions('webhooks.delivery_history')");
sq(<<"SQL");
CREATE TABLE webhooks.delivery_history_past PARTITION OF webhooks.delivery_history
    FOR VALUES FROM ('$first'::timestamptz - interval '5 min') TO ('$first'::timestamptz - interval '30 s');
INSERT INTO webhooks.delivery_history (webhook_id, id, event_type, body, state, attempts, created_at, finished_at, msg_id) VALUES
    ($wid, 901, 'EmailOpens', '$body', 'delivered', 1, now() - interval '3 min', now() - interval '2 min', 'msg_901'),
    ($wid, 902, 'EmailOpens', '$body', 'dead',     10, now() - interval '3 min', now() - interval '2 min', 'msg_902'),
    ($wid, 903, 'EmailOpens', '$body', 'delivered', 1, now() - interval '3 min', now(), 'msg_903');
INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state, created_at, next_attempt_at) VALUES
    ($wid, 'EmailOpens', '$body', 'held', now() - interval '3 min', now() - interval '3 min');
INSERT INTO webhooks.webhook_logs (occurrence_date, webhook_name, webhook_id, status, error_content, outcome) VALUES
    (now() - interval '2 min', 'opens', $wid, 500, 'old failure', 'retry'),
    (now(), 'opens', $wid, 500, 'recent failure', 'retry');
SQL
is(sq("SELECT count(*) FROM webhooks.delivery_history_past"), '2', 'the two old deliveries are in the past partition');
is(sq("SELECT count(*) FROM webhooks.webhook_logs_default WHERE error_content = 'old failure'"), '1',
	'the old log row is in the default partition');
sq("ALTER SYSTEM SET webhooks.enabled = on; SELECT pg_reload_conf();");
restart_worker();
poll("SELECT to_regclass('webhooks.delivery_history_past') IS NULL",
	'the partition past the retention is dropped whole');
is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE finished_at < now() - interval '1 min'"), '0',
	'no delivered or dead delivery older than the retention is left');
is(sq("SELECT count(*) FROM webhooks.delivery_history WHERE id = 903"), '1',
	'a recent delivered one is kept');
is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE state = 'held'"), '1',
	'an old held (undelivered) one is never pruned');
poll("SELECT count(*) = 0 FROM webhooks.webhook_logs WHERE error_content = 'old failure'",
	'old log rows are pruned (the default partition, row by row)');
is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE error_content = 'recent failure'"), '1',
	'recent log rows are kept');

# the worker keeps partitions ahead of time and drops them whole past the
# retention: after a minute and a half none that ended before the cutoff is
# left, several lie ahead, and every one belongs to the extension (pg_dump
# leaves them out, DROP EXTENSION takes them)
my $made = sq("SELECT min(partition::text) FROM webhooks._history_partitions('webhooks.webhook_logs')");
poll("SELECT to_regclass('$made') IS NULL", "the oldest log partition ($made) goes once past the retention", 150);
for my $t ('delivery_history', 'webhook_logs')
{
	is(sq("SELECT count(*) FROM webhooks._history_partitions('webhooks.$t')
	        WHERE upper_bound <= now() - interval '1 min' - interval '10 s'"), '0',
		"$t: no partition ended a period before the retention's cutoff");
	cmp_ok(sq("SELECT count(*) FROM webhooks._history_partitions('webhooks.$t') WHERE lower_bound > now()"),
		'>=', 3, "$t: partitions made ahead");
	is(sq("SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'webhooks.$t'::regclass
	         AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
	                           AND d.objid = i.inhrelid AND d.deptype = 'e')"), '0',
		"$t: every partition belongs to the extension");
}

# --- the grace period of a rotated-out secret ends -----------------------
my $old_secret = sq("SELECT secret FROM webhooks.webhooks WHERE id = $wid");
my $new_secret = sq("SELECT webhooks.rotate_secret('opens')");
sq("UPDATE webhooks.webhooks SET previous_secret_expires_at = now() - interval '1 s' WHERE id = $wid");
restart_worker();
poll("SELECT previous_secret IS NULL AND previous_secret_expires_at IS NULL FROM webhooks.webhooks WHERE id = $wid",
	'the expired previous secret is dropped');
sq(q{SELECT webhooks.emit('EmailOpens', '{"messageId": 77, "subscriberId": 2, "subscriberEmail": "g@b.c"}')});
my @got = grep { $_->{body} =~ /"messageId":77/ }
  @{ scalar $rcv->wait_for_requests(1, 30, sub { $_[0]{body} =~ /"messageId":77/ }) };
is(scalar(@got), 1, 'a delivery after the grace period arrives');
my @sigs = grep { /^v1,/ } split / /, ($got[0]{headers}{'webhook-signature'} // '');
is(scalar(@sigs), 1, 'signed once');
ok(verify_request($new_secret, $got[0]), 'with the new secret');
ok(!verify_request($old_secret, $got[0]), 'not with the expired one');

# --- response headers over 64 kB ------------------------------------------
sq("SELECT webhooks.deactivate_webhook('opens')");
sq("SELECT webhooks.update_webhook('opens', target_url => '" . $rcv->url('/bigheaders/80') . "')");
sq("UPDATE webhooks.webhooks SET is_active = true WHERE id = $wid");
my $did = sq(q{SELECT webhooks.emit('EmailOpens', '{"messageId": 78, "subscriberId": 2, "subscriberEmail": "h@b.c"}')});
poll("SELECT count(*) > 0 FROM webhooks.webhook_logs WHERE delivery_id = $did",
	'80 kB of response headers: a failed attempt is logged');
like(sq("SELECT error_content FROM webhooks.webhook_logs WHERE delivery_id = $did ORDER BY id LIMIT 1"),
	qr/response headers exceed 65536 bytes/, 'saying the headers were too large');
sq("SELECT webhooks.deactivate_webhook('opens')");
sq("SELECT webhooks.update_webhook('opens', target_url => '" . $rcv->url('/bigheaders/10') . "')");
sq("UPDATE webhooks.webhooks SET is_active = true WHERE id = $wid");
$did = sq(q{SELECT webhooks.emit('EmailOpens', '{"messageId": 79, "subscriberId": 2, "subscriberEmail": "i@b.c"}')});
poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $did",
	'10 kB of response headers is fine');

$node->stop;
$rcv->stop;
done_testing();
