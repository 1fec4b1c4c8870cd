# Fair share of request slots between webhooks (issue 8, point 11).
#
# Two webhooks whose endpoint takes 1 s per request have backlogs far larger
# than webhooks.max_concurrency (8 here).  A third webhook at a fast endpoint
# then gets single events: each must arrive within a few seconds, while the
# backlogs last, not after them.  And the two slow webhooks share the slots:
# both make progress at the same time, neither waits for the other's backlog.
#
# The same again with two workers (webhooks.workers_per_database = 2) of 4
# slots each: every worker shares its own slots fairly.
#
# The bounds are generous (functional, not a benchmark): without a fair
# share the third webhook's events wait for both backlogs (about 20 s here),
# and the second slow webhook gets nothing until the first one is drained.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use WebhooksTest;

my $SLOW_MS = 1000;
my $BACKLOG = 80;				# per slow webhook: 160 s of requests, 20 s at 8 in flight
my $BOUND_S = 5;				# each fast event arrives within this

my $rcv = start_receiver();
my $node = new_node(
	'fairness',
	conf => [
		"webhooks.max_concurrency = 8",
		"webhooks.max_concurrency_per_webhook = 8",
		"webhooks.retry_schedule = '1s, 1s'"
	]);

# created against /ok/<name> (the wizard's connection test), then pointed
# at the target by a direct UPDATE (the wizard would wait for a slow target)
make_webhook($rcv, 'slow_a', 'EmailSends',  $rcv->url("/slow/$SLOW_MS/a"));
make_webhook($rcv, 'slow_b', 'EmailOpens',  $rcv->url("/slow/$SLOW_MS/b"));
make_webhook($rcv, 'fast_c', 'EmailClicks', $rcv->url("/ok/fast_c"));

my $slow_a = real('/slow/1000/a');
my $slow_b = real('/slow/1000/b');
my $fast_c = real('/ok/fast_c');

# one round: the backlogs, then the fast events beside them
sub fair_round
{
	my ($how) = @_;
	my $first = sq("SELECT coalesce(max(id), 0) + 1 FROM webhooks.all_deliveries");
	$rcv->clear_log;

	# both backlogs in one transaction: both are due at the workers' first claim
	sq( "BEGIN;"
		  . "SELECT count(webhooks.emit('EmailSends', jsonb_build_object('messageId', g, "
		  . "  'subscriberId', 1, 'subscriberEmail', 'a\@example.com'))) FROM generate_series(1, $BACKLOG) g;"
		  . "SELECT count(webhooks.emit('EmailOpens', jsonb_build_object('messageId', g, "
		  . "  'subscriberId', 2, 'subscriberEmail', 'b\@example.com'))) FROM generate_series(1, $BACKLOG) g;"
		  . "COMMIT;");

	# both slow webhooks make progress at the same time: after three rounds of
	# requests, each has had at least a quarter of them
	my $either = sub { $slow_a->($_[0]) || $slow_b->($_[0]) };
	$rcv->wait_for_requests(24, 60, $either);
	my $na = $rcv->count($slow_a);
	my $nb = $rcv->count($slow_b);
	note("$how: after 24 slow requests: slow_a $na, slow_b $nb");
	cmp_ok($na, '>=', 6, "$how: slow_a made progress");
	cmp_ok($nb, '>=', 6, "$how: slow_b made progress beside slow_a (it does not wait for its backlog)");

	# single events to the third webhook, one after the other
	my $pending_slow = qq{SELECT count(*) FROM webhooks.all_deliveries d
	  JOIN webhooks.webhooks w ON w.id = d.webhook_id
	 WHERE w.name IN ('slow_a', 'slow_b') AND d.state = 'pending' AND d.id >= $first};
	for my $i (1 .. 5)
	{
		my $t0 = Time::HiRes::time();
		sq( "SELECT webhooks.emit('EmailClicks', jsonb_build_object('messageId', $i, "
			  . "'subscriberId', 3, 'subscriberEmail', 'c\@example.com'))");
		my @got = $rcv->wait_for_requests($i, $BOUND_S, $fast_c);
		my $waited = Time::HiRes::time() - $t0;
		ok(@got >= $i && $waited <= $BOUND_S,
			"$how: fast event $i arrives within ${BOUND_S}s beside two saturated slow webhooks");
	}
	# the backlogs were still there: the events above did not wait for them
	cmp_ok(sq($pending_slow), '>', 16,
		"$how: the slow webhooks still had backlogs while the fast events were delivered");

	# everything is delivered in the end, each event once
	poll("SELECT count(*) FILTER (WHERE state = 'delivered') = 2 * $BACKLOG + 5 "
		  . "AND count(*) = 2 * $BACKLOG + 5 FROM webhooks.all_deliveries WHERE id >= $first",
		"$how: every event is delivered");
	is($rcv->count($slow_a) + $rcv->count($slow_b) + $rcv->count($fast_c),
		2 * $BACKLOG + 5, "$how: each event arrived once");
}

fair_round('one worker');

# the same with two workers of 4 slots each: each shares its own slots
# fairly, and max_concurrency_per_webhook holds over both
set_settings(workers_per_database => '2', max_concurrency => '4');
poll("SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'webhooks worker'", 'two workers', 30);
fair_round('two workers');

$node->stop;
done_testing();
