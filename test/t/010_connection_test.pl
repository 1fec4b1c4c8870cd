# webhooks.test_connection() against the real HTTPS receiver on 127.0.0.1:
# the dummy payload of every event type and the exact request that carries
# it (method, headers, Standard Webhooks signature), auth token and extra
# headers, HTTP failures reported as data, transport and TLS failures,
# timeouts, redirects not followed, cancellation (statement_timeout and
# pg_cancel_backend), and bad input rejected with a SQLSTATE before anything
# is sent.
#
# Secrets are never printed: test names do not contain them and comparisons
# are done with ok(), not is().

use strict;
use warnings;

use IO::Socket::INET;
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use Time::Local ();
use WebhooksTest;

my $node = new_node('conn');
my $secret = $node->safe_psql('postgres', 'SELECT webhooks.generate_secret()');
ok($secret =~ /^whsec_[A-Za-z0-9+\/]+=*$/, 'generate_secret() gives a whsec_ secret');

my $rcv = start_receiver(secret => $secret);



# Run test_connection with the given SQL argument list; returns a hash of
# its columns (webhook_payload as text, so the exact bytes can be compared)
# plus {rc, stderr, elapsed}.  $pre is SQL run first in the same session.
sub test_conn
{
	my ($args, $pre) = @_;
	my ($out, $err) = ('', '');
	my $sql = ($pre // '') . "\n"
	  . 'SELECT row_to_json(x) FROM (SELECT ok, abs(extract(epoch FROM occurrence_date - now())) < 60 AS occurred_now, '
	  . 'webhook_name, webhook_id, status, error_content, webhook_payload::text AS payload, duration_ms '
	  . "FROM webhooks.test_connection($args)) x;";
	my $timed_out = 0;
	my $t0 = Time::HiRes::time();
	my $rc = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err,
		timeout => 60, timed_out => \$timed_out);
	my $elapsed = Time::HiRes::time() - $t0;
	my %r;
	# a connection test must end by itself (webhooks.timeout is 30 s)
	fail('test_connection(' . redact($args) . ') did not return within 60 s')
	  if $timed_out;
	if ($rc == 0 && $out =~ /^(\{.*\})\s*$/s)
	{
		%r = %{ JSON::PP::decode_json($1) };
	}
	else
	{
		diag('test_connection(' . redact($args) . ") failed: rc $rc: $err");
	}
	$r{rc}      = $rc;
	$r{stderr}  = $err;
	$r{elapsed} = $elapsed;
	return \%r;
}


# the keys of a flat JSON object, in order
sub json_keys
{
	my ($text) = @_;
	my @keys;
	while ($text =~ /"([^"\\]*)"\s*:/g)
	{
		push @keys, $1;
	}
	return \@keys;
}

# ISO-8601 UTC "YYYY-MM-DDTHH:MM:SS[.fff]Z" -> epoch seconds, or undef
sub parse_utc
{
	my ($s) = @_;
	return undef
	  unless defined $s
	  && $s =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d{1,9})?Z$/;
	return Time::Local::timegm($6, $5, $4, $3, $2 - 1, $1);
}

########################################################################
# 200: the dummy payload of every event type, and the request carrying it
########################################################################

my $email = [qw(messageId subscriberId subscriberEmail)];
my $list  = [qw(listId subscriberId subscriberEmail)];
# the specification's example values
my %types = (
	EmailSends => [ $email,
		{ messageId => 145413, subscriberId => 6552353, subscriberEmail => 'test@test.com' } ],
	EmailClicks => [ $email,
		{ messageId => 148000, subscriberId => 1, subscriberEmail => 'test@test.com' } ],
	EmailOpens => [ $email,
		{ messageId => 149211, subscriberId => 5823952, subscriberEmail => 'test@test.com' } ],
	EmailDeliveries => [ $email,
		{ messageId => 145413, subscriberId => 6552353, subscriberEmail => 'test@test.com' } ],
	EmailBounces => [ $email,
		{ messageId => 138876, subscriberId => 149448, subscriberEmail => 'test@test.com' } ],
	EmailComplaints => [ $email,
		{ messageId => 149141, subscriberId => 49858, subscriberEmail => 'test@test.com' } ],
	Subscriptions => [ $list,
		{ listId => 7477, subscriberId => 6552356, subscriberEmail => 'test@test.com' } ],
	Confirmations => [ [qw(messageId subscriberId subscriberEmail listId)],
		{ messageId => 149212, subscriberId => 5823952, subscriberEmail => 'test@test.com', listId => 7480 } ],
	Unsubscriptions => [ $list,
		{ listId => 7468, subscriberId => 4723542, subscriberEmail => 'test@test.com' } ],
);

for my $type (sort keys %types)
{
	my ($fields, $values) = @{ $types{$type} };
	$rcv->clear_log;
	my $path = "/ok/$type";
	my $r = test_conn(lit($rcv->url($path)) . ", " . lit($type) . ", secret => " . lit($secret));

	is($r->{rc}, 0, "$type: test_connection runs without error");
	ok($r->{ok}, "$type: ok = t");
	is($r->{status}, 200, "$type: status 200");
	ok(!defined $r->{error_content}, "$type: error_content is NULL");
	ok(defined $r->{duration_ms} && $r->{duration_ms} > 0, "$type: duration_ms > 0");

	my $payload = $r->{payload} // '';
	is_deeply(json_keys($payload), [ 'eventType', 'eventDate', @$fields ],
		"$type: payload keys in the specification's order")
	  or diag($payload);
	my $p = eval { JSON::PP::decode_json($payload) } // {};
	is($p->{eventType}, $type, "$type: eventType");
	my $date = parse_utc($p->{eventDate});
	ok(defined $date && abs($date - time()) < 300,
		"$type: eventDate is ISO-8601 UTC ending in Z, and now")
	  or diag("eventDate: " . ($p->{eventDate} // 'undef'));
	is_deeply({ map { $_ => $p->{$_} } @$fields }, $values,
		"$type: the specification's example values");
	for my $f (@$fields)
	{
		my $re = $f eq 'subscriberEmail'
		  ? qr/"$f"\s*:\s*"[^"]*"/
		  : qr/"$f"\s*:\s*-?\d+\s*[,}]/;
		like($payload, $re, "$type: $f is a JSON " . ($f eq 'subscriberEmail' ? 'string' : 'number'));
	}

	my $reqs = $rcv->wait_for_requests(1, 10, $path);
	is(scalar(@$reqs), 1, "$type: the receiver got one request");
	my $req = $reqs->[0] // {};
	is($req->{body}, $payload, "$type: the receiver got exactly webhook_payload");
	ok(verify_request($secret, $req), "$type: signature verifies with the secret passed in");
	ok($req->{sig_ok}, "$type: the receiver's own check agrees (sig_ok)");
}

# one request looked at closely
{
	$rcv->clear_log;
	my $r = test_conn(lit($rcv->url('/ok/close')) . ", 'EmailOpens', secret => "
		  . lit($secret) . ", name => 'probe'");
	ok($r->{ok}, 'close look: ok');
	is($r->{webhook_name}, 'probe', 'webhook_name is the name passed in');
	ok(!defined $r->{webhook_id}, 'webhook_id is NULL (nothing stored)');
	ok($r->{occurred_now}, 'occurrence_date is now');

	my ($req) = $rcv->wait_for_requests(1, 10, '/ok/close');
	$req //= { headers => {} };
	my $h = $req->{headers};
	is($req->{method}, 'POST', 'method POST');
	is($h->{'content-type'}, 'application/json', 'content-type application/json');
	like($h->{'user-agent'} // '', qr{^webhooks/}, 'user-agent starts with webhooks/');
	ok(defined $h->{'webhook-id'} && $h->{'webhook-id'} ne '', 'webhook-id is set');
	unlike($h->{'webhook-id'} // '.', qr/\./, 'webhook-id has no "."');
	like($h->{'webhook-timestamp'} // '', qr/^\d+$/, 'webhook-timestamp is whole seconds');
	ok(defined $h->{'webhook-timestamp'}
		  && $h->{'webhook-timestamp'} =~ /^\d+$/
		  && abs($h->{'webhook-timestamp'} - $req->{t}) <= 300,
		'webhook-timestamp within 5 minutes of now');
	ok($req->{ts_ok}, "the receiver's ts_ok agrees");
	like($h->{'webhook-signature'} // '', qr{^v1,[A-Za-z0-9+/]{43}=$},
		'webhook-signature is one v1 entry (no rotation)');
	ok(verify_request($secret, $req), 'signature verifies with the secret passed in');
	ok($req->{sig_ok}, 'sig_ok');
	ok(!exists $h->{authorization}, 'no Authorization header without auth_token');

	# a secret other than the one passed in does not verify (the check can fail)
	my $other = $node->safe_psql('postgres', 'SELECT webhooks.generate_secret()');
	ok(!verify_request($other, $req), 'signature does not verify with another secret');

	# without a secret, a random one signs: the request is still signed
	$rcv->clear_log;
	$r = test_conn(lit($rcv->url('/ok/nosecret')) . ", 'EmailOpens'");
	ok($r->{ok}, 'without a secret: ok');
	($req) = $rcv->wait_for_requests(1, 10, '/ok/nosecret');
	like($req->{headers}{'webhook-signature'} // '', qr{^v1,},
		'without a secret: the request is signed anyway');
	ok(!verify_request($secret, $req), 'without a secret: not signed with ours');
}

########################################################################
# auth token and extra headers
########################################################################
{
	$rcv->clear_log;
	my $r = test_conn(lit($rcv->url('/ok/auth')) . ", 'EmailOpens', auth_token => 'tok123', "
		  . "headers => '{\"X-Source\":\"crm\"}', secret => " . lit($secret));
	ok($r->{ok}, 'auth_token and headers: ok');
	my ($req) = $rcv->wait_for_requests(1, 10, '/ok/auth');
	$req //= { headers => {} };
	is($req->{headers}{authorization}, 'Bearer tok123', 'auth_token => tok123 sends Authorization: Bearer tok123');
	is($req->{headers}{'x-source'}, 'crm', 'headers => {"X-Source":"crm"} sends X-Source: crm');
	ok(verify_request($secret, $req), 'still signed');
}

########################################################################
# HTTP failure: data, not an exception
########################################################################
{
	$rcv->clear_log;
	my $r = test_conn(lit($rcv->url('/status/500')) . ", 'EmailOpens', secret => " . lit($secret));
	is($r->{rc}, 0, '500: no exception');
	ok(defined $r->{ok} && !$r->{ok}, '500: ok = f');
	is($r->{status}, 500, '500: status 500');
	is($r->{error_content}, 'error body 500', '500: error_content is the response body');
	like($r->{payload} // '', qr/^\{"eventType"\s*:\s*"EmailOpens"/, '500: webhook_payload is still reported');
	is($rcv->count('/status/500'), 1, '500: the receiver got the request');
}

########################################################################
# transport failures
########################################################################

# connection refused: a port nobody listens on
{
	my $sock = IO::Socket::INET->new(
		Listen    => 1,
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto     => 'tcp') or die "bind: $!";
	my $port = $sock->sockport;
	close $sock;
	my $r = test_conn(lit("https://127.0.0.1:$port/ok") . ", 'EmailOpens'");
	is($r->{rc}, 0, 'refused: no exception');
	ok(defined $r->{ok} && !$r->{ok}, 'refused: ok = f');
	ok(!defined $r->{status}, 'refused: status NULL');
	like($r->{error_content} // '', qr/connect/i, 'refused: error_content mentions connect');
}

# TLS: certificates that must not be trusted; TLS fails before HTTP
my %tls = (
	selfsigned => qr/self[- ]?signed/i,
	expired    => qr/expired/i,
	wronghost  => qr/subject name|does not match|alternative|host ?name/i);
for my $kind (sort keys %tls)
{
	my $bad = start_receiver(cert => $kind, secret => $secret);
	my $r = test_conn(lit($bad->url('/ok')) . ", 'EmailOpens', secret => " . lit($secret));
	is($r->{rc}, 0, "$kind cert: no exception");
	ok(defined $r->{ok} && !$r->{ok}, "$kind cert: ok = f");
	ok(!defined $r->{status}, "$kind cert: status NULL");
	like($r->{error_content} // '', qr/SSL/, "$kind cert: error_content mentions SSL");
	like($r->{error_content} // '', $tls{$kind}, "$kind cert: error_content names the problem")
	  or diag($r->{error_content});
	is($bad->count, 0, "$kind cert: the receiver logged no request (TLS failed before HTTP)");
	$bad->stop;
}

# slow answer past webhooks.timeout
{
	$rcv->clear_log;
	my $r = test_conn(lit($rcv->url('/slow/5000')) . ", 'EmailOpens'",
		"SET webhooks.timeout = '1s';");
	is($r->{rc}, 0, 'timeout: no exception');
	ok(defined $r->{ok} && !$r->{ok}, 'timeout: ok = f');
	ok(!defined $r->{status}, 'timeout: status NULL');
	like($r->{error_content} // '', qr/time(d)? ?out/i, 'timeout: error_content mentions the timeout');
	ok($r->{elapsed} < 4.5, 'timeout: returned well before the 5 s answer')
	  or diag("took $r->{elapsed} s");
	is($rcv->count('/slow/'), 1, 'timeout: the request reached the receiver');
}

# redirects are never followed
{
	$rcv->clear_log;
	my $r = test_conn(lit($rcv->url('/redirect')) . ", 'EmailOpens'");
	is($r->{rc}, 0, 'redirect: no exception');
	ok(defined $r->{ok} && !$r->{ok}, 'redirect: ok = f');
	is($r->{status}, 302, 'redirect: status 302');
	is($rcv->count, 1, 'redirect: the receiver got exactly one request');
	is($rcv->count('/ok'), 0, 'redirect: the Location was not requested');
}

########################################################################
# cancellation
########################################################################

# statement_timeout
{
	$rcv->clear_log;
	my $t0 = Time::HiRes::time();
	my $e = psql_error($node,
		"SET statement_timeout = '1s';\nSELECT * FROM webhooks.test_connection("
		  . lit($rcv->url('/stall/30')) . ", 'EmailOpens');");
	my $elapsed = Time::HiRes::time() - $t0;
	isnt($e->{rc}, 0, 'statement_timeout: the statement fails');
	is($e->{sqlstate}, '57014', 'statement_timeout: SQLSTATE 57014');
	like($e->{message} // '', qr/canceling statement due to statement timeout/,
		'statement_timeout: canceling statement due to statement timeout');
	ok($elapsed < 10, 'statement_timeout: well before the 30 s stall ends')
	  or diag("took $elapsed s");
	is($rcv->count('/stall/'), 1, 'statement_timeout: the request had been sent');
}

# pg_cancel_backend from a second session
{
	$rcv->clear_log;
	my ($out, $err) = ('', '');
	my $in = "\\set VERBOSITY verbose\n"
	  . "SELECT ok FROM webhooks.test_connection(" . lit($rcv->url('/stall/30')) . ", 'EmailOpens');\n"
	  . "SELECT 'after cancel: ' || ok FROM webhooks.test_connection(" . lit($rcv->url('/ok/aftercancel')) . ", 'EmailOpens');\n";
	my $connstr = $node->connstr('postgres') . ' application_name=cancel_me';
	# the script comes from a file: IPC::Run feeds a scalar only while pumped
	my $sqlfile = PostgreSQL::Test::Utils::tempdir() . '/cancel.sql';
	open my $fh, '>', $sqlfile or die "$sqlfile: $!";
	print $fh $in;
	close $fh;
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=0', '-d', $connstr, '-f', $sqlfile ],
		'<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

	my $got = $rcv->wait_for_requests(1, 30, '/stall/');
	is(scalar(@$got), 1, 'cancel: the stalled request reached the receiver');
	poll("SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'cancel_me' AND state = 'active'",
		'cancel: the session is waiting');
	my $t0 = Time::HiRes::time();
	is( $node->safe_psql('postgres',
			"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'cancel_me' AND state = 'active'"),
		't', 'cancel: pg_cancel_backend() from a second session');
	$h->finish;
	my $elapsed = Time::HiRes::time() - $t0;
	like($err, qr/ERROR:\s+57014:\s+canceling statement due to user request/,
		'cancel: SQLSTATE 57014, canceling statement due to user request');
	ok($elapsed < 10, 'cancel: the waiting statement ended at once, not after the stall')
	  or diag("took $elapsed s");
	like($out, qr/^after cancel: true$/m,
		'cancel: the session survives and a next connection test works');
}

########################################################################
# bad input: an error with a SQLSTATE, and nothing sent
########################################################################

my $good_url = $rcv->url('/ok/bad-input');
my @bad = (
	[ 'NULL URL', "NULL, 'EmailOpens'", '22004', qr/target URL is required/ ],
	[ 'empty URL', "'', 'EmailOpens'", '22023', qr/target URL is required/ ],
	[ 'blank URL', "'   ', 'EmailOpens'", '22023', qr/target URL is required/ ],
	[ 'NULL event type', lit($good_url) . ", NULL", '22004', qr/event type is required/ ],
	[ 'unknown event type', lit($good_url) . ", 'NoSuchEvent'", '22023',
		qr/unknown event type "NoSuchEvent"/ ],
	[ 'http:// URL', lit('http://127.0.0.1:' . $rcv->port . '/ok/bad-input') . ", 'EmailOpens'",
		'22023', qr/invalid target URL: .*https/ ],
	[ 'cloud metadata address with allow_private_targets on',
		"'https://169.254.169.254/latest/meta-data/', 'EmailOpens'", '22023',
		qr/invalid target URL: .*metadata/ ],
	[ 'reserved extra header webhook-id',
		lit($good_url) . ", 'EmailOpens', headers => '{\"webhook-id\":\"x\"}'", '22023',
		qr/invalid extra headers: .*webhook-id/ ],
	[ 'reserved extra header Content-Type',
		lit($good_url) . ", 'EmailOpens', headers => '{\"Content-Type\":\"text/plain\"}'", '22023',
		qr/invalid extra headers/ ],
	[ 'header value with CR LF',
		lit($good_url) . ", 'EmailOpens', headers => '{\"X-A\":\"a\\r\\nInjected: 1\"}'", '22023',
		qr/invalid extra headers: .*control character/ ],
	[ 'auth token with CR LF',
		lit($good_url) . ", 'EmailOpens', auth_token => E'tok\\r\\nInjected: 1'", '22023',
		qr/auth token/ ],
	[ 'malformed secret', lit($good_url) . ", 'EmailOpens', secret => 'not-a-secret'", '22023',
		qr/invalid webhook secret/ ],
	[ 'secret that is not base64', lit($good_url) . ", 'EmailOpens', secret => 'whsec_!!!notbase64!!!'", '22023',
		qr/invalid webhook secret/ ],
	# the order of checks: fields filled, event type, URL
	[ 'empty URL and unknown event type: the missing field first', "'', 'NoSuchEvent'", '22023',
		qr/target URL is required/ ],
	[ 'http URL and unknown event type: the event type first',
		"'http://example.com/', 'NoSuchEvent'", '22023', qr/unknown event type/ ],
);
$rcv->clear_log;
for my $b (@bad)
{
	my ($what, $args, $state, $msg) = @$b;
	my $e = psql_error($node, "SELECT * FROM webhooks.test_connection($args);");
	isnt($e->{rc}, 0, "$what: rejected");
	is($e->{sqlstate}, $state, "$what: SQLSTATE $state");
	like($e->{message} // '', $msg, "$what: message") or diag($e->{stderr});
}
is($rcv->count, 0, 'bad input: nothing was sent');

# a private address when webhooks.allow_private_targets is off
{
	my $strict = new_node('strict', conf => 'webhooks.allow_private_targets = off');
	is($strict->safe_psql('postgres', 'SHOW webhooks.allow_private_targets'), 'off',
		'second node: allow_private_targets is off');
	for my $url ('https://10.0.0.1/', $rcv->url('/ok/private'))
	{
		my $e = psql_error($strict,
			"SELECT * FROM webhooks.test_connection(" . lit($url) . ", 'EmailOpens');");
		isnt($e->{rc}, 0, "allow_private_targets off: $url rejected");
		is($e->{sqlstate}, '22023', "allow_private_targets off: $url: SQLSTATE 22023");
		like($e->{message} // '', qr/invalid target URL/, "allow_private_targets off: $url: message");
		like($e->{hint} // '', qr/webhooks\.allow_private_targets/,
			"allow_private_targets off: $url: the hint names allow_private_targets");
	}
	my $e = psql_error($strict,
		"SELECT * FROM webhooks.test_connection('https://169.254.169.254/', 'EmailOpens');");
	is($e->{sqlstate}, '22023', 'allow_private_targets off: metadata address rejected too');
	is($rcv->count, 0, 'allow_private_targets off: nothing was sent');
	$strict->stop;
}

$node->stop;
done_testing();
