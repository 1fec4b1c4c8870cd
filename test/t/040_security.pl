# Security of delivery, against the real HTTPS receiver on 127.0.0.1:
#
#   1. the address check at connect time: a public-looking name
#      (webhooks.test, pinned by webhooks.dns_overrides) that resolves to
#      loopback is blocked in the connection test and in the worker, and
#      nothing reaches the receiver; with allow_private_targets it arrives
#   2. cloud metadata stays blocked even with allow_private_targets
#   3. redirects are never followed
#   4. expired, self-signed and wrong-host certificates are refused
#   5. a receiver that trickles its answer is cut off (webhooks.timeout)
#   6. a 20 MB answer does not grow the worker's memory
#   7. rows written by hand (bad JSON body, bad URL, bad headers, bad token)
#      are rejected before anything is sent
#   8. one slow webhook does not starve another (per-webhook cap)
#   9. no secret or auth token reaches the server log
#  10. a non-superuser cannot change the address settings
#
# Secrets are never printed: comparisons on them use ok(), not is().

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use WebhooksTest;

my $rcv  = start_receiver();
my $port = $rcv->port;
my $node = new_node('security', conf => "webhooks.retry_schedule = '1s, 1s, 1s'");

# Settings change with set_settings(), then poll_worker_idle(): the worker
# shows 'idle' only between claims, so once it is seen, the reload signal
# (sent before) has been processed.

# filter for the receiver: requests carrying this delivery's webhook-id
sub for_delivery
{
	my ($d) = @_;
	my $msg_id = msg_of($d);
	return sub { ($_[0]{headers}{'webhook-id'} // '') eq $msg_id };
}

########################################################################
# 1. Connect-time address check: a public-looking name resolving to loopback
########################################################################
my $ssrf_url = "https://webhooks.test:$port/ok/ssrf";
{
	set_settings(
		dns_overrides         => "webhooks.test:$port:127.0.0.1",
		allow_private_targets => 'off',
		# long enough to still be retrying when private targets are allowed
		retry_schedule => join(', ', ('1s') x 15));
	poll_worker_idle();
	$rcv->clear_log;

	is(sq("SELECT webhooks.url_problem(" . lit($ssrf_url) . ") IS NULL"), 't',
		'the URL validator accepts https://webhooks.test:PORT/ (a public-looking name)');
	isnt(sq("SELECT webhooks.url_problem(" . lit($rcv->url('/ok')) . ") IS NULL"), 't',
		'... while it refuses the literal 127.0.0.1 with allow_private_targets = off');

	# (a) the connection test
	my ($ok, $status_null, $err) = split /\|/, sq(
		"SELECT ok, status IS NULL, error_content
		   FROM webhooks.test_connection(" . lit("https://webhooks.test:$port/ok/ssrf-test") . ", 'EmailOpens')");
	is($ok, 'f', 'connection test to a name resolving to 127.0.0.1: ok = f');
	is($status_null, 't', '... status NULL');
	like($err, qr/blocked/, '... error_content says blocked');
	like($err, qr/loopback/, '... and names the loopback range');
	note("connection test error_content: $err");

	# (b) the worker: the row is stored directly (no connection test)
	sq( "INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)"
		  . " VALUES ('ssrf', 'EmailOpens', " . lit($ssrf_url) . ", true)");
	my $secret = secret_of('ssrf');
	$rcv->add_secret($secret);
	my $d = emit('EmailOpens', 1);
	poll("SELECT count(*) >= 1 FROM webhooks.webhook_logs WHERE delivery_id = $d",
		'the blocked delivery attempt is logged');
	my ($row, $werr) = split /\n/, sq(
		"SELECT status IS NULL, outcome, next_attempt_at IS NOT NULL, webhook_name
		   FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1;
		 SELECT error_content FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1");
	is($row, 't|retry|t|ssrf', 'log row: status NULL, outcome retry, a retry scheduled');
	like($werr, qr/blocked/, 'log row error_content says blocked');
	like($werr, qr/loopback/, '... and names the loopback range');
	is(sq("SELECT state FROM webhooks.all_deliveries WHERE id = $d"), 'pending',
		'the delivery is still pending (retried)');

	# (c) nothing got through: the socket is refused before connect(), and
	# the log rows above are written only after the attempt ended
	is($rcv->count, 0, 'the receiver got no request at all (connection test nor delivery)');

	# allowed now: the same delivery arrives on its next retry
	set_settings(allow_private_targets => 'on');
	poll_worker_idle();
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'with allow_private_targets = on the delivery is delivered');
	my $reqs = $rcv->wait_for_requests(1, 30, for_delivery($d));
	is(scalar(@$reqs), 1, 'the receiver got it once');
	my $req = $reqs->[0] // {};
	is($req->{path}, '/ok/ssrf', '... on the webhook\'s path');
	is($req->{headers}{host}, "webhooks.test:$port", '... addressed to webhooks.test');
	is($req->{body}, body_of($d), '... with the exact body');
	ok(verify_request($secret, $req), '... signed with the webhook\'s secret');
	is( sq(
			"SELECT count(*) FROM webhooks.webhook_logs
			  WHERE delivery_id = $d AND error_content NOT LIKE 'connection blocked:%'"),
		'0',
		'every failed attempt before it was a blocked connection');
	deactivate('ssrf');
}

########################################################################
# 2. Cloud metadata stays blocked, even with allow_private_targets = on
########################################################################
{
	set_settings(dns_overrides => "webhooks.test:$port:169.254.169.254");
	poll_worker_idle();
	is(sq("SELECT current_setting('webhooks.allow_private_targets')"), 'on',
		'allow_private_targets is on');
	my ($ok, $status_null, $err) = split /\|/, sq(
		"SELECT ok, status IS NULL, error_content
		   FROM webhooks.test_connection(" . lit("https://webhooks.test:$port/ok/meta") . ", 'EmailOpens')");
	is($ok, 'f', 'connection test to a name resolving to 169.254.169.254: ok = f');
	is($status_null, 't', '... status NULL');
	like($err, qr/blocked/, '... error_content says blocked');
	like($err, qr/metadata/, '... because it is a cloud metadata address');
	note("connection test error_content: $err");

	my $e = psql_error($node,
		"SELECT * FROM webhooks.create_webhook('meta', 'EmailClicks', 'https://169.254.169.254/latest/meta-data/')");
	is($e->{sqlstate}, '22023', 'create_webhook refuses https://169.254.169.254/ (22023)')
	  or diag($e->{stderr});
	like($e->{message} // '', qr/metadata/, '... naming the metadata rule');
	$e = psql_error($node,
		"SELECT * FROM webhooks.test_connection('https://169.254.169.254/', 'EmailClicks')");
	is($e->{sqlstate}, '22023', 'test_connection refuses it too (22023)');
	is(sq("SELECT count(*) FROM webhooks.webhooks WHERE name = 'meta'"), '0',
		'nothing was stored');
	set_settings(dns_overrides => '', retry_schedule => '1s, 1s, 1s');
	poll_worker_idle();
}

########################################################################
# 2b. An override taken out of webhooks.dns_overrides stops applying
########################################################################
{
	# libcurl keeps override entries in the worker's DNS cache for good
	# unless they are removed; a connection already open is reused whatever
	# the name resolves to, so the receiver is restarted on the same port
	my $r2 = start_receiver();
	my $p2 = $r2->port;
	set_settings(dns_overrides => "webhooks.test:$p2:127.0.0.1");
	poll_worker_idle();
	sq( "INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)"
		  . " VALUES ('unpinned', 'EmailClicks', " . lit("https://webhooks.test:$p2/ok/unpinned") . ", true)");
	my $d1 = emit('EmailClicks', 1);
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d1",
		'delivered to webhooks.test pinned to 127.0.0.1');
	$r2->stop;
	set_settings(dns_overrides => '');
	poll_worker_idle();
	my $r3 = start_receiver(port => $p2);
	my $d2 = emit('EmailClicks', 2);
	poll("SELECT count(*) >= 1 FROM webhooks.webhook_logs WHERE delivery_id = $d2",
		'with the override taken out, the next delivery fails');
	my $err = sq("SELECT error_content FROM webhooks.webhook_logs WHERE delivery_id = $d2 AND attempt = 1");
	like($err, qr/resolve/i, '... because webhooks.test resolves no more');
	note("error_content: $err");
	is($r3->count(for_delivery($d2)), 0, 'the receiver on that port got nothing');
	deactivate('unpinned');
	$r3->stop;
}

########################################################################
# 3. A redirect is not followed
########################################################################
{
	$rcv->clear_log;
	my ($wid) = make_webhook($rcv, 'redirect', 'EmailClicks', $rcv->url('/redirect'));
	my $d = emit('EmailClicks', 3);
	poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d",
		'the redirected delivery ends dead after its retries');
	is( sq(
			"SELECT string_agg(attempt || ':' || coalesce(status::text, 'NULL') || ':' || outcome, ',' ORDER BY attempt)
			   FROM webhooks.webhook_logs WHERE delivery_id = $d"),
		'1:302:retry,2:302:retry,3:302:retry,4:302:dead',
		'each attempt is logged with status 302');
	is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE delivery_id = $d AND error_content = 'redirect'"),
		'4', '... and the 302\'s body as error_content');
	my @reqs = grep { for_delivery($d)->($_) } $rcv->requests;
	is(scalar(@reqs), 4, 'the receiver got exactly one request per attempt');
	is_deeply([ map { $_->{path} } @reqs ], [ ('/redirect') x 4 ], '... all of them to /redirect');
	is($rcv->count(sub { $_[0]{path} eq '/ok' }), 0,
		'no request to the Location (/ok) at all');
	deactivate('redirect');
}

########################################################################
# 4. Bad certificates: expired, self-signed, wrong host
########################################################################
{
	my %bad = (
		expired    => [ 'EmailSends',      qr/expired/i ],
		selfsigned => [ 'EmailDeliveries', qr/self[- ]?signed/i ],
		wronghost  => [ 'EmailBounces',    qr/subject name|host ?name|does not match|wrong\.example/i ],
	);
	my (%rcvs, %ids);
	for my $kind (sort keys %bad)
	{
		$rcvs{$kind} = start_receiver(cert => $kind);
		make_webhook($rcv, "tls-$kind", $bad{$kind}[0], $rcvs{$kind}->url('/ok'));
		$ids{$kind} = emit($bad{$kind}[0], 4);
	}
	my $list = join ',', values %ids;
	poll("SELECT count(*) = 3 FROM webhooks.all_deliveries WHERE id IN ($list) AND state = 'dead'",
		'the three TLS-failing deliveries end dead');
	for my $kind (sort keys %bad)
	{
		my $d = $ids{$kind};
		is( sq(
				"SELECT count(*), count(*) FILTER (WHERE status IS NULL)
				   FROM webhooks.webhook_logs WHERE delivery_id = $d"),
			'4|4',
			"$kind certificate: four attempts logged, all with status NULL");
		my $err = sq("SELECT error_content FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1");
		note("$kind: $err");
		like($err, qr/certificate|SSL/i, "$kind certificate: error_content is about the certificate / SSL");
		like($err, $bad{$kind}[1], "$kind certificate: ... and says what is wrong");
		is($rcvs{$kind}->count, 0, "$kind certificate: nothing reached the receiver's HTTP layer");
		deactivate("tls-$kind");
		$rcvs{$kind}->stop;
	}
}

########################################################################
# 5. A receiver that trickles one byte a second is cut off
########################################################################
{
	set_settings(timeout => '3s');
	poll_worker_idle();
	$rcv->clear_log;
	my ($wid) = make_webhook($rcv, 'trickle', 'EmailComplaints', $rcv->url('/trickle/60'));
	my $d = emit('EmailComplaints', 5);
	my $found = 0;
	my $deadline = Time::HiRes::time() + 20;
	while (Time::HiRes::time() < $deadline)
	{
		$found = sq("SELECT count(*) FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1");
		last if $found;
		Time::HiRes::sleep(0.1);
	}
	is($found, 1, 'the trickling attempt failed and was logged within 20 s (not after 60 s)');
	my ($row, $err) = split /\n/, sq(
		"SELECT outcome FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1;
		 SELECT error_content FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1");
	is($row, 'retry', 'log row: outcome retry');
	like($err // '', qr/time(d)?[ -]?out/i, 'log row: error_content is a timeout');
	note("trickle: $err");
	ok($rcv->count(for_delivery($d)) >= 1, 'the request did reach the receiver (cut off mid-answer)');
	deactivate('trickle');
	set_settings(timeout => '30s');
	poll_worker_idle();
}

########################################################################
# 6. A 20 MB answer does not grow the worker's memory
########################################################################
# a field of /proc/PID/status, in kB
sub proc_kb
{
	my ($pid, $field) = @_;
	my $status = slurp_file("/proc/$pid/status");
	return $status =~ /^$field:\s+(\d+) kB/m ? $1 : undef;
}

{
	my ($wid) = make_webhook($rcv, 'big', 'Subscriptions', $rcv->url('/big/20000000'));
	poll_worker_idle();
	my $pid = worker_pid();
	like($pid, qr/^\d+$/, 'the worker\'s pid');
	my $rss0  = proc_kb($pid, 'VmRSS');
	my $anon0 = proc_kb($pid, 'RssAnon');
	my @ids = map { emit('Subscriptions', 600 + $_) } 1 .. 5;
	my $list = join ',', @ids;
	poll("SELECT count(*) = 5 FROM webhooks.all_deliveries WHERE id IN ($list) AND state = 'delivered'",
		'five deliveries to a 20 MB answer are delivered (2xx)');
	my $rss1  = proc_kb($pid, 'VmRSS');
	my $anon1 = proc_kb($pid, 'RssAnon');
	is(worker_pid(), $pid, 'the same worker (it did not restart)');
	note("worker $pid VmRSS before: $rss0 kB, after: $rss1 kB (RssAnon $anon0 kB -> $anon1 kB)");
	ok(defined $rss0 && defined $rss1 && $rss1 - $rss0 < 5 * 1024,
		'the worker\'s VmRSS grew by less than 5 MB');
	is($rcv->count('/big/'), 5, 'the receiver got the five requests');
	deactivate('big');
}

########################################################################
# 7. Rows written by hand get the same checks before anything is sent
########################################################################
{
	$rcv->clear_log;
	my ($wid, $secret) = make_webhook($rcv, 'handmade', 'EmailOpens');
	my $good_url = $rcv->url('/ok/handmade');

	# change the active webhook's row behind the guard's back
	my $by_hand = sub {
		my ($set) = @_;
		sq( "BEGIN;"
			  . " ALTER TABLE webhooks.webhooks DISABLE TRIGGER webhooks_guard;"
			  . " UPDATE webhooks.webhooks SET $set WHERE name = 'handmade';"
			  . " ALTER TABLE webhooks.webhooks ENABLE TRIGGER webhooks_guard;"
			  . " COMMIT;");
	};
	my $dead_with = sub {
		my ($d, $what) = @_;
		poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d",
			"$what: the delivery goes dead");
		my ($row, $err) = split /\n/, sq(
			"SELECT count(*), bool_and(status IS NULL), min(outcome), min(attempt)
			   FROM webhooks.webhook_logs WHERE delivery_id = $d;
			 SELECT error_content FROM webhooks.webhook_logs WHERE delivery_id = $d");
		is($row, '1|t|dead|1', "$what: one log row, status NULL, outcome dead at the first attempt");
		note("$what: $err");
		return $err // '';
	};

	# (a) a body that is not JSON
	my $d = sq(
		"BEGIN;
		 INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
		 VALUES ($wid, 'EmailOpens', 'not json') RETURNING id;
		 SELECT webhooks._wake_worker();
		 COMMIT;");
	($d) = $d =~ /^(\d+)/;
	my $err = $dead_with->($d, 'body not JSON');
	like($err, qr/^rejected before sending/, 'body not JSON: error_content starts "rejected before sending"');
	like($err, qr/JSON/, '... and says the payload is not JSON');

	# (b1) http:// target: a plain TCP listener shows whether anything connected
	my $plain = IO::Socket::INET->new(
		Listen    => 5,
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto     => 'tcp',
		Blocking  => 0) or die "listen: $!";
	my $plain_port = $plain->sockport;
	$by_hand->("target_url = 'http://127.0.0.1:$plain_port/ok/plain'");
	$d = emit('EmailOpens', 71);
	$err = $dead_with->($d, 'http:// target set by hand');
	like($err, qr/^rejected before sending: invalid target URL/,
		'http:// target: rejected before sending: invalid target URL');
	ok(!IO::Select->new($plain)->can_read(0), 'http:// target: nothing connected to it');
	close $plain;

	# (b2) credentials in the URL
	my $creds_url = "https://user:pass\@127.0.0.1:$port/ok/creds";
	$by_hand->("target_url = " . lit($creds_url));
	$d = emit('EmailOpens', 72);
	$err = $dead_with->($d, 'URL with credentials set by hand');
	like($err, qr/^rejected before sending: invalid target URL/,
		'URL with credentials: rejected before sending: invalid target URL');
	is($rcv->count('/ok/creds'), 0, 'URL with credentials: nothing was sent');
	$by_hand->("target_url = " . lit($good_url));

	# (c1) a header value with CR LF
	$by_hand->(q{headers = '{"X-Evil": "a\r\nInjected: yes"}'});
	$d = emit('EmailOpens', 73);
	$err = $dead_with->($d, 'CR/LF header value set by hand');
	like($err, qr/^rejected before sending: .*X-Evil/, 'CR/LF header value: rejected before sending, naming the header');
	like($err, qr/control character/, '... as a control character');
	is($rcv->count(for_delivery($d)), 0, 'CR/LF header value: nothing was sent');

	# (c2) a reserved header name
	$by_hand->(q{headers = '{"webhook-id": "msg_forged"}'});
	$d = emit('EmailOpens', 74);
	$err = $dead_with->($d, 'reserved header set by hand');
	like($err, qr/^rejected before sending: .*webhook-id/, 'webhook-id header: rejected before sending, naming it');
	is($rcv->count(for_delivery($d)), 0, 'webhook-id header: nothing was sent under the real id');
	is($rcv->count(sub { ($_[0]{headers}{'webhook-id'} // '') =~ /forged/ }), 0,
		'webhook-id header: nothing was sent under the forged id');

	# (c3) an auth token with a line break
	$by_hand->(q{headers = '{}', auth_token = E'tok\r\nX-Injected: 1'});
	$d = emit('EmailOpens', 75);
	$err = $dead_with->($d, 'auth token with CR/LF set by hand');
	like($err, qr/^rejected before sending: .*token/, 'CR/LF auth token: rejected before sending');
	is($rcv->count(for_delivery($d)), 0, 'CR/LF auth token: nothing was sent');

	is($rcv->count(sub { exists $_[0]{headers}{injected} || exists $_[0]{headers}{'x-injected'} }), 0,
		'no injected header ever reached the receiver');

	# and the row, repaired, delivers again (the checks are not a blanket refusal)
	$by_hand->("auth_token = NULL");
	$d = emit('EmailOpens', 76);
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'repaired by hand, the webhook delivers');
	my $reqs = $rcv->wait_for_requests(1, 30, for_delivery($d));
	ok(verify_request($secret, $reqs->[0]), '... signed');
	deactivate('handmade');
}

########################################################################
# 8. One slow webhook does not starve another
########################################################################
{
	poll("SELECT count(*) = 0 FROM webhooks.all_deliveries WHERE state = 'pending'",
		'nothing else is pending');
	set_settings(max_concurrency => '4', max_concurrency_per_webhook => '2');
	poll_worker_idle();
	$rcv->clear_log;
	my ($slow_id) = make_webhook($rcv, 'slow', 'EmailClicks', $rcv->url('/slow/3000'));
	my ($fast_id) = make_webhook($rcv, 'fast', 'EmailSends');
	$rcv->clear_log;

	sq( "SELECT webhooks.emit('EmailClicks', json_build_object('messageId', g, 'subscriberId', 2,"
		  . " 'subscriberEmail', 'a\@b.c')::jsonb) FROM generate_series(1, 10) g");
	sq( "SELECT webhooks.emit('EmailSends', json_build_object('messageId', g, 'subscriberId', 2,"
		  . " 'subscriberEmail', 'a\@b.c')::jsonb) FROM generate_series(1, 5) g");
	poll("SELECT count(*) = 5 FROM webhooks.all_deliveries WHERE webhook_id = $fast_id AND state = 'delivered'",
		'the five fast deliveries are delivered');
	my $slow_done = sq(
		"SELECT count(*) FROM webhooks.all_deliveries WHERE webhook_id = $slow_id AND state = 'delivered'");
	note("slow deliveries delivered when the fast ones were all delivered: $slow_done");
	cmp_ok($slow_done, '<', 10, 'when all fast ones are delivered, the slow ones are not all done');
	cmp_ok($slow_done, '<=', 2,
		'... at most the first two slow ones (the fast ones did not wait behind a slow batch)');

	poll("SELECT count(*) = 10 FROM webhooks.all_deliveries WHERE webhook_id = $slow_id AND state = 'delivered'",
		'the ten slow deliveries are delivered in the end');
	# the receiver logs a /slow request when it arrives, then sleeps 3 s:
	# count the requests that were in the receiver at the same time
	my @t = map { $_->{t} } grep { index($_->{path}, '/slow/') == 0 } $rcv->requests;
	is(scalar(@t), 10, 'the receiver got ten slow requests');
	my $max = most_at_once(\@t, 2.5);
	note("most slow requests in flight at once: $max");
	cmp_ok($max, '<=', 2, 'never more than max_concurrency_per_webhook = 2 slow requests at once');
	deactivate('slow');
	deactivate('fast');
	set_settings(max_concurrency => '128', max_concurrency_per_webhook => '64');
	poll_worker_idle();
}

########################################################################
# 9. No secret and no auth token in the server log
########################################################################
{
	my $token = 'tok-DO-NOT-LOG';
	# built in SQL, so the statement text (log_statement = all) never holds it
	my $token_sql = q{'tok-' || 'DO-NOT-LOG'};
	my $e = psql_error($node,
		"SELECT * FROM webhooks.create_webhook('tokened', 'EmailComplaints', "
		  . lit($rcv->url('/status/500/tok')) . ", auth_token => $token_sql)");
	is($e->{sqlstate}, 'WH001', 'a failing connection test with an auth token raises WH001');
	my $r = $rcv->wait_for_requests(1, 30, '/status/500/tok');
	is($r->[0]{headers}{authorization}, "Bearer $token", '... after sending the token');

	sq( "SELECT FROM webhooks.create_webhook('tokened', 'EmailComplaints', "
		  . lit($rcv->url('/ok/tokened')) . ", auth_token => $token_sql)");
	$rcv->add_secret(secret_of('tokened'));
	sq( "SELECT FROM webhooks.deactivate_webhook('tokened');"
		  . "SELECT FROM webhooks.update_webhook('tokened', target_url => "
		  . lit($rcv->url('/status/401/tok')) . ");"
		  . "UPDATE webhooks.webhooks SET is_active = true WHERE name = 'tokened'");
	my $d = emit('EmailComplaints', 9);
	poll("SELECT count(*) >= 1 FROM webhooks.webhook_logs WHERE delivery_id = $d",
		'a failed delivery with the token is logged');
	sq("SELECT webhooks.rotate_secret('tokened')");
	deactivate('tokened');
	is(sq("SELECT count(*) FROM webhooks.webhooks WHERE previous_secret IS NOT NULL"), '1',
		'one webhook has a previous secret');

	my @secrets = split /\n/, sq(
		"SELECT secret FROM webhooks.webhooks
		 UNION ALL SELECT previous_secret FROM webhooks.webhooks WHERE previous_secret IS NOT NULL");
	cmp_ok(scalar(@secrets), '>=', 12, 'secrets to look for: ' . scalar(@secrets));
	ok(!(grep { !/^whsec_[A-Za-z0-9+\/]{40,}=*$/ } @secrets), 'each is a whsec_ secret');

	my $log = slurp_file($node->logfile);
	like($log, qr/connection test for webhook "tokened" failed/,
		'the server log has the failed connection test');
	my @leaked = grep {
		my $b64 = substr($_, 6);
		index($log, $_) >= 0 || index($log, $b64) >= 0
	} @secrets;
	is(scalar(@leaked), 0, 'the server log contains no webhook secret (with or without whsec_)');
	is(index($log, $token), -1, 'the server log does not contain the auth token');
	is( sq(
			"SELECT count(*) FROM webhooks.webhook_logs l, webhooks.webhooks w
			  WHERE strpos(l::text, w.secret) > 0
			     OR strpos(l::text, substr(w.secret, 7)) > 0
			     OR strpos(l::text, coalesce(w.previous_secret, '#none#')) > 0
			     OR strpos(l::text, " . lit($token) . ") > 0"),
		'0',
		'nor do the webhook_logs rows');
}

########################################################################
# 10. A non-superuser cannot change the address settings
########################################################################
{
	sq("CREATE ROLE plain LOGIN; GRANT webhooks_admin TO plain");
	my @as_plain = (extra_params => [ '-U', 'plain' ]);
	is($node->safe_psql('postgres', 'SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user',
			@as_plain),
		'plain|f', 'connected as a non-superuser');
	for my $set (
		"SET webhooks.allow_private_targets = on",
		"SET webhooks.dns_overrides = 'webhooks.test:443:127.0.0.1'",
		"SELECT set_config('webhooks.allow_private_targets', 'on', false)",
		"ALTER SYSTEM SET webhooks.allow_private_targets = on",
		"ALTER SYSTEM SET webhooks.dns_overrides = 'evil.test:443:127.0.0.1'",
		"ALTER ROLE plain SET webhooks.dns_overrides = 'evil.test:443:127.0.0.1'",
		"SET webhooks.ca_file = '/tmp/evil-ca.crt'",
		"SET webhooks.timeout = '1h'")
	{
		my $e = psql_error($node, $set, @as_plain);
		isnt($e->{rc}, 0, "non-superuser: $set fails");
		like($e->{message} // '', qr/cannot be changed|permission denied|must be superuser/,
			'... refused: ' . ($e->{sqlstate} // 'no SQLSTATE'))
		  or diag($e->{stderr});
	}
	my $e = psql_error($node, 'SHOW webhooks.dns_overrides', @as_plain);
	isnt($e->{rc}, 0, 'non-superuser: SHOW webhooks.dns_overrides is refused');
	$e = psql_error($node, 'ALTER TABLE webhooks.webhooks DISABLE TRIGGER webhooks_guard', @as_plain);
	is($e->{sqlstate}, '42501', 'webhooks_admin cannot disable the guard trigger (42501)');
	is(sq("SELECT tgenabled FROM pg_trigger WHERE tgname = 'webhooks_guard'"), 'O',
		'the guard trigger is enabled');
	is( sq(
			"SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
			  WHERE r.rolname = 'plain'"),
		'0',
		'no per-role setting was stored for it');
	is(sq("SELECT count(*) FROM pg_file_settings WHERE name LIKE 'webhooks.%' AND setting LIKE '%evil%'"),
		'0', 'nothing of it reached the configuration files');
}

done_testing();
