# The delivery worker's life: how it shows in pg_stat_activity, settings
# changed live with SIGHUP, pg_terminate_backend, crashes (kill -9 of the
# worker, an immediate shutdown) in the middle of a batch of 1,000 deliveries
# (at-least-once: nothing lost, repeats identical), DROP EXTENSION and
# CREATE EXTENSION while the server runs, and the refusal to install without
# shared_preload_libraries.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use WebhooksTest;

my $rcv = start_receiver();
# 8 requests at a time to one webhook, 50 ms each: a batch of 1,000 takes
# about 6 s, a window wide enough to crash the worker in its middle
my $node = new_node(
	'life',
	conf => [
		"webhooks.retry_schedule = '1s, 1s, 1s, 1s, 1s'",
		'webhooks.max_concurrency_per_webhook = 8',
		# the test framework turns it off; a crashed worker must not stop the server
		'restart_after_crash = on'
	]);

my $payload = q{'{"messageId":1,"subscriberId":2,"subscriberEmail":"a@b.c"}'};

########################################################################
# pg_stat_activity
########################################################################
{
	poll(
		"SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'webhooks worker' AND datname = 'postgres'",
		'one worker in pg_stat_activity, backend_type "webhooks worker", in database postgres');
	like(worker_pid(), qr/^\d+$/, 'it has a pid');

	sq("SELECT * FROM webhooks.create_webhook('clicks', 'EmailClicks', '"
		  . $rcv->url('/ok/clicks') . "')");
	my $secret = sq("SELECT secret FROM webhooks.webhooks WHERE name = 'clicks'");
	$rcv->set_secret($secret);
	my $d = sq("SELECT webhooks.emit('EmailClicks', $payload)");
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d", 'a first delivery');

	# A reload wakes the worker, which looks at the queue (a transaction,
	# reported as active) and finds nothing to do: it must show idle again.
	my $t = sq('SELECT clock_timestamp()');
	$node->reload;
	poll("SELECT state_change > '$t' FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
		'the worker reacted to the reload', 20);
	poll("SELECT state = 'idle' AND query = 'idle' AND wait_event_type = 'Extension'
		   FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
		'with nothing to do, the worker shows state idle, activity "idle"', 20);
}

########################################################################
# SIGHUP: webhooks.enabled off and on again
########################################################################
{
	$rcv->clear_log;
	sq("ALTER SYSTEM SET webhooks.enabled = off");
	sq("SELECT pg_reload_conf()");
	poll("SELECT query ~ 'paused' FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
		'after the reload the worker\'s activity says paused', 30);

	my $ids = join ',', split /\n/,
	  sq("SELECT webhooks.emit('EmailClicks', $payload) FROM generate_series(1, 5)");
	# Proving a negative: the commit woke the worker; give it 2 s in which
	# an enabled worker delivers five events many times over.
	Time::HiRes::sleep(2);
	is($rcv->count(real('/ok/clicks')), 0, 'while paused nothing is sent');
	is(sq("SELECT string_agg(state || attempts, ',') FROM webhooks.all_deliveries WHERE id IN ($ids)"),
		'pending0,pending0,pending0,pending0,pending0',
		'the events stay pending, no attempt made');
	like(sq("SELECT query FROM pg_stat_activity WHERE backend_type = 'webhooks worker'"),
		qr/paused/, 'still paused');

	# A paused worker does not claim, so the commits that queue events do
	# not wake it one by one (each would cost the committing backend a
	# signal and the worker a turn of its loop): 500 single-event
	# transactions wake it at most once.
	my $switches = sub {
		my $pid = worker_pid();
		my ($n) = slurp_file("/proc/$pid/status") =~ /^voluntary_ctxt_switches:\s+(\d+)/m;
		return $n;
	};
	my $before = $switches->();
	sq(join('', map { "SELECT webhooks.emit('EmailClicks', $payload);\n" } 1 .. 500));
	my $woken = $switches->() - $before;
	cmp_ok($woken, '<', 50, "500 commits woke the paused worker $woken times, not 500");
	$ids .= ',' . sq("SELECT string_agg(id::text, ',') FROM webhooks.deliveries WHERE id NOT IN ($ids)");

	sq("ALTER SYSTEM SET webhooks.enabled = on");
	sq("SELECT pg_reload_conf()");
	poll("SELECT count(*) = 505 FROM webhooks.all_deliveries WHERE id IN ($ids) AND state = 'delivered'",
		'enabled again, the 505 are delivered');
	is(scalar(@{ $rcv->wait_for_requests(505, 30, real('/ok/clicks')) }), 505,
		'the receiver got the 505');
	poll("SELECT query !~ 'paused' FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
		'the activity no longer says paused', 20);
	sq("ALTER SYSTEM RESET webhooks.enabled");
	sq("SELECT pg_reload_conf()");
}

########################################################################
# pg_terminate_backend: the worker comes back
########################################################################
{
	my $old = worker_pid();
	is(sq("SELECT pg_terminate_backend($old)"), 't', 'pg_terminate_backend on the worker');
	my $t0 = Time::HiRes::time();
	poll("SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'webhooks worker' AND pid <> $old",
		'a new worker started', 30);
	my $took = Time::HiRes::time() - $t0;
	ok($took < 15, 'within about 10 s (bgw_restart_time is 5 s)')
	  or diag("took $took s");
	isnt(worker_pid(), $old, 'with another pid');

	$rcv->clear_log;
	my $d = sq("SELECT webhooks.emit('EmailClicks', $payload)");
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'the new worker delivers');
	my $reqs = $rcv->wait_for_requests(1, 30, real('/ok/clicks'));
	is($reqs->[0]{headers}{'webhook-id'}, msg_of($d), 'the receiver got it');
}

########################################################################
# Crashes in the middle of a batch of 1,000
########################################################################

sq("SELECT * FROM webhooks.create_webhook('opens', 'EmailOpens', '" . $rcv->url('/slow/50') . "')");
my ($opens_id, $opens_secret) =
  split /\|/, sq("SELECT id, secret FROM webhooks.webhooks WHERE name = 'opens'");
$rcv->set_secret($opens_secret);

# emit 1,000 in one transaction; returns the first delivery id
sub emit_batch
{
	my $first = sq(
		"SELECT min(id) FROM (SELECT webhooks.emit('EmailOpens',
		        jsonb_build_object('messageId', g, 'subscriberId', 2, 'subscriberEmail', 'a\@b.c')) AS id
		   FROM generate_series(1, 1000) g) s");
	like($first, qr/^\d+$/, '1,000 events emitted in one transaction');
	return $first;
}

# wait until the batch is under way but not done; returns the delivered count
sub wait_mid_batch
{
	my ($first) = @_;
	my $range = "id BETWEEN $first AND $first + 999";
	poll("SELECT count(*) >= 40 FROM webhooks.all_deliveries WHERE $range AND state = 'delivered'",
		'the batch is under way');
	my $n = sq("SELECT count(*) FROM webhooks.all_deliveries WHERE $range AND state = 'delivered'");
	ok($n < 1000, "not finished yet ($n delivered)");
	return $n;
}

# every delivery of the batch arrived at least once, repeats are identical
sub check_batch
{
	my ($first, $what) = @_;
	my $range = "id BETWEEN $first AND $first + 999";
	poll("SELECT count(*) = 1000 FROM webhooks.all_deliveries WHERE $range AND state = 'delivered'",
		"$what: all 1,000 rows end delivered");
	is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE $range AND webhook_id = $opens_id"),
		'1000', "$what: the batch has 1,000 rows of its webhook");

	my %body = map { split /\|/, $_, 2 } split /\n/,
	  sq("SELECT id, body FROM webhooks.all_deliveries WHERE $range");
	my %id_of = map { split /\|/ } split /\n/,
	  sq("SELECT msg_id, id FROM webhooks.all_deliveries WHERE $range");
	my $reqs = $rcv->wait_for_requests(1000, 60, real('/slow/50'));
	my (%seen, $unknown, $bad_body, $bad_sig);
	($unknown, $bad_body, $bad_sig) = (0, 0, 0);
	for my $req (@$reqs)
	{
		my $id = $id_of{ $req->{headers}{'webhook-id'} // '' };
		if (!defined $id || !exists $body{$id})
		{
			$unknown++;
			next;
		}
		$seen{$id}++;
		$bad_body++ if $req->{body} ne $body{$id};
		$bad_sig++ unless verify_request($opens_secret, $req) && $req->{sig_ok};
	}
	is(scalar(keys %seen), 1000, "$what: all 1,000 webhook-ids arrived");
	is($unknown, 0, "$what: no request with another webhook-id");
	is($bad_body, 0, "$what: every request, repeats included, carries its delivery's exact body");
	is($bad_sig, 0, "$what: every request is correctly signed");
	my $repeats = grep { $_ > 1 } values %seen;
	note("$what: " . scalar(@$reqs) . " requests, $repeats webhook-ids repeated");
}

{
	$rcv->clear_log;
	my $first = emit_batch();
	wait_mid_batch($first);
	my $pid = worker_pid();
	my $log_offset = -s $node->logfile;
	ok(kill('KILL', $pid), "kill -9 the worker ($pid) mid-batch");
	# the postmaster restarts everything (crash recovery) by itself
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	ok(wait_server_up(), 'the server accepts queries again after crash recovery');
	poll("SELECT count(*) = 1 FROM pg_stat_activity
	       WHERE backend_type = 'webhooks worker' AND pid <> $pid",
		'the server recovered and a new worker runs');
	check_batch($first, 'after kill -9');
}

{
	$rcv->clear_log;
	my $first = emit_batch();
	wait_mid_batch($first);
	$node->stop('immediate');
	$node->start;
	check_batch($first, 'after an immediate shutdown');
}

########################################################################
# DROP EXTENSION and CREATE EXTENSION while the server runs
########################################################################
{
	poll("SELECT count(*) = 0 FROM webhooks.all_deliveries WHERE state = 'pending'",
		'nothing is pending');
	my $pid = worker_pid();
	my ($out, $err, $timed_out) = ('', '', 0);
	my $t0 = Time::HiRes::time();
	my $ret = $node->psql(
		'postgres', 'DROP EXTENSION webhooks',
		stdout    => \$out,
		stderr    => \$err,
		timeout   => 60,
		timed_out => \$timed_out);
	my $took = Time::HiRes::time() - $t0;
	ok(!$timed_out, 'DROP EXTENSION does not hang');
	is($ret, 0, 'DROP EXTENSION succeeds') or diag($err);
	ok($took < 10, 'promptly') or diag("took $took s");
	poll("SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
		'the worker leaves the database without the extension', 30);

	sq('CREATE EXTENSION webhooks');
	$rcv->clear_log;
	sq("SELECT * FROM webhooks.create_webhook('again', 'EmailOpens', '" . $rcv->url('/ok/again') . "')");
	my $secret = sq("SELECT secret FROM webhooks.webhooks WHERE name = 'again'");
	my $d = sq("SELECT webhooks.emit('EmailOpens', $payload)");
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'after CREATE EXTENSION again, a new event is delivered');
	my $reqs = $rcv->wait_for_requests(1, 30, real('/ok/again'));
	is($reqs->[0]{headers}{'webhook-id'}, msg_of($d), 'the receiver got it');
	ok(verify_request($secret, $reqs->[0]), 'signed with the new webhook\'s secret');
	isnt(worker_pid(), $pid, 'by a new worker, which CREATE EXTENSION started');
}

$node->stop;

########################################################################
# Without shared_preload_libraries, CREATE EXTENSION refuses
########################################################################
{
	my $bare = new_node(
		'bare',
		no_extension => 1,
		conf         => "shared_preload_libraries = ''");
	my ($ret, $out, $err) = $bare->psql('postgres', 'CREATE EXTENSION webhooks');
	isnt($ret, 0, 'CREATE EXTENSION fails without the preloaded library');
	like($err, qr/ERROR:.*not loaded at server start/, 'with a clear error');
	like($err, qr/HINT:.*shared_preload_libraries/, 'whose hint names shared_preload_libraries');
	is($bare->safe_psql('postgres',
			"SELECT count(*) FROM pg_namespace WHERE nspname = 'webhooks'"),
		'0', 'nothing was installed');
	is($bare->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'webhooks worker'"),
		'0', 'and no worker runs');
	$bare->stop;
}

done_testing();
