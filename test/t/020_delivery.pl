# Delivery by the background worker against the HTTPS test receiver:
# signatures, exact bodies and webhook-ids, the audit log of failed attempts
# (HTTP errors, refused connections, timeouts, TLS failures), retries,
# Retry-After, 410 Gone, rolled-back transactions, a receiver that goes away
# and comes back, dead deliveries and their redelivery, held deliveries of
# inactive webhooks, and the webhook_stats view.
#
# One webhook may be active per event type, so each scenario uses its own
# event type, or reuses one whose previous webhook has finished and been
# deactivated.

use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('delivery', conf => "webhooks.retry_schedule = '1s, 1s'");

# change settings of the running node (the worker reloads on SIGHUP)
sub set_conf
{
	my (@lines) = @_;
	$node->append_conf('postgresql.conf', join("\n", @lines) . "\n");
	$node->reload;
}

# the log rows of a delivery, one "attempt|status|error|outcome|next set" line each
sub log_rows
{
	my ($id) = @_;
	return sq(
		"SELECT attempt, coalesce(status::text, 'NULL'), error_content, outcome,
		        next_attempt_at IS NOT NULL
		   FROM webhooks.webhook_logs WHERE delivery_id = $id ORDER BY attempt, id");
}

# check one logged request: the delivery's webhook-id, its exact body, signed
sub check_request
{
	my ($req, $id, $secret, $what) = @_;
	is($req->{headers}{'webhook-id'}, msg_of($id), "$what: webhook-id is the delivery's msg_id");
	like($req->{headers}{'webhook-id'} // '', qr/^msg_[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}$/,
		"$what: webhook-id is msg_ and a UUIDv7");
	is($req->{body}, body_of($id), "$what: body is exactly deliveries.body");
	ok(verify_request($secret, $req), "$what: signature verifies with the webhook's secret");
	ok($req->{sig_ok}, "$what: the receiver's own check agrees");
	ok($req->{ts_ok}, "$what: webhook-timestamp is current whole seconds");
}

# The first attempt of delivery $d (webhook $name, id $wid) failed without
# an answer (refused, timed out, TLS): tests its log row (status NULL, the
# payload, outcome retry, a retry scheduled); returns its error_content.
sub failed_without_answer
{
	my ($d, $wid, $name, $what) = @_;
	poll("SELECT count(*) = 1 FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1",
		"$what writes a log row");
	my ($row, $err) = split /\n/, sq(
		"SELECT webhook_name = '$name', webhook_id = $wid, status IS NULL,
		        webhook_payload::text = (SELECT body FROM webhooks.all_deliveries WHERE id = $d),
		        outcome, next_attempt_at IS NOT NULL
		   FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1;
		 SELECT error_content FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1");
	is($row, 't|t|t|t|retry|t', "$what: log row: status NULL, the payload, outcome retry");
	note("error_content: $err");
	return $err;
}

# The deliveries @$ids end delivered and each arrives once under $path,
# with its own webhook-id: tests those, and check_request on each request.
sub delivered_once
{
	my ($ids, $path, $secret, $what) = @_;
	my $list = join ',', @$ids;
	poll("SELECT count(*) = " . scalar(@$ids)
		  . " FROM webhooks.all_deliveries WHERE id IN ($list) AND state = 'delivered'",
		"$what are delivered");
	my $reqs = $rcv->wait_for_requests(scalar(@$ids), 30, real($path));
	is_deeply([ sort map { $_->{headers}{'webhook-id'} } @$reqs ],
		[ sort map { msg_of($_) } @$ids ], "$what: each arrived once, with its webhook-id");
	my %id_of = map { msg_of($_) => $_ } @$ids;
	check_request($_, $id_of{ $_->{headers}{'webhook-id'} }, $secret, $what) for @$reqs;
	return;
}

# nothing queued and the worker asleep in its wait (not polling the queue)
my $worker_idle = q{SELECT count(*) = 1 FROM pg_stat_activity
  WHERE backend_type = 'webhooks worker' AND wait_event_type = 'Extension'
    AND NOT EXISTS (SELECT FROM webhooks.all_deliveries WHERE state = 'pending')};

########################################################################
# A successful delivery
########################################################################
{
	my ($wid, $secret) = make_webhook($rcv, 'basic', 'EmailOpens');
	my @tests = $rcv->wait_for_requests(1, 30, '/ok/basic');
	like($tests[0]{headers}{'webhook-id'}, qr/^msg_test_/,
		'create_webhook ran a connection test against the target');

	poll($worker_idle, 'the worker is idle');

	my $d1 = emit('EmailOpens', 1);
	sq( "CREATE TABLE email_opens(id bigserial primary key, message_id bigint,"
		  . " subscriber_id bigint, subscriber_email text);"
		  . "CREATE TRIGGER t AFTER INSERT ON email_opens REFERENCING NEW TABLE AS new_rows"
		  . " FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens')");
	sq("INSERT INTO email_opens(message_id, subscriber_id, subscriber_email) VALUES (2, 3, 'x\@y.z')");
	my $d2 = sq("SELECT max(id) FROM webhooks.all_deliveries WHERE webhook_id = $wid");
	isnt($d2, $d1, 'the trigger enqueued a second delivery');

	# the worker was idle: only the commit can have woken it
	my $reqs = $rcv->wait_for_requests(2, 30, real('/ok/basic'));
	is(scalar(@$reqs), 2, 'both events were delivered after their commit');
	my %by_id = map { $_->{headers}{'webhook-id'} => $_ } @$reqs;
	for my $id ($d1, $d2)
	{
		my $req = $by_id{ msg_of($id) };
		ok($req, "delivery $id arrived");
		check_request($req, $id, $secret, "delivery $id");
		is($req->{method}, 'POST', "delivery $id: POST");
		is($req->{headers}{'content-type'}, 'application/json',
			"delivery $id: content-type application/json");
		like($req->{headers}{'user-agent'}, qr/webhooks/i, "delivery $id: a user-agent naming the sender");
	}
	like(
		$by_id{ msg_of($d1) }{body},
		qr/^\{"eventType":"EmailOpens","eventDate":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z","messageId":1,"subscriberId":2,"subscriberEmail":"a\@b\.c"\}$/,
		'emitted body is the specification\'s flat payload');
	like($by_id{ msg_of($d2) }{body}, qr/"messageId":2,"subscriberId":3,"subscriberEmail":"x\@y\.z"\}$/,
		'trigger body maps the row\'s columns');
	poll("SELECT count(*) = 2 FROM webhooks.all_deliveries WHERE id IN ($d1, $d2)"
		  . " AND state = 'delivered' AND attempts = 1 AND finished_at IS NOT NULL",
		'both deliveries are delivered after one attempt');
	is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE webhook_id = $wid"), '0',
		'a success writes no log row');
}

########################################################################
# A 500 answer is logged exactly
########################################################################
{
	my ($wid, $secret) = make_webhook($rcv, 'fail500', 'EmailClicks', $rcv->url('/status/500/log'));
	my $d = emit('EmailClicks', 10);
	poll("SELECT count(*) = 1 FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1",
		'a failed attempt writes a log row');
	is( sq(
			"SELECT webhook_name = 'fail500', webhook_id = $wid, status, error_content,
			        webhook_payload::text = (SELECT body FROM webhooks.all_deliveries WHERE id = $d),
			        attempt, outcome, next_attempt_at > occurrence_date,
			        occurrence_date BETWEEN now() - interval '1 minute' AND now(),
			        duration_ms >= 0
			   FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1"),
		't|t|500|error body 500|t|1|retry|t|t|t',
		'log row: name, webhook id, status 500, the response body, the exact payload, attempt 1, retry at a later time'
	);
	my $reqs = $rcv->wait_for_requests(1, 30, real('/status/500/log'));
	check_request($reqs->[0], $d, $secret, '500 target');

	# '1s, 1s': three attempts, then dead
	poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d",
		'after the schedule the delivery is dead');
	is( log_rows($d),
		"1|500|error body 500|retry|t\n2|500|error body 500|retry|t\n3|500|error body 500|dead|f",
		'three log rows: retry, retry, dead (no next attempt)');
	is(sq("SELECT attempts FROM webhooks.all_deliveries WHERE id = $d"), '3', 'attempts = 3');
}

########################################################################
# A refused connection: no status, the transport error
########################################################################
{
	my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
	  or die "bind: $!";
	my $port = $sock->sockport;
	close $sock;    # nothing listens there any more
	my ($wid) = make_webhook($rcv, 'refused', 'EmailDeliveries', "https://127.0.0.1:$port/ok");
	my $d = emit('EmailDeliveries', 20);
	my $err = failed_without_answer($d, $wid, 'refused', 'a refused connection');
	like($err, qr/connect/i, 'error_content is the transport error');
	like($err, qr/refused|couldn't connect|failed to connect/i, '... about the refused connection');
	poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d",
		'the refused delivery ends dead');
}

########################################################################
# 500, 500, then 200: retried with the same webhook-id, signed each time
########################################################################
{
	my ($wid, $secret) = make_webhook($rcv, 'flaky', 'EmailBounces', $rcv->url('/flaky/2/k1'));
	my $d = emit('EmailBounces', 30);
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'the flaky delivery ends delivered');
	is(log_rows($d), "1|500|flaky failure|retry|t\n2|500|flaky failure|retry|t",
		'two log rows, both retry');
	is(sq("SELECT attempts FROM webhooks.all_deliveries WHERE id = $d"), '3', 'attempts = 3');
	my $reqs = $rcv->wait_for_requests(3, 30, real('/flaky/'));
	is(scalar(@$reqs), 3, 'the receiver got three requests');
	is_deeply([ map { $_->{status} } @$reqs ], [ 500, 500, 200 ], 'answered 500, 500, 200');
	my $n = 0;
	check_request($_, $d, $secret, 'flaky attempt ' . ++$n) for @$reqs;
	ok($reqs->[1]{t} - $reqs->[0]{t} >= 0.5, 'the retry waited for the schedule');
}

########################################################################
# 429 with Retry-After: 2
########################################################################
{
	my ($wid, $secret) = make_webhook($rcv, 'slowdown', 'EmailComplaints', $rcv->url('/retry-after/2'));
	my $d = emit('EmailComplaints', 40);
	poll("SELECT count(*) = 1 FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1",
		'a 429 writes a log row');
	# the schedule says about 1 s; Retry-After says 2 s
	is( sq(
			"SELECT status, error_content, outcome,
			        next_attempt_at - occurrence_date BETWEEN interval '1.5 s' AND interval '10 s'
			   FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1"),
		'429|slow down|retry|t',
		'log row: 429, next attempt about 2 s later (Retry-After, not the 1 s schedule)');
	poll("SELECT count(*) = 1 FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 2",
		'the 429 counted as an attempt: the next one is attempt 2');
	my $reqs = $rcv->wait_for_requests(2, 30, real('/retry-after/'));
	ok($reqs->[1]{t} - $reqs->[0]{t} >= 1.8,
		'the second request came at least 2 s after the first')
	  or diag('gap: ' . ($reqs->[1]{t} - $reqs->[0]{t}));
	check_request($reqs->[1], $d, $secret, 'after Retry-After');
	poll("SELECT state = 'dead' AND attempts = 3 FROM webhooks.all_deliveries WHERE id = $d",
		'429s use up the schedule too: dead after 3 attempts');
}

########################################################################
# A timeout
########################################################################
{
	set_conf("webhooks.timeout = '1s'");
	my ($wid) = make_webhook($rcv, 'timeout', 'Subscriptions', $rcv->url('/slow/5000'));
	my $d = emit('Subscriptions', 50);
	my $err = failed_without_answer($d, $wid, 'timeout', 'a timed-out request');
	like($err, qr/time(d)? ?out/i, 'error_content mentions the timeout');
	poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d",
		'the timed-out delivery ends dead');
	set_conf("webhooks.timeout = '30s'");
}

########################################################################
# 410 Gone deactivates the webhook and holds the delivery
########################################################################
{
	my ($wid, $secret) = make_webhook($rcv, 'gone', 'Confirmations', $rcv->url('/gone'));
	my $d = emit('Confirmations', 60);
	poll("SELECT NOT is_active FROM webhooks.webhooks WHERE id = $wid",
		'410 Gone deactivates the webhook');
	like(sq("SELECT deactivated_reason FROM webhooks.webhooks WHERE id = $wid"),
		qr/410/, 'deactivated_reason mentions 410');
	is(log_rows($d), '1|410|gone|deactivated|f', 'one log row, outcome deactivated');
	is(sq("SELECT state FROM webhooks.all_deliveries WHERE id = $d"), 'held',
		'the delivery is held, not lost');

	sq("SELECT webhooks.update_webhook('gone', target_url => '" . $rcv->url('/ok/gone-fixed') . "')");
	sq("SELECT webhooks.activate_webhook('gone')");
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'activated again, the held delivery is delivered');
	my $reqs = $rcv->wait_for_requests(1, 30, real('/ok/gone-fixed'));
	check_request($reqs->[0], $d, $secret, 'after 410 and activation');
	is($rcv->count(real('/gone')), 1, 'the gone target got one request only');
}

########################################################################
# TLS failure: a self-signed certificate is refused
########################################################################
{
	my $bad = start_receiver(cert => 'selfsigned');
	my ($wid) = make_webhook($rcv, 'tls', 'Unsubscriptions', $bad->url('/ok'));
	my $d = emit('Unsubscriptions', 70);
	my $err = failed_without_answer($d, $wid, 'tls', 'a TLS failure');
	like($err, qr/certificate/i, 'error_content is about the certificate');
	poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d",
		'the TLS-failing delivery ends dead');
	is($bad->count, 0, 'no request got past the TLS handshake');
	$bad->stop;
}

########################################################################
# Rolled-back transactions and savepoints send nothing
########################################################################
{
	my ($wid, $secret) = make_webhook_existing('basic');
	$rcv->clear_log;
	my $p = sub { payload('EmailOpens', $_[0]) };
	sq("BEGIN; SELECT webhooks.emit('EmailOpens', '" . $p->(101) . "'); ROLLBACK;");
	sq( "BEGIN; INSERT INTO email_opens(message_id, subscriber_id, subscriber_email)"
		  . " VALUES (102, 1, 'r\@b.c'); ROLLBACK;");
	sq( "BEGIN;"
		  . " SELECT webhooks.emit('EmailOpens', '" . $p->(103) . "');"
		  . " SAVEPOINT s;"
		  . " SELECT webhooks.emit('EmailOpens', '" . $p->(104) . "');"
		  . " INSERT INTO email_opens(message_id, subscriber_id, subscriber_email) VALUES (105, 1, 'r\@b.c');"
		  . " ROLLBACK TO SAVEPOINT s;"
		  . " SELECT webhooks.emit('EmailOpens', '" . $p->(106) . "');"
		  . " COMMIT;");
	# the marker is committed after all of them
	emit('EmailOpens', 199);
	my $reqs = $rcv->wait_for_requests(
		1, 30,
		sub { real('/ok/basic')->($_[0]) && $_[0]{body} =~ /"messageId":199,/ });
	is(scalar(@$reqs), 1, 'the committed marker arrived');
	poll("SELECT count(*) = 0 FROM webhooks.all_deliveries WHERE webhook_id = $wid AND state <> 'delivered'",
		'everything committed is delivered');
	my @got = sort { $a <=> $b }
	  map { $_->{body} =~ /"messageId":(\d+),/ ? $1 : () }
	  grep { real('/ok/basic')->($_) } $rcv->requests;
	is_deeply(\@got, [ 103, 106, 199 ],
		'only the committed events arrived, not the rolled-back ones (101, 102, 104, 105)');
	is( sq(
			"SELECT string_agg((body::json->>'messageId'), ',' ORDER BY id)
			   FROM webhooks.all_deliveries WHERE webhook_id = $wid AND (body::json->>'messageId')::int > 100"),
		'103,106,199',
		'the queue never held the rolled-back events');
}

# (id, secret) of a webhook made earlier
sub make_webhook_existing
{
	my ($name) = @_;
	return split /\|/,
	  sq("SELECT id, secret FROM webhooks.webhooks WHERE name = '$name'");
}

########################################################################
# Deactivating holds pending deliveries; activating releases them
########################################################################
{
	my ($wid, $secret) = make_webhook_existing('basic');
	$rcv->clear_log;
	# emitted and held in one transaction, so the worker never sees them pending
	my @ids = split /\n/, sq(
		"BEGIN;
		 SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 301) . "')"
		  . join('', map { " UNION ALL SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', $_) . "')" } 302 .. 303)
		  . ";
		 SELECT FROM webhooks.deactivate_webhook('basic');
		 COMMIT;");
	@ids = grep { /^\d+$/ } @ids;
	is(scalar(@ids), 3, 'three deliveries emitted');
	my $list = join ',', @ids;
	is(sq("SELECT string_agg(state, ',') FROM webhooks.all_deliveries WHERE id IN ($list)"),
		'held,held,held', 'deactivation holds them');

	# a marker for another webhook, emitted later, proves the worker went
	# through the queue after they were committed
	my ($gid, $gsecret) = make_webhook_existing('gone');
	my $m = emit('Confirmations', 399);
	my $mr = $rcv->wait_for_requests(1, 30, real('/ok/gone-fixed'));
	is($mr->[0]{headers}{'webhook-id'}, msg_of($m), 'the marker arrived');
	is($rcv->count(real('/ok/basic')), 0, 'nothing was sent for the held deliveries');
	is(sq("SELECT string_agg(state, ',') FROM webhooks.all_deliveries WHERE id IN ($list)"),
		'held,held,held', 'they are still held');
	is(sq("SELECT held FROM webhooks.webhook_stats WHERE webhook_name = 'basic'"), '3',
		'webhook_stats counts them as held');

	sq("SELECT webhooks.activate_webhook('basic')");
	delivered_once(\@ids, '/ok/basic', $secret, 'activated, the held deliveries');
}

########################################################################
# The receiver goes away and comes back on the same port
########################################################################
{
	set_conf("webhooks.retry_schedule = '1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s'");
	my $r1 = start_receiver();
	my $port = $r1->port;
	sq("SELECT * FROM webhooks.create_webhook('updown', 'EmailSends', '" . $r1->url('/ok/updown') . "')");
	my ($wid, $secret) = make_webhook_existing('updown');
	is($r1->stop, 0, 'the receiver is stopped');

	my @ids = split /\n/, sq(
		"SELECT webhooks.emit('EmailSends', json_build_object('messageId', g, 'subscriberId', 2,"
		  . " 'subscriberEmail', 'a\@b.c')::jsonb) FROM generate_series(1, 20) g");
	is(scalar(@ids), 20, '20 events emitted while the receiver is down');
	poll("SELECT count(DISTINCT delivery_id) = 20 FROM webhooks.webhook_logs
	       WHERE webhook_id = $wid AND status IS NULL AND outcome = 'retry'",
		'each of them failed an attempt');
	is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE webhook_id = $wid AND state <> 'pending'"),
		'0', 'all are still pending');

	my $r2 = start_receiver(port => $port, secret => $secret);
	is($r2->port, $port, 'a new receiver on the same port');
	poll("SELECT count(*) = 20 FROM webhooks.all_deliveries WHERE webhook_id = $wid AND state = 'delivered'",
		'all 20 are delivered once it is back');
	my $reqs = $r2->wait_for_requests(20, 30, real('/ok/updown'));
	my %seen;
	my %id_of = map { split /\|/ } split /\n/,
	  sq("SELECT msg_id, id FROM webhooks.all_deliveries WHERE webhook_id = $wid");
	for my $req (@$reqs)
	{
		my $id = $id_of{ $req->{headers}{'webhook-id'} // '' };
		next unless defined $id;
		$seen{$id}++;
		ok(verify_request($secret, $req) && $req->{sig_ok}, "msg_$id verifies");
		is($req->{body}, body_of($id), "msg_$id: exact body");
	}
	is_deeply([ sort { $a <=> $b } keys %seen ], [ sort { $a <=> $b } @ids ],
		'every delivery arrived');
	$r2->stop;
	sq("SELECT webhooks.deactivate_webhook('updown')");
}

########################################################################
# Dead after the schedule, then redelivered
########################################################################
{
	set_conf("webhooks.retry_schedule = '1s'");
	sq("SELECT webhooks.deactivate_webhook('fail500')");
	my ($wid, $secret) = make_webhook($rcv, 'dying', 'EmailClicks', $rcv->url('/status/500/dying'));
	my @ids = map { emit('EmailClicks', $_) } 501 .. 503;
	my $list = join ',', @ids;
	poll("SELECT count(*) = 3 FROM webhooks.all_deliveries WHERE id IN ($list) AND state = 'dead'",
		'with a 1 s schedule, two attempts and the deliveries are dead');
	is( sq(
			"SELECT count(*) FROM webhooks.dead_deliveries
			  WHERE delivery_id IN ($list) AND webhook_name = 'dying' AND attempts = 2
			    AND last_status = 500 AND died_at IS NOT NULL"),
		'3',
		'they appear in dead_deliveries');
	is(log_rows($ids[0]), "1|500|error body 500|retry|t\n2|500|error body 500|dead|f",
		'log rows: retry, then dead');

	sq( "SELECT webhooks.deactivate_webhook('dying');"
		  . "SELECT webhooks.update_webhook('dying', target_url => '" . $rcv->url('/ok/dying') . "');"
		  . "SELECT webhooks.activate_webhook('dying');");

	is(sq("SELECT webhooks.redeliver($ids[0])"), 't', 'redeliver(id)');
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $ids[0]",
		'the redelivered delivery is delivered');
	is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE id IN ($ids[1], $ids[2]) AND state = 'dead'"),
		'2', 'the others are still dead');
	is(sq("SELECT webhooks.redeliver_dead('dying')"), '2', 'redeliver_dead(name) queues the other two');
	delivered_once(\@ids, '/ok/dying', $secret, 'redelivered, all three');
	is(sq("SELECT count(*) FROM webhooks.dead_deliveries WHERE delivery_id IN ($list)"), '0',
		'dead_deliveries no longer lists them');
}

########################################################################
# webhook_stats agrees with all of the above
########################################################################
{
	my $stats = sq(
		"SELECT webhook_name, delivered, dead, failed_attempts, pending, held
		   FROM webhooks.webhook_stats ORDER BY webhook_name");
	my $updown_fails = sq(
		"SELECT count(*) FROM webhooks.webhook_logs l JOIN webhooks.webhooks w ON w.id = l.webhook_id
		  WHERE w.name = 'updown'");
	ok($updown_fails >= 20, 'updown: at least 20 failed attempts logged');
	is( $stats,
		join("\n",
			'basic|8|0|0|0|0',        # 2 + 3 (rollback test) + 3 released
			'dying|3|0|6|0|0',        # redelivered; 2 failures each before
			'fail500|0|1|3|0|0',
			'flaky|1|0|2|0|0',
			'gone|2|0|1|0|0',         # the 410 (logged), then 2 after activation
			'refused|0|1|3|0|0',
			'slowdown|0|1|3|0|0',
			'timeout|0|1|3|0|0',
			'tls|0|1|3|0|0',
			"updown|20|0|$updown_fails|0|0"),
		'webhook_stats: delivered, dead, failed attempts, pending and held per webhook');
}

done_testing();
