# Issue 12, point 2: several delivery workers share one database's queue.
#
# - webhooks.workers_per_database = 2: two workers, one row each in
#   pg_stat_activity; a reload to 3 starts a third, back to 1 stops the
#   others once their requests in flight are over.
# - webhooks.max_concurrency_per_webhook holds over both workers (shared
#   memory): a slow endpoint never has more requests at once than the cap.
# - 10,000 events drained by two workers: every one arrives, repeats only
#   with the same webhook-id and body, when one worker is terminated
#   mid-drain (the other goes on, the launcher starts it again) and when one
#   is killed with SIGKILL (PostgreSQL then restarts every process: its
#   crash recovery; leases are released, nothing is lost).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('workers',
	conf => [
		'webhooks.workers_per_database = 2', 'webhooks.max_concurrency_per_webhook = 2',
		'restart_after_crash = on' ]);

# the workers' pids, by their order in pg_stat_activity's backend start
sub worker_pids
{
	return split /\n/, sq("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker'
                            ORDER BY backend_start");
}

sub wait_worker_count
{
	my ($n, $what) = @_;
	poll("SELECT count(*) = $n FROM pg_stat_activity WHERE backend_type = 'webhooks worker'", $what, 30);
}

########################################################################
# two workers, each its row in pg_stat_activity
########################################################################
wait_worker_count(2, 'webhooks.workers_per_database = 2: two workers');
poll("SELECT string_agg(datname || ' ' || CASE WHEN query <> '' THEN 'state' END, ',') = 'postgres state,postgres state'
        FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
	'both in database postgres, each with its state in query', 30);

########################################################################
# the per-webhook cap holds over both workers
########################################################################
{
	my ($slow) = make_webhook($rcv, 'slow', 'EmailClicks', $rcv->url('/slow/1500'));
	$rcv->clear_log;
	sq( "SELECT webhooks.emit('EmailClicks', json_build_object('messageId', g, 'subscriberId', 2,"
		  . " 'subscriberEmail', 'a\@b.c')::jsonb) FROM generate_series(1, 12) g");
	poll("SELECT count(*) = 12 FROM webhooks.all_deliveries WHERE webhook_id = $slow AND state = 'delivered'",
		'twelve slow deliveries delivered', 60);
	# the receiver logs a /slow request when it arrives, then sleeps 1.5 s
	my @t = map { $_->{t} } grep { index($_->{path}, '/slow/') == 0 } $rcv->requests;
	is(scalar(@t), 12, 'the receiver got twelve slow requests');
	my $max = most_at_once(\@t, 1.4);
	note("most slow requests in flight at once: $max");
	cmp_ok($max, '<=', 2, 'never more than max_concurrency_per_webhook = 2 at once, over two workers');
	cmp_ok($max, '>=', 2, 'and the cap is used');
	deactivate('slow');
}

########################################################################
# webhooks.workers(): the workers, their requests in flight, last claims
########################################################################
is( sq("SELECT string_agg(database || ' ' || worker || ' ' || (pid IN (SELECT pid FROM pg_stat_activity
                                        WHERE backend_type = 'webhooks worker'))::text, ',' ORDER BY worker)
          FROM webhooks.workers()"),
	'postgres 0 true,postgres 1 true', 'webhooks.workers() lists both, with their pids');
is(sq("SELECT count(*) FROM webhooks.workers() WHERE last_claim_at IS NOT NULL AND in_flight >= 0"),
	'2', 'each has claimed');
my ($ret, $out, $err) = $node->psql('postgres',
	'CREATE ROLE someone; SET ROLE someone; SELECT * FROM webhooks.workers()');
like($err, qr/permission denied for (function workers|schema webhooks)/, 'not for roles without a grant');
sq('GRANT webhooks_reader TO someone');
is(sq("SET ROLE someone; SELECT count(*) FROM webhooks.workers()"), '2', 'webhooks_reader may read it');

########################################################################
# a commit wakes one idle worker, not both
########################################################################
{
	my ($fast) = make_webhook($rcv, 'fast', 'EmailSends');
	my $wakeups = "SELECT sum(commit_wakeups) FROM webhooks.workers() WHERE database = 'postgres'";
	my $before = sq($wakeups);
	for my $i (1 .. 20)
	{
		my $d = sq("SELECT webhooks.emit('EmailSends', '" . payload('EmailSends', $i) . "')");
		poll_until("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d", 30);
	}
	is(sq($wakeups) - $before, 20, '20 commits, each while both workers were idle, woke 20 times in all, not 40');
	deactivate('fast');
}

########################################################################
# 10,000 events: a worker stopped, then one killed, mid-drain
########################################################################
# 32 requests at once, 50 ms each: about 600 a second, a drain of 16 s
set_settings(max_concurrency_per_webhook => '32');
my ($bulk, $secret) = make_webhook($rcv, 'bulk', 'EmailOpens', $rcv->url('/slow/50'));

# emit $n events in one transaction; the first delivery id
sub emit_many
{
	my ($n) = @_;
	return sq(
		"SELECT min(id) FROM (SELECT webhooks.emit('EmailOpens',
		        jsonb_build_object('messageId', g, 'subscriberId', 2, 'subscriberEmail', 'a\@b.c')) AS id
		   FROM generate_series(1, $n) g) s");
}

# every delivery of ids first .. first + n - 1 arrived, repeats identical
sub check_all
{
	my ($first, $n, $what) = @_;
	my $range = "id BETWEEN $first AND $first + $n - 1";
	poll("SELECT count(*) = $n FROM webhooks.delivery_history WHERE $range AND state = 'delivered'",
		"$what: all $n end delivered", 120);
	my %body = map { split /\|/, $_, 2 } split /\n/, sq("SELECT msg_id, body FROM webhooks.all_deliveries WHERE $range");
	my $reqs = $rcv->wait_for_requests($n, 60, real('/slow/50'));
	my %seen;
	my ($unknown, $bad_body) = (0, 0);
	for my $req (@$reqs)
	{
		my $id = $req->{headers}{'webhook-id'} // '';
		if (!exists $body{$id})
		{
			$unknown++;
			next;
		}
		$seen{$id}++;
		$bad_body++ if $req->{body} ne $body{$id};
	}
	is(scalar(keys %seen), $n, "$what: all $n webhook-ids arrived");
	is($unknown, 0, "$what: no other webhook-id");
	is($bad_body, 0, "$what: every request, repeats included, carries its delivery's body");
	note("$what: " . scalar(@$reqs) . ' requests, ' . scalar(grep { $_ > 1 } values %seen) . ' ids repeated');
}

sub wait_under_way
{
	my ($first, $n) = @_;
	poll("SELECT count(*) >= 500 FROM webhooks.delivery_history
           WHERE id BETWEEN $first AND $first + $n - 1 AND state = 'delivered'", 'the drain is under way', 60);
	my $done = sq("SELECT count(*) FROM webhooks.delivery_history
                    WHERE id BETWEEN $first AND $first + $n - 1 AND state = 'delivered'");
	ok($done < $n, "not finished ($done delivered)");
}

{
	$rcv->clear_log;
	my $first = emit_many(10000);
	wait_under_way($first, 10000);
	my ($one, $two) = worker_pids();
	is(sq("SELECT pg_terminate_backend($two)"), 't', 'one of the two workers is terminated mid-drain');
	my $got = $rcv->count(real('/slow/50'));
	sleep 0.5;
	cmp_ok($rcv->count(real('/slow/50')), '>', $got, 'the other goes on delivering meanwhile');
	is((worker_pids())[0], $one, 'the other worker is the same process');
	wait_worker_count(2, 'the launcher starts a second worker again');
	check_all($first, 10000, 'a worker terminated');
}

{
	$rcv->clear_log;
	my $first = emit_many(10000);
	wait_under_way($first, 10000);
	my ($one, $two) = worker_pids();
	my $offset = -s $node->logfile;
	ok(kill('KILL', $two), 'kill -9 of one worker mid-drain');
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	ok(wait_server_up(), 'the server is back after crash recovery');
	wait_worker_count(2, 'two workers again');
	check_all($first, 10000, 'a worker killed');
}

########################################################################
# DROP EXTENSION with requests in flight: a new install starts from 0
########################################################################
# Webhook ids start again at 1 in a new install: the requests in flight to
# the old webhook 1 must not count against the new one's cap.
{
	sq('DROP EXTENSION webhooks; CREATE EXTENSION webhooks');
	wait_worker_count(2, 'a fresh install has its two workers');
	set_settings(max_concurrency_per_webhook => '2');
	my ($old) = make_webhook($rcv, 'stuck', 'EmailClicks', $rcv->url('/slow/8000'));
	is($old, '1', 'the first webhook of the install is webhook 1');
	$rcv->clear_log;
	sq("SELECT webhooks.emit('EmailClicks', '" . payload('EmailClicks', $_) . "')") for 1 .. 2;
	$rcv->wait_for_requests(2, 30, real('/slow/8000'));
	poll("SELECT sum(in_flight) = 2 FROM webhooks.workers()", 'two requests in flight to webhook 1 (its cap)', 30);
	sq('DROP EXTENSION webhooks');
	wait_worker_count(0, 'DROP EXTENSION stops both workers');
	sq('CREATE EXTENSION webhooks');
	my ($new) = make_webhook($rcv, 'after', 'EmailClicks');
	is($new, '1', 'the new install\'s first webhook is webhook 1 again');
	my $d = sq("SELECT webhooks.emit('EmailClicks', '" . payload('EmailClicks', 3) . "')");
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'it is delivered at once: the old requests in flight do not take its cap', 6);
	set_settings(max_concurrency_per_webhook => '32');
}

########################################################################
# webhooks.workers_per_database on reload
########################################################################
set_settings(workers_per_database => '3');
wait_worker_count(3, 'a reload to 3 starts a third worker');
set_settings(workers_per_database => '1');
wait_worker_count(1, 'a reload to 1 stops the other two');
my $d = sq("SELECT webhooks.emit('EmailClicks', '" . payload('EmailClicks', 4) . "')");
poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d", 'the one left delivers');

$node->stop;
done_testing();
