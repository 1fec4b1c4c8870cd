# The wizard and the life cycle of a webhook against the real HTTPS
# receiver: create_webhook (success, failure, the specification's order of
# checks), one active webhook per event type, the edit rule (inactive
# webhooks only, also for direct DML), activate_webhook re-running the
# connection test, delete_webhook with held deliveries, rotate_secret
# (two signatures during the grace period) and two sessions racing to
# create a webhook for the same event type.
#
# The node starts with webhooks.enabled = off so that emitted events stay
# queued (deterministically) until the worker is switched on for the
# rotation test.  Secrets are never printed: they are compared with ok().

use strict;
use warnings;

use IO::Socket::INET;
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $node = new_node('wizard', conf => 'webhooks.enabled = off');
my $rcv  = start_receiver();

# the receiver's URL for a path, as an SQL literal
sub url { return lit($rcv->url(@_)) }

# assert that $sql fails with $state and a message matching $msg
sub fails_with
{
	my ($sql, $state, $msg, $what) = @_;
	my $e = psql_error($node, $sql);
	isnt($e->{rc}, 0, "$what: fails");
	is($e->{sqlstate}, $state, "$what: SQLSTATE $state") or diag(redact($e->{stderr}));
	like($e->{message} // '', $msg, "$what: message") if defined $msg;
	return $e;
}

# the v1 entries of a signature header
sub sig_entries
{
	my ($req) = @_;
	return grep { /^v1,/ } split / /, ($req->{headers}{'webhook-signature'} // '');
}

# psql in the background, reading its script from a file (IPC::Run feeds a
# scalar only while pumped)
my $script_no = 0;
sub start_psql
{
	my ($sql, $appname) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . '/script' . ++$script_no . '.sql';
	open my $fh, '>', $file or die "$file: $!";
	print $fh "\\set VERBOSITY verbose\n$sql\n";
	close $fh;
	my %s = (out => '', err => '');
	$s{h} = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d',
			$node->connstr('postgres') . " application_name=$appname",
			'-f', $file
		],
		'<', \undef, '>', \$s{out}, '2>', \$s{err},
		IPC::Run::timeout(60));
	return \%s;
}

# wait for a background psql; its exit code, output, SQLSTATE and message
sub finish_psql
{
	my ($s) = @_;
	eval { $s->{h}->finish; };
	if ($@)
	{
		fail("background psql did not finish: $@");
		$s->{h}->kill_kill;
	}
	$s->{rc} = $s->{h}->result(0) // -1;
	if ($s->{err} =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/)
	{
		$s->{sqlstate} = $1;
		$s->{message}  = $2;
	}
	return $s;
}

########################################################################
# success
########################################################################
{
	$rcv->clear_log;
	my $r = sq("SELECT is_active FROM webhooks.create_webhook('opens', 'EmailOpens', "
		  . url('/ok/opens') . ')');
	is($r, 't', 'create_webhook returns the webhook, active');
	is( sq(
			"SELECT is_active, event_type, target_url, auth_token IS NULL, headers = '{}' "
			  . "FROM webhooks.webhooks WHERE name = 'opens'"),
		"t|EmailOpens|" . $rcv->url('/ok/opens') . "|t|t",
		'the webhook is stored active with its fields');
	my $secret = secret_of('opens');
	ok($secret =~ /^whsec_[A-Za-z0-9+\/]{32,}={0,2}$/, 'a whsec_ secret is stored');

	my $reqs = $rcv->wait_for_requests(1, 10);
	is(scalar(@$reqs), 1, 'the receiver got one connection-test request');
	my $req = $reqs->[0] // { headers => {} };
	is($req->{path}, '/ok/opens', 'at the target URL');
	is($req->{method}, 'POST', 'a POST');
	ok(verify_request($secret, $req), 'the test request verifies with the stored secret');
	my $other = sq('SELECT webhooks.generate_secret()');
	ok(!verify_request($other, $req), 'and not with another secret');
	my $p = eval { JSON::PP::decode_json($req->{body}) } // {};
	is($p->{eventType}, 'EmailOpens', 'the test payload is of the event type');
	is($p->{messageId}, 149211, "with the specification's example values");

	# auth token and extra headers are stored and sent
	$rcv->clear_log;
	is( sq("SELECT is_active FROM webhooks.create_webhook('clicks', 'EmailClicks', "
			  . url('/ok/clicks') . ", auth_token => 'tok123', headers => '{\"X-Source\":\"crm\"}')"),
		't', 'create_webhook with auth_token and headers');
	($req) = $rcv->wait_for_requests(1, 10);
	$req //= { headers => {} };
	is($req->{headers}{authorization}, 'Bearer tok123', 'the test request carries the auth token');
	is($req->{headers}{'x-source'}, 'crm', 'and the extra header');
	ok(verify_request(secret_of('clicks'), $req), 'and verifies with its stored secret');
	is(sq("SELECT auth_token, headers->>'X-Source' FROM webhooks.webhooks WHERE name = 'clicks'"),
		'tok123|crm', 'auth token and headers are stored');
}

########################################################################
# failure: WH001 with what a log row would say, nothing stored
########################################################################
{
	$rcv->clear_log;
	my $e = fails_with(
		"SELECT webhooks.create_webhook('sends', 'EmailSends', " . url('/status/500') . ')',
		'WH001', qr/connection test for webhook "sends" failed/, 'target answers 500');
	my ($req) = $rcv->wait_for_requests(1, 10, '/status/500');
	$req //= { body => "\0no request\0" };
	my $detail = $e->{detail} // '';
	like($detail, qr/status: 500/, 'DETAIL carries the status 500');
	like($detail, qr/error body 500/, 'DETAIL carries the error content');
	ok(index($detail, $req->{body}) >= 0, 'DETAIL carries the payload that was sent')
	  or diag("detail: $detail\nsent: $req->{body}");
	like($detail, qr/"eventType"\s*:\s*"EmailSends"/, 'the payload is of the event type');
	is(sq("SELECT count(*) FROM webhooks.webhooks WHERE name = 'sends' OR event_type = 'EmailSends'"),
		'0', 'nothing is stored');

	# no response at all: status none, the transport error
	my $sock = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0)
	  or die "bind: $!";
	my $port = $sock->sockport;
	close $sock;
	$e = fails_with(
		"SELECT webhooks.create_webhook('sends', 'EmailSends', 'https://127.0.0.1:$port/ok')",
		'WH001', qr/connection test for webhook "sends" failed/, 'connection refused');
	like($e->{detail} // '', qr/status: none/, 'refused: DETAIL says no status');
	like($e->{detail} // '', qr/connect/i, 'refused: DETAIL carries the transport error');
	is(sq("SELECT count(*) FROM webhooks.webhooks"), '2', 'refused: nothing is stored');
}

########################################################################
# the specification's order of checks: fields filled, event type known,
# URL valid, name free, no other active webhook, connection test
########################################################################
{
	$rcv->clear_log;
	my $bad500 = url('/status/500');
	my @cases = (
		[ "NULL, 'Nope', 'http://example.com/'", '22004', qr/webhook name is required/,
			'NULL name, unknown type, http URL: the name' ],
		[ "'', 'Nope', 'http://example.com/'", '22023', qr/webhook name is required/,
			'empty name, unknown type, http URL: the name' ],
		[ "'n1', NULL, 'http://example.com/'", '22004', qr/event type is required/,
			'NULL event type, http URL: the event type' ],
		[ "'n1', 'Nope', NULL", '22004', qr/target URL is required/,
			'unknown type, NULL URL: the missing URL (fields first)' ],
		[ "'n1', 'Nope', ''", '22023', qr/target URL is required/,
			'unknown type, empty URL: the missing URL (fields first)' ],
		[ "'opens', 'Nope', 'http://example.com/'", '22023', qr/unknown event type "Nope"/,
			'unknown type, http URL, taken name: the event type' ],
		[ "'opens', 'EmailOpens', 'http://example.com/'", '22023', qr/invalid target URL/,
			'http URL, taken name, type taken: the URL' ],
		[ "'opens', 'EmailOpens', 'https://169.254.169.254/'", '22023', qr/invalid target URL/,
			'metadata URL, taken name: the URL' ],
		[ "'opens', 'EmailOpens', $bad500", '23505', qr/webhook "opens" already exists/,
			'taken name, type taken, failing target: the name' ],
		[ "'opens', 'EmailBounces', $bad500", '23505', qr/webhook "opens" already exists/,
			'taken name, failing target: the name' ],
		[ "'opens2', 'EmailOpens', $bad500", '23505',
			qr/webhook "opens" is already active for event type EmailOpens/,
			'type taken, failing target: the active webhook, by name' ],
	);
	for my $c (@cases)
	{
		my ($args, $state, $msg, $what) = @$c;
		fails_with("SELECT webhooks.create_webhook($args)", $state, $msg, $what);
	}
	is($rcv->count, 0, 'no connection test ran for any of them');
	is(sq('SELECT count(*) FROM webhooks.webhooks'), '2', 'nothing was stored');

	# only the connection test left: WH001
	fails_with("SELECT webhooks.create_webhook('bounces', 'EmailBounces', $bad500)",
		'WH001', undef, 'only the target failing: the connection test');
	is($rcv->count, 1, 'this time the connection test ran');
}

########################################################################
# one active webhook per event type
########################################################################
{
	$rcv->clear_log;
	my $e = fails_with(
		"SELECT webhooks.create_webhook('opens2', 'EmailOpens', " . url('/ok/opens2') . ')',
		'23505', qr/webhook "opens" is already active for event type EmailOpens/,
		'second create for the same type');
	like($e->{hint} // '', qr/"opens"/, 'the hint names the active webhook too');
	is($rcv->count, 0, 'its connection test did not run');

	is(sq("SELECT is_active FROM webhooks.deactivate_webhook('opens')"), 'f',
		'deactivate_webhook');
	is(sq("SELECT is_active, deactivated_reason IS NOT NULL FROM webhooks.webhooks WHERE name = 'opens'"),
		'f|t', 'stored inactive, with a reason');

	is(sq("SELECT is_active FROM webhooks.create_webhook('opens2', 'EmailOpens', "
			  . url('/ok/opens2') . ')'),
		't', 'after deactivation the second create succeeds');
	is($rcv->count('/ok/opens2'), 1, 'its connection test ran');

	$rcv->clear_log;
	fails_with("SELECT webhooks.activate_webhook('opens')", '23505',
		qr/webhook "opens2" is already active for event type EmailOpens/,
		'activating the first one again');
	is(sq("SELECT is_active FROM webhooks.webhooks WHERE name = 'opens'"), 'f',
		'it stays inactive');
	is($rcv->count, 0, 'no connection test ran');
}

########################################################################
# the edit rule
########################################################################
{
	my $before = sq("SELECT target_url FROM webhooks.webhooks WHERE name = 'opens2'");
	fails_with("SELECT webhooks.update_webhook('opens2', target_url => " . url('/ok/edited') . ')',
		'55000', qr/active and cannot be edited/, 'update_webhook on an active webhook');
	fails_with("UPDATE webhooks.webhooks SET target_url = " . url('/ok/edited') . " WHERE name = 'opens2'",
		'55000', qr/active and cannot be edited/, 'direct UPDATE of target_url on an active webhook');
	fails_with("UPDATE webhooks.webhooks SET name = 'renamed' WHERE name = 'opens2'",
		'55000', qr/active and cannot be edited/, 'direct UPDATE of name on an active webhook');
	fails_with("UPDATE webhooks.webhooks SET auth_token = 'x' WHERE name = 'opens2'",
		'55000', qr/active and cannot be edited/, 'direct UPDATE of auth_token on an active webhook');
	is(sq("SELECT target_url FROM webhooks.webhooks WHERE name = 'opens2'"), $before,
		'the active webhook is unchanged');

	sq("SELECT webhooks.deactivate_webhook('opens2')");
	is( sq("SELECT target_url FROM webhooks.update_webhook('opens', target_url => "
			  . url('/status/500') . ')'),
		$rcv->url('/status/500'), 'update_webhook on an inactive webhook works');
	is(sq("SELECT target_url FROM webhooks.webhooks WHERE name = 'opens'"),
		$rcv->url('/status/500'), 'and is stored');

	$rcv->clear_log;
	my $e = fails_with("SELECT webhooks.activate_webhook('opens')", 'WH001',
		qr/connection test for webhook "opens" failed/, 'activation re-runs the connection test');
	like($e->{detail} // '', qr/status: 500/, 'activation failure: DETAIL carries the status');
	is($rcv->count('/status/500'), 1, 'the receiver got the test request');
	is(sq("SELECT is_active FROM webhooks.webhooks WHERE name = 'opens'"), 'f',
		'a failed activation leaves it inactive');

	is( $node->psql('postgres',
			"UPDATE webhooks.webhooks SET target_url = " . url('/ok/back') . " WHERE name = 'opens'"),
		0, 'direct UPDATE of an inactive webhook works');
	$rcv->clear_log;
	is(sq("SELECT is_active FROM webhooks.activate_webhook('opens')"), 't',
		'activation with a working target succeeds');
	is(sq("SELECT is_active FROM webhooks.webhooks WHERE name = 'opens'"), 't', 'stored active');
	my ($req) = $rcv->wait_for_requests(1, 10);
	is($req->{path} // '', '/ok/back', 'the receiver got the test request at the new URL');
	ok(verify_request(secret_of('opens'), $req), 'signed with the stored secret');
}

########################################################################
# delete_webhook (the worker is off: emitted events stay queued)
########################################################################
{
	is(sq("SELECT count(*) FROM webhooks.all_deliveries d JOIN webhooks.webhooks w ON w.id = d.webhook_id WHERE w.name = 'opens2'"),
		'0', 'opens2 has no deliveries');
	is($node->psql('postgres', "SELECT webhooks.delete_webhook('opens2')"), 0,
		'delete_webhook on an inactive webhook without deliveries');
	is(sq("SELECT count(*) FROM webhooks.webhooks WHERE name = 'opens2'"), '0', 'it is gone');

	my $id = sq("SELECT id FROM webhooks.webhooks WHERE name = 'opens'");
	$rcv->clear_log;
	my $delivery = sq(
		q{SELECT webhooks.emit('EmailOpens', '{"messageId":1,"subscriberId":2,"subscriberEmail":"a@b.c"}')});
	like($delivery, qr/^\d+$/, 'emit queues a delivery for the active webhook');
	my $body = sq("SELECT body FROM webhooks.all_deliveries WHERE id = $delivery");
	is(sq("SELECT state FROM webhooks.all_deliveries WHERE id = $delivery"), 'pending',
		'the delivery is pending (worker off)');
	sq("SELECT webhooks.deactivate_webhook('opens')");
	is(sq("SELECT state FROM webhooks.all_deliveries WHERE id = $delivery"), 'held',
		'deactivation holds it');

	fails_with("SELECT webhooks.delete_webhook('opens')", '55006',
		qr/undelivered/, 'delete_webhook while a delivery is held');
	is(sq("SELECT count(*) FROM webhooks.webhooks WHERE name = 'opens'"), '1',
		'the webhook is still there');
	is(sq("SELECT state FROM webhooks.all_deliveries WHERE id = $delivery"), 'held',
		'the delivery is still held');
	fails_with("DELETE FROM webhooks.webhooks WHERE name = 'opens'", '55006',
		qr/undelivered/, 'direct DELETE while a delivery is held');

	is($node->psql('postgres', "SELECT webhooks.delete_webhook('opens', discard_pending => true)"),
		0, 'delete_webhook with discard_pending => true');
	is(sq("SELECT count(*) FROM webhooks.webhooks WHERE name = 'opens'"), '0', 'the webhook is gone');
	is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE id = $delivery"), '0',
		'the delivery is gone');
	is( sq(
			"SELECT count(*), min(webhook_name), min(outcome), bool_and(webhook_payload::text = "
			  . lit($body) . ") FROM webhooks.webhook_logs WHERE webhook_id = $id AND delivery_id = $delivery"),
		'1|opens|discarded|t',
		'one log row, outcome discarded, with the webhook name and the payload');
	is($rcv->count, 0, 'nothing was sent');
}

########################################################################
# rotate_secret: two signatures during the grace period
########################################################################
{
	$rcv->clear_log;
	is(sq("SELECT is_active FROM webhooks.create_webhook('rot', 'EmailBounces', " . url('/ok/rot') . ')'),
		't', 'create a webhook to rotate');
	my $old = secret_of('rot');

	my $new = sq("SELECT webhooks.rotate_secret('rot')");
	ok($new =~ /^whsec_[A-Za-z0-9+\/]{32,}={0,2}$/, 'rotate_secret returns a whsec_ secret');
	ok($new ne $old, 'a new one');
	ok(secret_of('rot') eq $new, 'stored as the secret');
	ok(sq("SELECT previous_secret FROM webhooks.webhooks WHERE name = 'rot'") eq $old,
		'the old one is kept as previous_secret');
	is(sq("SELECT previous_secret_expires_at > now() FROM webhooks.webhooks WHERE name = 'rot'"),
		't', 'for a grace period');

	# switch the worker on
	sq("ALTER SYSTEM SET webhooks.enabled = on; SELECT pg_reload_conf();");
	poll("SELECT current_setting('webhooks.enabled') = 'on'",
		'worker enabled');

	$rcv->clear_log;
	my $delivery = sq(
		q{SELECT webhooks.emit('EmailBounces', '{"messageId":1,"subscriberId":2,"subscriberEmail":"a@b.c"}')});
	my ($req) = $rcv->wait_for_requests(1, 30, '/ok/rot');
	ok(defined $req, 'the worker delivered the event');
	$req //= { headers => {} };
	my $body = sq("SELECT body FROM webhooks.all_deliveries WHERE id = $delivery");
	is($req->{body}, $body, 'the delivery carries the queued body');
	my @sigs = sig_entries($req);
	is(scalar(@sigs), 2, 'the delivery carries two v1 signatures');
	ok(verify_request($new, $req), 'one verifies with the new secret');
	ok(verify_request($old, $req), 'one verifies with the old secret');
	my $h = $req->{headers};
	unlike($h->{'webhook-id'} // '.', qr/\./, 'the delivery has a webhook-id without "."');
	ok($req->{ts_ok}, 'the delivery has a current webhook-timestamp');
	ok( @sigs == 2
		  && verify_signature($new, $h->{'webhook-id'}, $h->{'webhook-timestamp'}, $req->{body}, $sigs[0])
		  != verify_signature($new, $h->{'webhook-id'}, $h->{'webhook-timestamp'}, $req->{body}, $sigs[1])
		  && verify_signature($old, $h->{'webhook-id'}, $h->{'webhook-timestamp'}, $req->{body}, $sigs[0])
		  != verify_signature($old, $h->{'webhook-id'}, $h->{'webhook-timestamp'}, $req->{body}, $sigs[1]),
		'one signature per secret');
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $delivery",
		'the delivery is recorded as delivered');

	# the next connection test (activation) is signed with both secrets too
	sq("SELECT webhooks.deactivate_webhook('rot')");
	$rcv->clear_log;
	is(sq("SELECT is_active FROM webhooks.activate_webhook('rot')"), 't', 're-activate after rotation');
	($req) = $rcv->wait_for_requests(1, 10, '/ok/rot');
	$req //= { headers => {} };
	@sigs = sig_entries($req);
	is(scalar(@sigs), 2, 'the activation test request carries two v1 signatures');
	ok(verify_request($new, $req), 'the activation test request verifies with the new secret');
	ok(verify_request($old, $req), 'the activation test request verifies with the old secret');
}

########################################################################
# two sessions racing create_webhook for the same event type
########################################################################
{
	$rcv->clear_log;
	my %s;
	$s{race_a} = start_psql(
		"SELECT name FROM webhooks.create_webhook('race_a', 'Subscriptions', " . url('/slow/1500?a') . ');',
		'race_a');
	# the second starts while the first one's connection test is in progress
	my $got = $rcv->wait_for_requests(1, 30, '/slow/');
	is(scalar(@$got), 1, "race: the first session's connection test is under way");
	$s{race_b} = start_psql(
		"SELECT name FROM webhooks.create_webhook('race_b', 'Subscriptions', " . url('/slow/1500?b') . ');',
		'race_b');
	finish_psql($_) for values %s;

	my @won  = grep { $s{$_}{rc} == 0 } sort keys %s;
	my @lost = grep { $s{$_}{rc} != 0 } sort keys %s;
	is(scalar(@won), 1, 'race: exactly one create_webhook succeeds')
	  or diag(join "\n", map { "$_: rc $s{$_}{rc}: $s{$_}{err}" } sort keys %s);
	if (@won == 1 && @lost == 1)
	{
		my ($w, $l) = ($won[0], $lost[0]);
		is($s{$w}{out}, "$w\n", "race: $w returned its webhook");
		is($s{$l}{sqlstate}, '23505', "race: $l gets SQLSTATE 23505")
		  or diag($s{$l}{err});
		like($s{$l}{message} // '', qr/webhook "$w" is already active for event type Subscriptions/,
			"race: the error names the winner $w");
		is(sq("SELECT string_agg(name || ':' || is_active, ',') FROM webhooks.webhooks WHERE event_type = 'Subscriptions'"),
			"$w:true", 'race: only the winner is stored, active');
	}
	else
	{
		fail('race: one winner and one loser');
	}
	is(sq("SELECT count(*) FROM webhooks.webhooks WHERE is_active GROUP BY event_type ORDER BY 1 DESC LIMIT 1"),
		'1', 'at most one active webhook per event type overall');
}

$node->stop;
done_testing();
