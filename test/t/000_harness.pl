# Self-test of the test harness: WebhooksTest.pm's signing helpers against the
# Standard Webhooks test vectors, make_certs.sh, and receiver.py driven with
# curl.  Needs no PostgreSQL node and not the extension, so it passes before
# the extension exists.
#
# This file holds UTF-8 literals and deliberately has no "use utf8": they are
# byte strings, exactly the bytes sent on the wire.

use strict;
use warnings;

use FindBin;
use IO::Socket::INET;
use IPC::Run ();
use MIME::Base64 qw(encode_base64 decode_base64);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use Time::Local ();
use WebhooksTest;

BAIL_OUT('curl is required') unless grep { -x "$_/curl" } split /:/, $ENV{PATH};
BAIL_OUT('openssl is required')
  unless grep { -x "$_/openssl" } split /:/, $ENV{PATH};

########################################################################
# Signing helpers against the spec's test vectors
########################################################################

my @vectors = (
	[
		'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
		'msg_p5jXN8AQM9LWM0D4loKWxJek',
		'1614265330',
		'{"test": 2432232314}',
		'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
	],
	[
		'whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=',
		'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W',
		'1674087231',
		'{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}',
		'v1,4PMU5Dl90B4kgwxDpwuMZ/cnZ5ztf+Y+kviYQD66rJg='
	],
	[
		'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
		'evt_01HX0000000000000000000000',
		'1714564800',
		'{"type":"email.opened","timestamp":"2024-05-01T12:00:00Z","data":{"email_id":42,"subscriber":"zoë@example.com"}}',
		'v1,IobhglMbiQ4Lf65x0URpuU1wojndzKe1wrv/weqgdJU='
	],);

for my $i (0 .. $#vectors)
{
	my ($secret, $id, $ts, $body, $sig) = @{ $vectors[$i] };
	my $n = $i + 1;
	is(sign($secret, $id, $ts, $body), $sig, "sign: vector $n");
	ok(verify_signature($secret, $id, $ts, $body, $sig),
		"verify_signature: vector $n");
	ok(!verify_signature($secret, $id, $ts, $body . ' ', $sig),
		"verify_signature: vector $n, body changed");
	ok(!verify_signature($secret, $id, $ts + 1, $body, $sig),
		"verify_signature: vector $n, timestamp changed");
	ok(!verify_signature($secret, "${id}x", $ts, $body, $sig),
		"verify_signature: vector $n, id changed");
}

{
	my ($secret, $id, $ts, $body, $sig) = @{ $vectors[0] };
	my $other = $vectors[1][0];
	ok(!verify_signature($other, $id, $ts, $body, $sig),
		'verify_signature: wrong secret');
	ok( verify_signature(
			$secret, $id, $ts, $body, "v1,bm90IGl0 $sig v1,YWxzbyBub3Q="),
		'verify_signature: any of several entries may match');
	(my $v2 = $sig) =~ s/^v1,/v2,/;
	ok(!verify_signature($secret, $id, $ts, $body, $v2),
		'verify_signature: only v1 entries count');
	ok(!verify_signature($secret, $id, $ts, $body, ''),
		'verify_signature: empty header');
	ok(!verify_signature($secret, $id, $ts, $body, undef),
		'verify_signature: missing header');
	ok(verify_signature([ $other, $secret ], $id, $ts, $body, $sig),
		'verify_signature: any of several secrets');

	my $rot = sign([ $secret, $other ], $id, $ts, $body);
	like($rot, qr/^\Q$sig\E v1,[A-Za-z0-9+\/]{43}=$/,
		'sign: a rotation gives one entry per secret, space-separated');
	ok(verify_signature($other, $id, $ts, $body, $rot),
		'verify_signature: the rotation header verifies with the old secret');

	# a character string (e.g. from decode_json) is signed as its UTF-8 bytes
	my ($s3, $id3, $ts3, $b3, $sig3) = @{ $vectors[2] };
	my $chars = $b3;
	utf8::decode($chars);
	isnt(length($chars), length($b3), 'vector 3 has a non-ASCII character');
	is(sign($s3, $id3, $ts3, $chars), $sig3,
		'sign: character strings are signed as UTF-8');

	# independent oracle: the openssl CLI
	my $hexkey =
	  unpack('H*', decode_base64(substr($secret, length('whsec_'))));
	my ($mac, $err) = ('', '');
	IPC::Run::run(
		[
			'openssl', 'dgst', '-sha256', '-mac', 'HMAC', '-macopt',
			"hexkey:$hexkey", '-binary'
		],
		'<',
		\"$id.$ts.$body",
		'>',
		\$mac,
		'2>',
		\$err) or diag("openssl dgst: $err");
	is('v1,' . encode_base64($mac, ''), $sig, 'openssl CLI agrees with sign()');
}

########################################################################
# make_certs.sh
########################################################################

my $certs = certs_dir();
ok(-d $certs, "certs_dir: $certs");
for my $f (
	qw(ca.crt ca.key server.crt server.key expired.crt expired.key
	wronghost.crt wronghost.key selfsigned.crt selfsigned.key))
{
	ok(-r "$certs/$f", "certs_dir has $f");
}
is(certs_dir(), $certs, 'certs_dir: same directory on a second call');
{
	my $ca = slurp_file("$certs/ca.crt");
	system_or_bail('bash', "$FindBin::Bin/../make_certs.sh", $certs);
	is(slurp_file("$certs/ca.crt"), $ca, 'make_certs.sh is idempotent');
}

########################################################################
# receiver.py, driven with curl
########################################################################

# Run curl; returns { exit, code, headers => {lc name => value}, body, err }
# for the last response.  -i puts the response head into the output.
sub curl
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'curl', '-q', '-sS', '-i', '--noproxy', '*',
			'--cacert', "$certs/ca.crt", @args
		],
		'<', \undef, '>', \$out, '2>', \$err);
	my %r = (exit => $? >> 8, err => $err, out => $out);
	# the last response in the output
	if ($out =~ /.*(?:^|\n)(HTTP\/[\d.]+ (\d{3})[^\n]*\r\n(.*?)\r\n\r\n)(.*)\z/s)
	{
		$r{code} = $2;
		my $h = $3;
		$r{body} = $4;
		for my $line (split /\r\n/, $h)
		{
			$r{headers}{ lc $1 } = $2 if $line =~ /^([^:]+):\s*(.*)$/;
		}
	}
	return \%r;
}

my %rcv;
for my $kind (qw(server expired wronghost selfsigned))
{
	$rcv{$kind} = start_receiver(cert => $kind);
	like($rcv{$kind}->port, qr/^\d+$/, "receiver with the $kind cert started");
	isnt($rcv{$kind}->port, 0, "$kind receiver: port is not 0");
}

my $srv = $rcv{server};
is($srv->url('/ok'), 'https://127.0.0.1:' . $srv->port . '/ok', 'url()');

{
	my $r = curl($srv->url('/ok'));
	is($r->{exit}, 0, 'curl --cacert ca.crt trusts the server cert')
	  or diag($r->{err});
	is($r->{code}, '200',  '/ok: 200');
	is($r->{body}, 'ok',   '/ok: body');
	my $reqs = $srv->wait_for_requests(1, 10);
	is(scalar(@$reqs),       1,     '/ok is logged');
	is($reqs->[0]{method},   'GET', 'logged method');
	is($reqs->[0]{path},     '/ok', 'logged path');
	is($reqs->[0]{status},   200,   'logged status');
	is($reqs->[0]{body},     '',    'logged body');
	ok(!defined $reqs->[0]{sig_ok}, 'sig_ok is null without a secret');
	like($reqs->[0]{headers}{'user-agent'}, qr/^curl/, 'headers are lower-cased');
	ok($reqs->[0]{t} > time() - 60 && $reqs->[0]{t} <= time() + 1,
		'logged time is now');
}

my %bad = (
	expired    => qr/expired/i,
	wronghost  => qr/subject name|does not match|alternative/i,
	selfsigned => qr/self.signed/i);
for my $kind (sort keys %bad)
{
	my $r = curl($rcv{$kind}->url('/ok'));
	is($r->{exit}, 60, "$kind cert: curl --cacert ca.crt fails verification (60)");
	like($r->{err}, $bad{$kind}, "$kind cert: for the expected reason")
	  or diag($r->{err});
	$r = curl('-k', $rcv{$kind}->url('/ok'));
	is($r->{code}, '200', "$kind cert: the server itself answers (curl -k)");
	my @reqs = $rcv{$kind}->wait_for_requests(1, 10);
	is(scalar(@reqs), 1, "$kind cert: only the -k request was logged");
	$rcv{$kind}->stop;
}

# status codes and bodies
{
	$srv->clear_log;
	is(scalar(@{ $srv->requests }), 0, 'clear_log empties the log');

	my $r = curl($srv->url('/status/500'));
	is($r->{exit}, 0, '/status/500: curl exit 0');
	is($r->{code}, '500',            '/status/500: status');
	is($r->{body}, 'error body 500', '/status/500: body');

	$r = curl($srv->url('/status/302'));
	is($r->{code}, '302', '/status/302: status');
	is($r->{headers}{location}, '/ok', '/status/302: Location');

	$r = curl($srv->url('/status/204'));
	is($r->{code}, '204', '/status/204: status');
	is($r->{body}, '',    '/status/204: no body');

	$r = curl($srv->url('/retry-after/7'));
	is($r->{code}, '429', '/retry-after/7: 429');
	is($r->{headers}{'retry-after'}, '7', '/retry-after/7: Retry-After');
	is($r->{body}, 'slow down', '/retry-after/7: body');

	$r = curl($srv->url('/unavailable-date/120'));
	is($r->{code}, '503', '/unavailable-date/120: 503');
	my %mon;
	@mon{qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)} = (0 .. 11);
	my $ra = $r->{headers}{'retry-after'} // '';
	if ($ra =~ /^\w{3}, (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/)
	{
		my $when = Time::Local::timegm($6, $5, $4, $1, $mon{$2}, $3);
		ok($when > time() + 100 && $when < time() + 140,
			'/unavailable-date/120: Retry-After is an HTTP-date 2 minutes ahead');
	}
	else
	{
		fail("/unavailable-date/120: Retry-After is an HTTP-date: '$ra'");
	}

	$r = curl($srv->url('/gone'));
	is($r->{code}, '410', '/gone: 410');
	is($r->{body}, 'gone', '/gone: body');

	$r = curl($srv->url('/redirect'));
	is($r->{code}, '302', '/redirect: 302');
	is($r->{headers}{location}, $srv->url('/ok'), '/redirect: Location');

	$r = curl($srv->url('/anything/else?x=1'));
	is($r->{code}, '200', 'unmatched path: 200');
	is($r->{body}, 'ok',  'unmatched path: ok');

	$r = curl($srv->url('/ok/deeper?with=query'));
	is($r->{code}, '200', '/ok with more segments and a query: 200');

	$r = curl($srv->url('/big/1000000'));
	is($r->{code}, '200', '/big: 200');
	is(length($r->{body}), 1000000, '/big: 1000000 bytes');

	$r = curl($srv->url('/status/abc'));
	is($r->{code}, '400', 'malformed number: 400');

	my @codes = map { curl($srv->url('/flaky/2/k1'))->{code} } 1 .. 4;
	is_deeply(\@codes, [qw(500 500 200 200)],
		'/flaky/2/k1: two failures, then success');
	$r = curl($srv->url('/flaky/1/k2'));
	is($r->{code}, '500', '/flaky: counters are per key');
	is($r->{body}, 'flaky failure', '/flaky: failure body');

	my $n = 16;
	my $reqs = $srv->wait_for_requests($n, 10);
	is(scalar(@$reqs), $n, "all $n requests logged");
	is($reqs->[-1]{path}, '/flaky/1/k2', 'in order');
	my @q = grep { $_->{path} eq '/anything/else?x=1' } @$reqs;
	is(scalar(@q), 1, 'the path is logged with its query string');
	my @flaky = $srv->wait_for_requests(5, 10, '/flaky/');
	is(scalar(@flaky), 5, 'wait_for_requests with a path prefix (list context)');
	my $st = $srv->wait_for_requests(2, 0.5, qr{^/status/30});
	is(scalar(@$st), 1,
		'wait_for_requests with a regexp (times out, returns fewer)');
	is($srv->count(sub { $_[0]{status} == 500 }), 4, 'count with a code ref');
	is($srv->count, $n, 'count');
}

# keep-alive: two URLs in one curl run share the connection
{
	$srv->clear_log;
	my $r = curl($srv->url('/ok?a'), $srv->url('/status/500?b'));
	is($r->{exit}, 0, 'two requests in one curl run');
	my $reqs = $srv->wait_for_requests(2, 10);
	is($reqs->[0]{conn}, $reqs->[1]{conn}, 'keep-alive: same connection');
	is_deeply([ map { $_->{n_on_conn} } @$reqs ], [ 1, 2 ],
		'keep-alive: n_on_conn counts requests on the connection');
}

# /slow does not block other requests; /slow and /stall log before sleeping
{
	$srv->clear_log;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'curl', '-q', '-sS', '--noproxy', '*', '--cacert', "$certs/ca.crt",
			$srv->url('/slow/3000')
		],
		'<', \undef, '>', \$out, '2>', \$err);
	my $reqs = $srv->wait_for_requests(1, 10, '/slow/');
	is(scalar(@$reqs), 1, '/slow is logged before it sleeps');
	my $r = curl($srv->url('/ok'));
	is($r->{code}, '200', 'another request is served meanwhile');
	ok($h->pumpable, '... while /slow is still sleeping');
	$h->finish;
	is($out, 'ok', '/slow: ok after the delay');
	ok(Time::HiRes::time() - $reqs->[0]{t} >= 2.9, '/slow: took 3 s');

	$r = curl('--max-time', '1', $srv->url('/stall/3'));
	is($r->{exit}, 28, '/stall/3 with a 1 s client timeout: curl times out');
	is(scalar(@{ $srv->wait_for_requests(1, 10, '/stall/') }), 1,
		'/stall: the request was logged anyway');

	$r = curl('--max-time', '1', $srv->url('/trickle/5'));
	is($r->{exit}, 28, '/trickle/5 with a 1 s client timeout: curl times out');
	is(scalar(@{ $srv->wait_for_requests(1, 10, '/trickle/') }), 1,
		'/trickle: the request was logged');

	my $t0 = Time::HiRes::time();
	$r = curl($srv->url('/trickle/2'));
	is($r->{body}, '..', '/trickle/2: two bytes');
	ok(Time::HiRes::time() - $t0 >= 1.9, '/trickle/2: one byte per second');
}

# sig_ok
{
	my ($secret, $id, undef, undef, undef) = @{ $vectors[0] };
	my $other = $vectors[1][0];
	my $sr    = start_receiver(secret => $secret);

	my $body = '{"hello":"world"}';
	my $ts   = time();
	my @h    = (
		'-H', 'content-type: application/json',
		'-H', "webhook-id: $id",
		'-H', "webhook-timestamp: $ts");
	my $r = curl(@h, '-H', 'webhook-signature: ' . sign($secret, $id, $ts, $body),
		'--data-binary', $body, $sr->url('/hook'));
	is($r->{code}, '200', 'signed POST: 200');
	$r = curl(@h, '-H', 'webhook-signature: ' . sign($other, $id, $ts, $body),
		'--data-binary', $body, $sr->url('/hook'));
	$r = curl(@h, '-H', 'webhook-signature: ' . sign($secret, $id, $ts, $body),
		'--data-binary', $body, '-H', 'Transfer-Encoding: chunked',
		$sr->url('/chunked'));
	$r = curl('--data-binary', $body, $sr->url('/unsigned'));

	my ($s3, $id3, $ts3, $b3, $sig3) = @{ $vectors[2] };
	$r = curl(
		'-H', "webhook-id: $id3", '-H', "webhook-timestamp: $ts3",
		'-H', "webhook-signature: v1,Zm9v $sig3",
		'--data-binary', $b3, $sr->url('/vector3'));

	my $reqs = $sr->wait_for_requests(5, 10);
	is(scalar(@$reqs), 5, 'five signed/unsigned requests logged');
	my ($good, $bad, $chunked, $unsigned, $v3) = @$reqs;
	ok($good->{sig_ok}, 'sig_ok: true for a correct signature');
	ok($good->{ts_ok},  'ts_ok: true for a current timestamp');
	is_deeply([ map { 0 + $_ } @{ $good->{sig_ok_by_secret} } ], [1],
		'sig_ok_by_secret');
	is($good->{method}, 'POST', 'logged method POST');
	is($good->{body}, $body, 'logged body is exact');
	is($good->{headers}{'content-type'}, 'application/json',
		'logged content-type');
	ok(verify_request($secret, $good), 'verify_request agrees');
	ok(defined $bad->{sig_ok} && !$bad->{sig_ok},
		'sig_ok: false for a signature by another secret');
	ok(!verify_request($secret, $bad), 'verify_request agrees');
	ok($chunked->{sig_ok}, 'sig_ok: chunked request body');
	is($chunked->{body}, $body, 'chunked request body is logged exactly');
	ok(defined $unsigned->{sig_ok} && !$unsigned->{sig_ok},
		'sig_ok: false without signature headers');
	ok(!defined $unsigned->{ts_ok}, 'ts_ok: null without the header');
	ok($v3->{sig_ok}, 'sig_ok: spec vector 3 (UTF-8 body, two entries)');
	ok(defined $v3->{ts_ok} && !$v3->{ts_ok},
		'ts_ok: false for a 2024 timestamp');
	is($v3->{body}, $b3, 'UTF-8 body is logged as its exact bytes');
	ok(verify_request($s3, $v3), 'verify_request: vector 3 from the log');
	is($v3->{body_len}, length($b3), 'body_len');

	# the secret can change while the receiver runs
	$sr->clear_log;
	$sr->set_secret($other, $secret);
	$ts = time();
	curl(
		'-H', "webhook-id: $id", '-H', "webhook-timestamp: $ts",
		'-H', 'webhook-signature: ' . sign($secret, $id, $ts, $body),
		'--data-binary', $body, $sr->url('/rotated'));
	$sr->set_secret();
	curl('--data-binary', $body, $sr->url('/nosecret'));
	# and secrets can be added one by one
	$sr->add_secret($other);
	$sr->add_secret($secret);
	curl(
		'-H', "webhook-id: $id", '-H', "webhook-timestamp: $ts",
		'-H', 'webhook-signature: ' . sign($secret, $id, $ts, $body),
		'--data-binary', $body, $sr->url('/added'));
	$reqs = $sr->wait_for_requests(3, 10);
	ok($reqs->[0]{sig_ok}, 'set_secret: verified with the new secrets');
	is_deeply([ map { 0 + $_ } @{ $reqs->[0]{sig_ok_by_secret} } ],
		[ 0, 1 ], 'set_secret: sig_ok_by_secret per secret');
	ok(!defined $reqs->[1]{sig_ok}, 'set_secret(): sig_ok null again');
	is_deeply([ map { 0 + $_ } @{ $reqs->[2]{sig_ok_by_secret} // [] } ],
		[ 0, 1 ], 'add_secret: the secrets added, in order');

	# a client that connects and never starts TLS does not block others
	my $idle = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $sr->port,
		Proto    => 'tcp')
	  or die "connect: $!";
	$r = curl('--max-time', '10', $sr->url('/ok'));
	is($r->{code}, '200', 'served while another connection stalls before TLS');
	close $idle;

	# stop does not wait for requests in progress
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'curl', '-q', '-sS', '--noproxy', '*', '--cacert', "$certs/ca.crt",
			$sr->url('/stall/60')
		],
		'<', \undef, '>', \$out, '2>', \$err);
	is(scalar(@{ $sr->wait_for_requests(1, 10, '/stall/') }), 1,
		'a /stall/60 request is in progress');

	my $port = $sr->port;
	my $t0   = Time::HiRes::time();
	is($sr->stop, 0, 'stop: the receiver exits cleanly on SIGTERM');
	ok(Time::HiRes::time() - $t0 < 5, 'stop: without waiting for /stall');
	$h->finish;
	isnt($? >> 8, 0, 'stop: the stalled client sees the connection end');
	is($sr->stop, undef, 'stop: a second stop is a no-op');
	$r = curl('--max-time', '5', "https://127.0.0.1:$port/ok");
	is($r->{exit}, 7, 'stop: nothing listens on the port any more');
	is(scalar(@{ $sr->requests }), 5, 'the log is still readable after stop');
}

# objects that go away stop their receiver
{
	my $pid;
	{
		my $tmp = start_receiver();
		$pid = $tmp->pid;
		ok(kill(0, $pid), 'receiver process is running');
	}
	ok(!kill(0, $pid), 'DESTROY stopped the receiver');
}

done_testing();
