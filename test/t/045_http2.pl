# HTTP/2: deliveries to a receiver that offers h2 by ALPN go over HTTP/2,
# multiplexed on few connections, signed like any other; webhooks.http2 =
# off (reloaded live) makes them HTTP/1.1; and a receiver that answers
# HTTP/2 requests before reading their body (RFC 9113 section 8.1, what
# nginx's "return 200" does) still gets every event: libcurl 7.88 loses such
# answers, so the attempt is logged and the webhook falls back to HTTP/1.1,
# in the worker and in the connection test of create_webhook().
#
# The receiver is test/h2receiver.py (python3-h2).

use strict;
use warnings;

use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $h2 = start_receiver(http2 => 1);
my $early = start_receiver(http2 => 1, early => 1);
my $node = new_node('http2', conf => "webhooks.retry_schedule = '100ms, 1s, 1s'");

# change a setting of the running node; tests that a new session sees it
sub set_conf
{
	my ($line, $show, $want) = @_;
	$node->append_conf('postgresql.conf', "$line\n");
	$node->reload;
	# the worker reloads on SIGHUP; a backend shows when the file was read
	poll("SELECT current_setting('$show') = '$want'",
		"reloaded: $line");
}

# emit $n events of $type (subscriber e-mails tagged $tag) and wait until
# webhook $name has $total delivered deliveries
sub emit_and_wait
{
	my ($type, $tag, $n, $name, $total, $what) = @_;
	sq( "SELECT webhooks.emit('$type', jsonb_build_object('messageId', g, 'subscriberId', g, "
		  . "'subscriberEmail', '$tag-' || g || '\@example.com')) FROM generate_series(1, $n) g");
	poll("SELECT count(*) = $total FROM webhooks.all_deliveries d JOIN webhooks.webhooks w "
		  . "ON w.id = d.webhook_id WHERE w.name = '$name' AND d.state = 'delivered'",
		$what);
}

# real deliveries (not connection tests) that $rcv received under $path
sub delivered_requests
{
	my ($rcv, $path) = @_;
	return grep {
		$_->{path} eq $path
		  && ($_->{headers}{'webhook-id'} // '') !~ /^msg_test_/
	} $rcv->requests;
}

# ---------------------------------------------------------------------
# 1. HTTP/2 by default
# ---------------------------------------------------------------------
sq("SELECT * FROM webhooks.create_webhook('h2', 'EmailOpens', '" . $h2->url('/h2') . "')");
my $secret = sq("SELECT secret FROM webhooks.webhooks WHERE name = 'h2'");
my @tests = grep { $_->{path} eq '/h2' } $h2->requests;
is(scalar(@tests), 1, 'create_webhook sent one connection test');
is($tests[0]{protocol}, 'HTTP/2', 'the connection test went over HTTP/2');

emit_and_wait('EmailOpens', 'h2', 200, 'h2', 200, '200 events delivered to the HTTP/2 receiver');
my @got = delivered_requests($h2, '/h2');
is(scalar(@got), 200, 'the receiver got 200 requests (no repeats)');
is(scalar(grep { $_->{protocol} eq 'HTTP/2' } @got), 200, 'all of them over HTTP/2');
is(scalar(grep { $_->{body_complete} } @got), 200, 'each with its whole body');
is(scalar(grep { verify_request($secret, $_) } @got), 200, 'each signed with the webhook secret');
my %conns = map { $_->{conn} => 1 } @got;
cmp_ok(scalar(keys %conns), '<=', 3,
	'multiplexed: 200 requests on at most 3 connections (got ' . scalar(keys %conns) . ')');
my %bodies = map { $_ => 1 } split /\n/,
  sq("SELECT body FROM webhooks.all_deliveries d JOIN webhooks.webhooks w ON w.id = d.webhook_id WHERE w.name = 'h2'");
is(scalar(grep { $bodies{ $_->{body} } } @got), 200, 'the bodies are the enqueued ones, byte for byte');
is(sq("SELECT count(*) FROM webhooks.webhook_logs"), '0', 'no failed attempt');

# ---------------------------------------------------------------------
# 2. webhooks.http2 = off, live
# ---------------------------------------------------------------------
set_conf("webhooks.http2 = off", 'webhooks.http2', 'off');
emit_and_wait('EmailOpens', 'h1', 20, 'h2', 220, '20 more delivered with webhooks.http2 = off');
my @h1 = grep { $_->{body} =~ /"h1-/ } delivered_requests($h2, '/h2');
is(scalar(@h1), 20, 'the receiver got the 20');
is(scalar(grep { $_->{protocol} eq 'HTTP/1.1' } @h1), 20, 'all of them over HTTP/1.1');
is(scalar(grep { verify_request($secret, $_) } @h1), 20, 'signed as well');
set_conf("webhooks.http2 = on", 'webhooks.http2', 'on');

# ---------------------------------------------------------------------
# 3. a receiver that answers HTTP/2 requests before their body
# ---------------------------------------------------------------------
# Connection tests: each opens a new connection, whose first request may
# leave before the client has seen the zero window (then its body arrives
# and it is answered normally); when the answer comes first and is lost, the
# test asks again over HTTP/1.1.  Either way it must succeed.
my $logpos = -s $node->logfile;
my $oks = sq(
	"SELECT count(*) FILTER (WHERE ok) FROM generate_series(1, 10) g, "
	  . "LATERAL webhooks.test_connection('" . $early->url('/early-test') . "', 'EmailClicks') t");
is($oks, '10', 'ten connection tests against the early-answering receiver all succeeded');
my @ct = grep { $_->{path} eq '/early-test' } $early->requests;
my $lost = grep { $_->{protocol} eq 'HTTP/2' && !$_->{body_complete} } @ct;
my $h1 = grep { $_->{protocol} eq 'HTTP/1.1' && $_->{body_complete} } @ct;
is($h1, $lost, "each HTTP/2 request answered before its body ($lost of 10) was asked again over HTTP/1.1");
note("connection tests answered before their body: $lost of 10");
sq("SELECT * FROM webhooks.create_webhook('early', 'EmailClicks', '" . $early->url('/early') . "')");

# The worker: one event first, so that its connection to the receiver has
# the zero window in force (the first streams of a connection may carry
# their body); then 50 at once, answered before their body.  libcurl then
# either still reads the 2xx (a success: RFC 9113 8.1) or loses it (a
# failed attempt, logged, and HTTP/1.1 from then on for this webhook).
emit_and_wait('EmailClicks', 'warm', 1, 'early', 1, 'a first event delivered to the early-answering receiver');
emit_and_wait('EmailClicks', 'early', 50, 'early', 51, 'then 50 more, all delivered');
my @e = delivered_requests($early, '/early');
my $cut = grep { $_->{protocol} eq 'HTTP/2' && !$_->{body_complete} } @e;
cmp_ok($cut, '>=', 1, "the receiver answered HTTP/2 requests before their body ($cut)");
my %seen = map { $_->{headers}{'webhook-id'} => 1 } @e;
my @ids = split /\n/, sq(
	"SELECT d.msg_id FROM webhooks.all_deliveries d JOIN webhooks.webhooks w ON w.id = d.webhook_id "
	  . "WHERE w.name = 'early'");
is(scalar(grep { $seen{$_} } @ids), 51, 'the receiver got every one of the 51 webhook-ids');
my $logs = sq(
	"SELECT count(*), count(*) FILTER (WHERE status IS NULL AND outcome = 'retry' "
	  . "AND error_content LIKE 'the receiver closed the HTTP/2 stream before the request body was sent%') "
	  . "FROM webhooks.webhook_logs l JOIN webhooks.webhooks w ON w.id = l.webhook_id WHERE w.name = 'early'");
my ($nlogs, $nearly) = split /\|/, $logs;
is($nearly, $nlogs, "every failed attempt ($nlogs) is a lost early answer, logged with no status and a retry");
cmp_ok($nlogs, '<=', $cut, 'no other attempt failed');
note("answered before the body: $cut; answers lost by libcurl: $nlogs; accepted as 2xx: " . ($cut - $nlogs));
is( sq( "SELECT count(*) FROM webhooks.all_deliveries d JOIN webhooks.webhooks w ON w.id = d.webhook_id "
		  . "WHERE w.name = 'early' AND d.attempts > 2"),
	'0', 'no delivery needed more than one retry');

$early->clear_log;
if ($nlogs > 0)
{
	ok( $node->wait_for_log(
			qr/webhook \d+ answers HTTP\/2 requests before their body is sent; using HTTP\/1\.1 for it/, $logpos),
		'the worker logged its fallback to HTTP/1.1');
	# after the fallback, new events go over HTTP/1.1 at once
	emit_and_wait('EmailClicks', 'later', 10, 'early', 61, '10 more delivered');
	my @later = delivered_requests($early, '/early');
	is(scalar(@later), 10, 'each sent once');
	is(scalar(grep { $_->{protocol} eq 'HTTP/1.1' && $_->{body_complete} } @later), 10,
		'over HTTP/1.1, whole');
}
else
{
	# every early answer was read: HTTP/2 goes on, each answer a success
	emit_and_wait('EmailClicks', 'later', 10, 'early', 61, '10 more delivered');
	my @later = delivered_requests($early, '/early');
	is(scalar(@later), 10, 'each sent once');
	is(scalar(grep { $_->{protocol} eq 'HTTP/2' } @later), 10, 'over HTTP/2');
}
is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE webhook_payload::text LIKE '%later-%'"),
	'0', 'with no failed attempt');

done_testing();
