# Delivery identity and liveness (issue 8, points 7, 8, 10, 12 and 15).
#
#  7  webhook-ids are msg_ + UUIDv7, unique, never reused by a reinstall; a
#     result that arrives for a previous install (DROP/CREATE EXTENSION while
#     a request is in flight) is dropped, not written onto the new rows.
# 10  poison rows (JSON nested 100,000 deep, a body over max_payload_size, a
#     broken target URL written behind the guard's back, attempts at the
#     integer limit; a negative attempts is refused) go dead with a log row
#     saying why, while other deliveries flow and the worker keeps its pid;
#     delete_webhook(..., discard_pending => true) removes such rows.
# 12  COMMIT PREPARED, rows inserted or released by hand, a batch another
#     session held locked: delivered within seconds without another commit;
#     due rows locked by another session do not make the worker spin.
# 15  a flush failing every second (webhook_logs locked) leaves the worker's
#     memory flat and records everything once the lock goes;
#     pg_cancel_backend() on the worker never restarts it.
#  8  a multi-row batch: kill -9 during its split, kill -9 and an immediate
#     restart right after it (the worker commits asynchronously): every event
#     arrives, one webhook-id per body and one body per webhook-id.
#
# Each block runs in an eval: an error (e.g. a column the code under test
# does not have) fails that block and the others still run.

use strict;
use warnings;

use MIME::Base64 qw(decode_base64);
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node(
	'liveness',
	conf => [
		"webhooks.retry_schedule = '1s, 1s'",
		# JSON nested 100,000 deep (200 kB) must fail the depth check, not the size check
		"webhooks.max_payload_size = '512kB'",
		'max_prepared_transactions = 5',
		# the test framework turns it off; a crashed worker must not stop the server
		'restart_after_crash = on',
		# the worker's asynchronous commits stay unflushed longer: a crash
		# right after a split is more likely to undo it
		"wal_writer_delay = '10s'"
	]);

# pause (0) or resume (1) the worker; tests that it did
sub set_enabled
{
	my ($on) = @_;
	sq($on ? 'ALTER SYSTEM RESET webhooks.enabled' : 'ALTER SYSTEM SET webhooks.enabled = off');
	sq('SELECT pg_reload_conf()');
	poll("SELECT query " . ($on ? 'NOT ' : '') . "LIKE 'paused%' FROM pg_stat_activity
		  WHERE backend_type = 'webhooks worker'",
		$on ? 'the worker runs again' : 'the worker is paused', 60);
}

# ALTER SYSTEM SET a setting and reload
sub set_conf
{
	my ($name, $value) = @_;
	sq("ALTER SYSTEM SET $name = $value");
	sq('SELECT pg_reload_conf()');
}

# the receiver's log, parsed with regexes (JSON::PP is too slow for
# thousands of requests): path, webhook-id, exact body
sub reqs
{
	my @out;
	open my $fh, '<:raw', $rcv->log_file or die $rcv->log_file . ": $!";
	while (my $line = <$fh>)
	{
		last unless $line =~ /\n\z/;
		my ($path) = $line =~ /"path":"((?:[^"\\]|\\.)*)"/;
		my ($id)   = $line =~ /"webhook-id":"((?:[^"\\]|\\.)*)"/;
		my ($b64)  = $line =~ /"body_b64":"([^"]*)"/;
		push @out,
		  {
			path    => $path,
			id      => $id // '',
			body    => decode_base64($b64 // ''),
			headers => ($line =~ /"headers":(\{[^{}]*\})/)[0] // ''
		  };
	}
	close $fh;
	return grep { $_->{id} !~ /^msg_test_/ } @out;
}

# wait until $n requests under $prefix arrived, at most $secs s; those that did
sub wait_reqs
{
	my ($n, $prefix, $secs) = @_;
	my $deadline = Time::HiRes::time() + $secs;
	my @got;
	while (1)
	{
		@got = grep { index($_->{path}, $prefix) == 0 } reqs();
		return @got if @got >= $n || Time::HiRes::time() > $deadline;
		Time::HiRes::sleep(0.05);
	}
}

# CPU time (user + system) of a process, in seconds
sub cpu_seconds
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or die "/proc/$pid/stat: $!";
	my $stat = <$fh>;
	close $fh;
	$stat =~ s/^.*\)\s+//s;    # after "(comm)"
	my @f = split /\s+/, $stat;
	# fields 14 and 15 of stat(5); $f[0] is field 3
	return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

my $uuid7 = qr/^msg_[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}$/;

# run a block of tests; an error fails it, and the script goes on
sub block
{
	my ($name, $code) = @_;
	note("---- $name");
	my $ok = eval { $code->(); 1 };
	fail("$name: died: $@") unless $ok;
	return;
}

my $opens_payload =
  "jsonb_build_object('messageId', g, 'subscriberId', 2, 'subscriberEmail', 'a\@b.c')";

########################################################################
# 7: webhook-ids are UUIDv7, unique, never reused; late results dropped
########################################################################
my (%old_ids, %new_ids);
block(
	'7: ids',
	sub {
		my $pid = worker_pid();
		sq("SELECT * FROM webhooks.create_webhook('opens', 'EmailOpens', '" . $rcv->url('/ok/a') . "')");
		sq("SELECT webhooks.emit('EmailOpens', $opens_payload) FROM generate_series(1, 20) g");
		poll("SELECT count(*) = 20 FROM webhooks.all_deliveries WHERE state = 'delivered'",
			'7: 20 events delivered', 60);
		my @a = wait_reqs(20, '/ok/a', 30);
		%old_ids = map { $_->{id} => 1 } @a;
		is(scalar(keys %old_ids), 20, '7: 20 requests with 20 distinct webhook-ids');
		is(scalar(grep { $_->{id} !~ $uuid7 } @a), 0, '7: every webhook-id is msg_ + a UUIDv7 (version 7, variant 10)');
		my $now_ms = int(Time::HiRes::time() * 1000);
		is( scalar(grep { abs(hex(substr($_->{id}, 4, 12)) - $now_ms) > 3_600_000 } @a),
			0, '7: their timestamps are the time of enqueueing');
		my @stored = eval { split /\n/, sq("SELECT msg_id FROM webhooks.all_deliveries") };
		is(join(',', sort keys %old_ids), join(',', sort @stored),
			'7: the ids sent are the stored msg_id column');

		# a request in flight to a slow endpoint while the extension is
		# dropped and created again
		sq("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
		    VALUES ('slow', 'EmailClicks', '" . $rcv->url('/slow/8000') . "', true)");
		my $k = sq("SELECT webhooks.emit('EmailClicks', '"
			  . payload('EmailClicks', 1) . "')");
		my @slow = wait_reqs(1, '/slow/', 30);
		is(scalar(@slow), 1, '7: the slow request is in flight');
		$old_ids{ $slow[0]{id} } = 1 if @slow;
		set_enabled(0);
		my $offset = -s $node->logfile;
		sq('DROP EXTENSION webhooks');
		sq('CREATE EXTENSION webhooks');
		sq("SELECT * FROM webhooks.create_webhook('opens', 'EmailOpens', '" . $rcv->url('/ok/b') . "')");
		my $n = $k + 4;
		sq("SELECT webhooks.emit('EmailOpens', $opens_payload) FROM generate_series(101, 100 + $n) g");
		ok(sq("SELECT bool_and(id <= $n) AND count(*) = $n AND bool_or(id = $k) FROM webhooks.all_deliveries") eq 't',
			"7: the new install's rows reuse the ids 1..$n (the slow one was $k)");

		# the old request ends while its id belongs to a new row
		poll("SELECT query = 'paused (webhooks.enabled = off), 0 in flight' FROM pg_stat_activity
			  WHERE backend_type = 'webhooks worker'",
			'7: the old request has finished', 60);
		my $dropped = wait_log_count($offset,
			qr/dropped \d+ delivery result\(s\) whose lease had ended/, 1, 30);
		is($dropped, 1, '7: the worker logs that it dropped the old install\'s result');
		unlike(log_since($offset), qr/\[$pid\] ERROR/,
			'7: the worker notices the reinstall without an error (no stale plan is used)');
		is( sq("SELECT count(*) FROM webhooks.all_deliveries
		        WHERE state = 'pending' AND attempts = 0 AND last_status IS NULL
		          AND last_attempt_at IS NULL AND finished_at IS NULL AND lease_until IS NULL"),
			$n, '7: the new rows are untouched by the old result');
		is(sq('SELECT count(*) FROM webhooks.webhook_logs'), '0', '7: and no log row was written');

		set_enabled(1);
		poll("SELECT count(*) = $n FROM webhooks.all_deliveries WHERE state = 'delivered'",
			"7: the new install's events are delivered", 60);
		my @b = wait_reqs($n, '/ok/b', 30);
		%new_ids = map { $_->{id} => 1 } @b;
		is(scalar(keys %new_ids), $n, "7: $n distinct webhook-ids");
		is(scalar(grep { $_->{id} !~ $uuid7 } @b), 0, '7: all msg_ + UUIDv7');
		is(scalar(grep { $old_ids{$_} } keys %new_ids), 0,
			'7: none of them was used by the previous install');
	});

########################################################################
# 10: poison rows
########################################################################
my $wpid = worker_pid();
my $opens;
block(
	'10: poison rows',
	sub {
		$opens = sq("SELECT id FROM webhooks.webhooks WHERE name = 'opens'");
		sq("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active) VALUES
		      ('fail500', 'EmailBounces', '" . $rcv->url('/status/500') . "', true),
		      ('badurl', 'EmailComplaints', '" . $rcv->url('/ok/c') . "', true)");
		# the guard refuses a broken URL: write it behind its back
		sq("SET session_replication_role = replica;
		    UPDATE webhooks.webhooks SET target_url = 'https://bad host/x' WHERE name = 'badurl'");
		my ($fail500, $badurl) = split /\n/,
		  sq("SELECT id FROM webhooks.webhooks WHERE name IN ('fail500', 'badurl') ORDER BY name <> 'fail500'");

		my $e = psql_error($node,
			"INSERT INTO webhooks.deliveries (webhook_id, event_type, body, attempts)
			 VALUES ($opens, 'EmailOpens', '{}', -1)");
		is($e->{sqlstate}, '23514', '10: a negative attempts is refused by a CHECK constraint');
		$e = psql_error($node,
			"BEGIN;
			 INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state) VALUES ($opens, 'EmailOpens', '{}', 'held');
			 UPDATE webhooks.deliveries SET attempts = -5;
			 COMMIT;");
		is($e->{sqlstate}, '23514', '10: also by UPDATE');
		$e = psql_error($node, "UPDATE webhooks.delivery_history SET attempts = -5");
		is($e->{sqlstate}, '23514', '10: in the history too');

		my ($deep, $big, $bad, $max) = split /\n/, sq(
			"INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
			 VALUES ($opens, 'EmailOpens', repeat('[', 100000) || repeat(']', 100000)) RETURNING id;
			 INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
			 VALUES ($opens, 'EmailOpens', '{\"eventType\":\"EmailOpens\",\"pad\":\"' || repeat('x', 600000) || '\"}')
			 RETURNING id;
			 INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
			 VALUES ($badurl, 'EmailComplaints', '{\"eventType\":\"EmailComplaints\"}') RETURNING id;
			 INSERT INTO webhooks.deliveries (webhook_id, event_type, body, attempts)
			 VALUES ($fail500, 'EmailBounces', '{\"eventType\":\"EmailBounces\"}', 2147483647) RETURNING id;");
		# the worker finds them within a second; ordinary events meanwhile
		my $good = join ',', split /\n/,
		  sq("SELECT webhooks.emit('EmailOpens', $opens_payload) FROM generate_series(1001, 1010) g");
		poll("SELECT count(*) = 10 FROM webhooks.all_deliveries WHERE id IN ($good) AND state = 'delivered'",
			'10: other deliveries flow meanwhile', 60);
		poll("SELECT count(*) = 4 FROM webhooks.all_deliveries WHERE id IN ($deep, $big, $bad, $max) AND state = 'dead'",
			'10: every poison row goes dead', 60);
		my %why = (
			$deep => qr/nested deeper than|not valid JSON/,
			$big  => qr/max_payload_size/,
			$bad  => qr/invalid target URL/,
			$max  => qr/error body 500/);
		my %what = ($deep => 'deep JSON', $big => 'oversized body', $bad => 'broken URL',
			$max => 'attempts = 2147483647');
		for my $id ($deep, $big, $bad, $max)
		{
			like(sq("SELECT string_agg(outcome || ': ' || coalesce(error_content, ''), '; ')
			           FROM webhooks.webhook_logs WHERE delivery_id = $id"),
				qr/^dead: .*$why{$id}/, "10: $what{$id}: a log row says why");
		}
		is(sq("SELECT attempt || ' ' || status FROM webhooks.webhook_logs WHERE delivery_id = $max"),
			'2147483647 500', '10: the attempt at the integer limit is logged as such');
		is(worker_pid(), $wpid, '10: the worker kept its pid (no crash, no restart)');

		# queued poison rows do not stop delete_webhook(..., discard_pending)
		sq("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
		    VALUES ('parked', 'EmailDeliveries', '" . $rcv->url('/ok/parked') . "', false)");
		sq("INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state)
		    SELECT id, 'EmailDeliveries', b, 'held' FROM webhooks.webhooks,
		           (VALUES (repeat('[', 100000) || repeat(']', 100000)),
		                   ('{\"pad\":\"' || repeat('x', 600000) || '\"}')) v(b)
		     WHERE name = 'parked'");
		$e = psql_error($node, "SELECT webhooks.delete_webhook('parked', discard_pending => true)");
		is($e->{rc}, 0, '10: delete_webhook(discard_pending) removes a webhook with deep JSON queued')
		  or diag($e->{stderr});
		is(sq("SELECT count(*) FROM webhooks.webhooks WHERE name = 'parked'"), '0', '10: the webhook is gone');
		is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE webhook_name = 'parked' AND outcome = 'discarded'"),
			'2', '10: each discarded row is logged');
	});

# poison rows that are still queued (code that cannot handle them) must not
# stall the blocks below: their failures would not be their own
eval {
	sq("DELETE FROM webhooks.deliveries WHERE state IN ('pending', 'held')
	      AND (attempts >= 2147483646 OR length(body) > 100000 OR body LIKE '%EmailComplaints%')");
};

block(
	'10: poison webhook-ids',
	sub {
		# a batch whose first id is not one the extension makes: either
		# refused, or it must not stall the batches behind it
		my $e = psql_error($node,
			"INSERT INTO webhooks.event_batches (webhook_id, event_type, events, bodies, first_msg_id)
			 VALUES ($opens, 'EmailOpens', 1, '{\"eventType\":\"EmailOpens\"}', 'msg_not-hex')");
		if ($e->{rc} != 0)
		{
			is($e->{sqlstate}, '23514', '10: a batch with a malformed first webhook-id is refused by a CHECK');
		}
		else
		{
			my $d = sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 1) . "')");
			sq("INSERT INTO webhooks.event_batches (webhook_id, event_type, events, bodies)
			    VALUES ($opens, 'EmailOpens', 1, '{\"eventType\":\"EmailOpens\",\"after\":\"poison\"}')");
			poll("SELECT count(*) = 1 FROM webhooks.all_deliveries WHERE body LIKE '%\"after\":\"poison\"%' AND state = 'delivered'",
				'10: a batch queued behind a malformed one is delivered', 30);
		}
		# a webhook-id that would break the request's headers
		$e = psql_error($node,
			"INSERT INTO webhooks.deliveries (webhook_id, event_type, body, msg_id)
			 VALUES ($opens, 'EmailOpens', '{\"eventType\":\"EmailOpens\",\"crlf\":1}', E'msg_x\\r\\nx-injected: 1')
			 RETURNING id");
		if ($e->{rc} != 0)
		{
			is($e->{sqlstate}, '23514', '10: a webhook-id with a line break is refused by a CHECK');
		}
		else
		{
			my $id = $e->{stdout};
			poll("SELECT state IN ('dead', 'delivered') FROM webhooks.all_deliveries WHERE id = $id",
				'10: the row with a line break in its webhook-id is done with', 30);
			is(scalar(grep { $_->{headers} =~ /x-injected/ } reqs()), 0,
				'10: no request carries a header injected through the webhook-id');
		}
		# leave nothing behind for the blocks below
		sq("DELETE FROM webhooks.event_batches WHERE first_msg_id = 'msg_not-hex'");
		sq("DELETE FROM webhooks.deliveries WHERE msg_id LIKE E'msg_x\\r%'");
	});

# the application table of points 12 and 8
sq(<<'SQL');
CREATE SCHEMA app;
CREATE TABLE app.email_opens (id bigserial PRIMARY KEY, message_id bigint, subscriber_id bigint,
                              subscriber_email text);
CREATE TRIGGER email_opens_webhook AFTER INSERT ON app.email_opens
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
SQL

########################################################################
# 12: no lost wake-ups, no busy loop
########################################################################
block(
	'12: wake-ups',
	sub {
		poll("SELECT NOT EXISTS (SELECT FROM webhooks.all_deliveries WHERE state = 'pending')
			    AND NOT EXISTS (SELECT FROM webhooks.event_batches)",
			'12: the queue is quiet', 60);
		my $body = "webhooks.build_payload('EmailOpens', '" . payload('EmailOpens', 7) . "')";

		my $d = sq("BEGIN; SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 7)
			  . "'); PREPARE TRANSACTION 'wh_p1';");
		sq("COMMIT PREPARED 'wh_p1'");
		poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
			'12: an event committed with COMMIT PREPARED is delivered within seconds', 15);

		$d = sq("INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
		         VALUES ($opens, 'EmailOpens', $body) RETURNING id");
		poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
			'12: a row inserted by hand is delivered within seconds', 15);

		$d = sq("INSERT INTO webhooks.deliveries (webhook_id, event_type, body, state)
		         VALUES ($opens, 'EmailOpens', $body, 'held') RETURNING id");
		sq("UPDATE webhooks.deliveries SET state = 'pending' WHERE id = $d");
		poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
			'12: a row released by hand is delivered within seconds', 15);

		# a batch that another session holds while the worker tries to split it
		set_enabled(0);
		sq("INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
		    SELECT 20000 + g, g, 'locked\@example.com' FROM generate_series(1, 3) g");
		my $bg = $node->background_psql('postgres');
		$bg->query_safe('BEGIN');
		$bg->query_safe('SELECT id FROM webhooks.event_batches FOR UPDATE');
		set_enabled(1);    # the worker has been round its loop: it tried the batch
		is(sq('SELECT count(*) FROM webhooks.event_batches'), '1', '12: the locked batch is still there');
		$bg->query_safe('ROLLBACK');
		poll("SELECT count(*) = 3 FROM webhooks.all_deliveries WHERE body LIKE '%locked\@example.com%' AND state = 'delivered'",
			'12: once the lock is gone, the batch is delivered within seconds', 15);

		# due rows locked by another session: the worker must not spin
		set_enabled(0);
		my $ids = join ',', split /\n/, sq(
			"INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
			 SELECT $opens, 'EmailOpens', $body FROM generate_series(1, 3) RETURNING id");
		$bg->query_safe('BEGIN');
		$bg->query_safe("SELECT id FROM webhooks.deliveries WHERE id IN ($ids) FOR UPDATE");
		set_enabled(1);
		my $pid = worker_pid();
		my $cpu0 = cpu_seconds($pid);
		my $t0 = Time::HiRes::time();
		Time::HiRes::sleep(10);    # the measurement window, not a wait for an event
		my $cpu = cpu_seconds($pid) - $cpu0;
		my $secs = Time::HiRes::time() - $t0;
		note(sprintf('12: worker CPU while due rows were locked: %.2f s in %.1f s', $cpu, $secs));
		ok($cpu < 2, '12: the worker does not spin while due rows are locked by another session')
		  or diag(sprintf('%.2f s of CPU in %.1f s', $cpu, $secs));
		$bg->query_safe('ROLLBACK');
		$bg->quit;
		poll("SELECT count(*) = 3 FROM webhooks.all_deliveries WHERE id IN ($ids) AND state = 'delivered'",
			'12: once unlocked they are delivered within seconds', 15);
	});

########################################################################
# 15: errors leak nothing, a cancel does not restart the worker
########################################################################
block(
	'15: repeated errors',
	sub {
		$wpid = worker_pid();
		sq("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
		    VALUES ('fails', 'EmailSends', '" . $rcv->url('/status/500/fails') . "', true)");
		my $bg = $node->background_psql('postgres');
		$bg->query_safe('BEGIN');
		$bg->query_safe('LOCK TABLE webhooks.webhook_logs IN ACCESS EXCLUSIVE MODE');
		my $offset = -s $node->logfile;
		my $ids = join ',', split /\n/, sq(
			"SELECT webhooks.emit('EmailSends', $opens_payload) FROM generate_series(1, 5) g");
		is(scalar(wait_reqs(5, '/status/500/fails', 30)), 5, '15: five failing requests were made');

		my $err = qr/\[$wpid\] ERROR:/;
		ok(wait_log_count($offset, $err, 3, 30) >= 3, '15: the worker fails to record them, repeatedly');
		my $sample = sub {
			my $o = -s $node->logfile;
			sq("SELECT pg_log_backend_memory_contexts($wpid)");
			wait_log_count($o, qr/\[$wpid\] LOG:\s+Grand total: \d+ bytes/, 1, 30);
			my ($bytes) = log_since($o) =~ /\[$wpid\] LOG:\s+Grand total: (\d+) bytes/;
			return $bytes;
		};
		my $first = $sample->();
		my $n_first = wait_log_count($offset, $err, 0, 0);
		my $n = wait_log_count($offset, $err, $n_first + 15, 60);
		my $last = $sample->();
		note("15: worker memory after $n_first errors: $first bytes; after $n errors: $last bytes");
		ok($n >= $n_first + 15, "15: $n errors in the worker's loop");
		ok(defined $first && defined $last && $last - $first < 256 * 1024,
			'15: memory grows by less than 256 kB over them')
		  or diag('growth: ' . (($last // 0) - ($first // 0)) . ' bytes');
		is(worker_pid(), $wpid, '15: the worker kept its pid');
		$bg->query_safe('ROLLBACK');
		$bg->quit;
		poll("SELECT count(DISTINCT delivery_id) = 5 FROM webhooks.webhook_logs
			  WHERE delivery_id IN ($ids) AND attempt = 1 AND status = 500",
			'15: once the lock is gone, every failed attempt is recorded', 30);
		sq("SELECT webhooks.deactivate_webhook('fails')");
		sq("SELECT webhooks.delete_webhook('fails', discard_pending => true)");
	});

block(
	'15: pg_cancel_backend',
	sub {
		$wpid = worker_pid();
		my $start_offset = -s $node->logfile;
		poll("SELECT query = 'idle' FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
			'15: the worker is idle', 30);
		for my $i (1 .. 3)
		{
			my $o = -s $node->logfile;
			sq("SELECT pg_cancel_backend($wpid)");
			is(wait_log_count($o, qr/canceling statement due to user request/, 1, 30), 1,
				"15: cancel $i of the idle worker is reported");
		}
		my $d = sq("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 8) . "')");
		poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
			'15: deliveries continue after cancels while idle', 30);

		sq("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)
		    VALUES ('slowsubs', 'Subscriptions', '" . $rcv->url('/slow/3000/cancel') . "', true)");
		$d = sq("SELECT webhooks.emit('Subscriptions', '" . payload('Subscriptions', 9) . "')");
		is(scalar(wait_reqs(1, '/slow/3000/cancel', 30)), 1, '15: a slow request is in flight');
		for my $i (1 .. 2)
		{
			my $o = -s $node->logfile;
			sq("SELECT pg_cancel_backend($wpid)");
			is(wait_log_count($o, qr/canceling statement due to user request/, 1, 30), 1,
				"15: cancel $i of the delivering worker is reported");
		}
		poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
			'15: the request in flight is recorded as delivered', 30);
		note('15: attempts of the cancelled-around delivery: '
			  . sq("SELECT attempts FROM webhooks.all_deliveries WHERE id = $d"));
		is(worker_pid(), $wpid, '15: the worker kept its pid through five cancels');
		unlike(log_since($start_offset), qr/webhooks worker started|terminated by signal|exited with exit code/,
			'15: no worker restart in the log');
	});

########################################################################
# 8: batch splitting keeps ids through crashes
########################################################################
my $N = 2000;
my @rounds = ('kill -9 during the split', 'kill -9 right after the split',
	'immediate restart right after the split');

# insert the $N rows of round $r in one statement (one batch)
sub insert_round
{
	my ($r) = @_;
	my $base = ($r + 1) * 100000;
	sq("INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
	    SELECT $base + g, g, 'r$r\@example.com' FROM generate_series(1, $N) g");
}

# wait for the crash restart after $offset in the log; tests that the server is up
sub crash_recovered
{
	my ($offset, $what) = @_;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	ok(wait_server_up(120), "8: $what: the server accepts queries again");
}

block(
	'8: batch ids through crashes',
	sub {
		my $old_pid = worker_pid();

		# round 0: the worker is killed while its split waits for a lock
		set_enabled(0);
		insert_round(0);
		my $bg = $node->background_psql('postgres');
		$bg->query_safe('BEGIN');
		$bg->query_safe('LOCK TABLE webhooks.deliveries IN SHARE MODE');
		set_enabled(1);
		my $waiting = sq("CREATE FUNCTION pg_temp.worker_waits(p int) RETURNS boolean LANGUAGE plpgsql AS \$\$
		    BEGIN
		      FOR i IN 1..6000 LOOP
		        IF EXISTS (SELECT FROM pg_catalog.pg_locks WHERE pid = p AND NOT granted) THEN
		          RETURN true;
		        END IF;
		        PERFORM pg_catalog.pg_sleep(0.005);
		      END LOOP;
		      RETURN false;
		    END \$\$;
		    SELECT pg_temp.worker_waits($old_pid);");
		my $offset = -s $node->logfile;
		ok(kill('KILL', $old_pid), "8: $rounds[0]");
		note("8: the worker was " . ($waiting eq 't' ? '' : 'NOT ') . 'seen waiting inside its split');
		crash_recovered($offset, $rounds[0]);
		eval { $bg->quit };
		poll("SELECT count(*) = $N FROM webhooks.all_deliveries WHERE body LIKE '%r0\@example.com%' AND state = 'delivered'",
			"8: $rounds[0]: all $N events delivered", 120);

		for my $r (1, 2)
		{
			# few requests at a time: little WAL after the split's commit
			set_conf('webhooks.max_concurrency_per_webhook', 1);
			my $size = -s $rcv->log_file;
			insert_round($r);
			my $deadline = Time::HiRes::time() + 30;
			Time::HiRes::sleep(0.002)
			  while -s $rcv->log_file == $size && Time::HiRes::time() < $deadline;
			$offset = -s $node->logfile;
			if ($r == 1)
			{
				my $pid = worker_pid();
				ok(kill('KILL', $pid), "8: $rounds[$r]");
				crash_recovered($offset, $rounds[$r]);
			}
			else
			{
				$node->stop('immediate');
				$node->start;
				pass("8: $rounds[$r]");
			}
			set_conf('webhooks.max_concurrency_per_webhook', 64);
			poll("SELECT count(*) = $N FROM webhooks.all_deliveries WHERE body LIKE '%r$r\@example.com%' AND state = 'delivered'",
				"8: $rounds[$r]: all $N events delivered", 120);
		}

		my (%bodies_of, %ids_of, %per_round, $requests);
		for my $q (reqs())
		{
			next unless $q->{body} =~ /"subscriberEmail":"r(\d)\@example\.com"/;
			$requests++;
			$per_round{$1}{ $q->{body} } = 1;
			$bodies_of{ $q->{id} }{ $q->{body} } = 1;
			$ids_of{ $q->{body} }{ $q->{id} } = 1;
		}
		for my $r (0 .. 2)
		{
			is(scalar(keys %{ $per_round{$r} // {} }), $N, "8: $rounds[$r]: the receiver got all $N events");
		}
		is(scalar(grep { keys %{ $bodies_of{$_} } > 1 } keys %bodies_of), 0,
			'8: every webhook-id the receiver saw carries one body');
		is(scalar(grep { keys %{ $ids_of{$_} } > 1 } keys %ids_of), 0,
			'8: no body arrived under two webhook-ids');
		is(scalar(grep { $_ !~ $uuid7 } keys %bodies_of), 0, '8: the batch ids are msg_ + UUIDv7');
		note("8: $requests requests for " . scalar(keys %ids_of) . ' events');
		is( sq("SELECT count(*) FROM webhooks.all_deliveries d JOIN webhooks.deliveries e
		          ON e.msg_id = d.msg_id AND e.id <> d.id"),
			'0', '8: no two deliveries share a webhook-id');
	});

$node->stop;
done_testing();
