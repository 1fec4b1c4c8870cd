# Multi-row statements under the statement trigger store their events as
# compact batch rows (at most 1,000 events each); the worker splits them
# into deliveries and delivers them like any other.  Here: a statement of
# 10,001 rows (two batches) is delivered completely, once per event, each
# signed, with the body the trigger rendered from its row; a batch committed
# while its webhook is inactive is held and delivered on activation; a
# rolled-back statement leaves no batch; deleting a webhook with queued
# batches is refused unless they are discarded (and logged).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('batches',
	conf => "webhooks.retry_schedule = '1s, 1s'\nwebhooks.max_concurrency = 32");

sq(<<'SQL');
CREATE SCHEMA app;
CREATE TABLE app.email_opens (id bigserial PRIMARY KEY, message_id bigint, subscriber_id bigint,
                              subscriber_email text, created_at timestamptz DEFAULT now());
CREATE TRIGGER email_opens_webhook AFTER INSERT ON app.email_opens
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
SQL
sq("SELECT * FROM webhooks.create_webhook('opens', 'EmailOpens', '" . $rcv->url('/ok/opens') . "')");
my $secret = sq("SELECT secret FROM webhooks.webhooks WHERE name = 'opens'");
$rcv->set_secret($secret);

# a rolled-back statement leaves no batch
sq("BEGIN; INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
    SELECT g, g, 'rb' || g || '\@example.com' FROM generate_series(1, 50) g; ROLLBACK;");
is(sq("SELECT count(*) FROM webhooks.event_batches"), '0', 'a rolled-back statement leaves no batch');

# 10,001 rows in one statement: two batches, split and delivered by the worker
my $n = 10001;
sq("INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
    SELECT 500000 + g, g, 'user' || g || '\@example.com' FROM generate_series(1, $n) g");
poll("SELECT count(*) = $n FROM webhooks.all_deliveries WHERE state = 'delivered'",
	"all $n events delivered");
is(sq("SELECT count(*) FROM webhooks.event_batches"), '0', 'no batch left');
is(sq("SELECT count(*) FROM webhooks.all_deliveries"), "$n", 'one delivery per row');

my $reqs = $rcv->wait_for_requests($n + 1, 60, '/ok/opens');
my @real = grep { ($_->{headers}{'webhook-id'} // '') !~ /^msg_test_/ } @$reqs;
my %seen;
my ($signed, $bodies_ok) = (0, 0);
my %body_of = map { split /\|/, $_, 2 }
  split /\n/, sq("SELECT msg_id, body FROM webhooks.all_deliveries");
for my $r (@real)
{
	my $id = $r->{headers}{'webhook-id'};
	$seen{$id}++;
	$signed++ if verify_request($secret, $r);
	$bodies_ok++ if defined $body_of{$id} && $body_of{$id} eq $r->{body};
}
is(scalar(keys %seen), $n, 'every delivery arrived (distinct webhook-ids)');
is($signed, scalar(@real), 'every request is signed with the webhook secret');
is($bodies_ok, scalar(@real), 'every request carries its stored body');
is( sq("SELECT count(DISTINCT (body::json->>'messageId')) FROM webhooks.all_deliveries
        WHERE (body::json->>'subscriberEmail') = 'user' || (body::json->>'subscriberId') || '\@example.com'
          AND (body::json->>'messageId')::bigint = 500000 + (body::json->>'subscriberId')::bigint"),
	"$n", 'each body was rendered from its own row');

# a batch committed while the webhook is inactive is held, then delivered
sq("SELECT webhooks.deactivate_webhook('opens')");
sq("INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('spare', 'EmailSends', '"
	  . $rcv->url('/ok/spare') . "')");
# the trigger binds events to the active webhook, so activate it around the insert
sq("BEGIN; UPDATE webhooks.webhooks SET is_active = true WHERE name = 'opens';
    INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
    SELECT 900000 + g, g, 'held' || g || '\@example.com' FROM generate_series(1, 5) g;
    UPDATE webhooks.webhooks SET is_active = false WHERE name = 'opens'; COMMIT;");
poll("SELECT count(*) = 5 FROM webhooks.all_deliveries WHERE state = 'held'",
	'the batch of an inactive webhook is split into held deliveries');
is(sq("SELECT count(*) FROM webhooks.event_batches"), '0', 'and the batch is gone');
sq("SELECT webhooks.activate_webhook('opens')");
poll("SELECT count(*) = $n + 5 FROM webhooks.all_deliveries WHERE state = 'delivered'",
	'activation delivers them');

# deleting a webhook with queued batches: refused, unless discarded and logged
sq("ALTER SYSTEM SET webhooks.enabled = off; SELECT pg_reload_conf();");
poll("SELECT current_setting('webhooks.enabled') = 'off'",
	'worker paused');
# wait until the worker has seen the reload (its activity says paused)
poll("SELECT query LIKE 'paused%' FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
	'the worker reports it is paused');
sq("INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
    SELECT 700000 + g, g, 'late' || g || '\@example.com' FROM generate_series(1, 3) g");
is(sq("SELECT sum(events) FROM webhooks.event_batches"), '3', 'three events wait in a batch');
is(sq("SELECT pending FROM webhooks.webhook_stats WHERE webhook_name = 'opens'"), '3',
	'webhook_stats counts them as pending');
my ($ret, $out, $err) = $node->psql('postgres', "SELECT webhooks.delete_webhook('opens')");
like($err, qr/has 3 undelivered deliveries/, 'delete_webhook is refused while a batch is queued');
sq("SELECT webhooks.delete_webhook('opens', discard_pending => true)");
is(sq("SELECT count(*) FROM webhooks.event_batches"), '0', 'discard_pending drops the batch');
is( sq("SELECT count(*) FROM webhooks.webhook_logs WHERE outcome = 'discarded'
        AND webhook_payload->>'subscriberEmail' LIKE 'late%'"),
	'3', 'and logs each discarded event');

$node->stop;
$rcv->stop;
done_testing();
