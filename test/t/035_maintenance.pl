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
sq(<<"SQL");
INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state, created_at, finished_at) VALUES
    ($wid, 'EmailOpens', '$body', 'delivered', now() - interval '3 min', now() - interval '2 min'),
    ($wid, 'EmailOpens', '$body', 'dead',      now() - interval '3 min', now() - interval '2 min'),
    ($wid, 'EmailOpens', '$body', 'delivered', now() - interval '3 min', now() - interval '10 s');
INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state, created_at, next_attempt_at) VALUES
    ($wid, 'EmailOpens', '$body', 'held', now() - interval '3 min', now() - interval '3 min');
INSERT INTO webhooks.webhook_logs (occurrence_date, webhook_name, webhook_id, status, error_content, outcome) VALUES
    (now() - interval '2 min', 'opens', $wid, 500, 'old failure', 'retry'),
    (now() - interval '10 s', 'opens', $wid, 500, 'recent failure', 'retry');
SQL
sq("ALTER SYSTEM SET webhooks.enabled = on; SELECT pg_reload_conf();");
restart_worker();
poll("SELECT count(*) = 0 FROM webhooks.deliveries WHERE finished_at < now() - interval '1 min'",
	'delivered and dead deliveries older than the retention are pruned');
is(sq("SELECT count(*) FROM webhooks.deliveries WHERE state = 'delivered'"), '1',
	'a recent delivered one is kept');
is(sq("SELECT count(*) FROM webhooks.deliveries WHERE state = 'held'"), '1',
	'an old held (undelivered) one is never pruned');
poll("SELECT count(*) = 0 FROM webhooks.webhook_logs WHERE error_content = 'old failure'",
	'old log rows are pruned');
is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE error_content = 'recent failure'"), '1',
	'recent log rows are kept');

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
poll("SELECT state = 'delivered' FROM webhooks.deliveries WHERE id = $did",
	'10 kB of response headers is fine');

$node->stop;
$rcv->stop;
done_testing();
