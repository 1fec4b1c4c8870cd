# Connections and trust follow the settings, against the real HTTPS receiver
# (test/receiver.py keeps HTTP/1.1 connections alive and logs, per request,
# the connection it came on and its number on that connection):
#
#   1. turning webhooks.allow_private_targets off: a kept-alive connection
#      to 127.0.0.1 is not reused, the next delivery is blocked and logged
#   2. taking an entry out of webhooks.dns_overrides: the kept-alive
#      connection to the pinned address is not reused, the name is resolved
#      again (and does not resolve)
#   3. webhooks.ca_file: another file, or new content in the same file with
#      a reload, is the trust of the next delivery (no kept-alive connection
#      made under the old trust is reused)
#   4. a name pinned to a cloud metadata address and 127.0.0.1: the refused
#      address is skipped, the delivery and the connection test succeed
#      and no failed attempt is logged
#   5. the trust store: a certificate from a CA in no store is refused;
#      OpenSSL's default store (SSL_CERT_FILE in the server's environment)
#      still applies with webhooks.ca_file set, and ca_file still applies
#      on top of it; a ca_file that cannot be read fails, saying so
#
# Deliveries are recognised at the receiver by their body (a unique
# messageId each), not by their webhook-id.

use strict;
use warnings;

use File::Copy ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv  = start_receiver();
my $port = $rcv->port;
my $long_retries = join(', ', ('1s') x 60);
my $node = new_node('connections', conf => "webhooks.retry_schedule = '$long_retries'");
my $certs = certs_dir();

my @all_secrets;
my $n = 0;    # messageId of the last event emitted

# a reload that changes no setting: wait until a new session shows a newer
# pg_conf_load_time(), so the postmaster has re-read the files and
# signalled the worker
sub reload_unchanged
{
	my $before = sq('SELECT pg_conf_load_time()');
	$node->reload;
	poll("SELECT pg_conf_load_time() > " . lit($before) . "::timestamptz",
		'configuration reloaded');
	return;
}

# a webhook stored directly (no connection test), active
sub add_webhook
{
	my ($name, $type, $url) = @_;
	sq( "INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active)"
		  . " VALUES ('$name', '$type', " . lit($url) . ", true)");
	push @all_secrets, secret_of($name);
	$rcv->set_secret(@all_secrets);
	return;
}

# emit one event with a fresh messageId; returns (delivery id, messageId)
sub emit_next
{
	my ($type) = @_;
	$n++;
	return (emit($type, $n), $n);
}

# receiver filter: the request carrying event $m
sub event
{
	my ($m) = @_;
	return sub { ($_[0]{body} // '') =~ /"(?:messageId|listId)":$m[,}]/ };
}

# wait until delivery $d was delivered or has a failed attempt logged
sub wait_outcome
{
	my ($d, $what) = @_;
	poll(
		"SELECT state = 'delivered'
		     OR EXISTS (SELECT FROM webhooks.webhook_logs WHERE delivery_id = $d)
		   FROM webhooks.all_deliveries WHERE id = $d",
		"$what: the first attempt ended");
	return sq(
		"SELECT state || '|' || attempts FROM webhooks.all_deliveries WHERE id = $d;
		 SELECT coalesce(status::text, 'NULL') || '|' || error_content
		   FROM webhooks.webhook_logs WHERE delivery_id = $d AND attempt = 1");
}

# deliver two events to webhook type $type and check the second came on the
# connection of the first: the kept-alive connection the test is about
sub deliver_two_on_one_connection
{
	my ($rcvr, $type, $what) = @_;
	my ($d1, $m1) = emit_next($type);
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d1",
		"$what: first event delivered");
	my ($d2, $m2) = emit_next($type);
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d2",
		"$what: second event delivered");
	my ($r1) = @{ $rcvr->wait_for_requests(1, 30, event($m1)) };
	my ($r2) = @{ $rcvr->wait_for_requests(1, 30, event($m2)) };
	ok($r1 && $r2 && $r1->{conn} == $r2->{conn} && $r2->{n_on_conn} >= 2,
		"$what: the second came on the first one's kept-alive connection");
	return $r1 ? $r1->{conn} : -1;
}

########################################################################
# 1. allow_private_targets off closes the connections it allowed
########################################################################
my $pinned = "webhooks.test:$port:127.0.0.1";
{
	set_settings(dns_overrides => $pinned, allow_private_targets => 'on');
	add_webhook('private', 'EmailOpens', "https://webhooks.test:$port/ok/private");
	my $conn = deliver_two_on_one_connection($rcv, 'EmailOpens', 'private allowed');

	set_settings(allow_private_targets => 'off');
	my ($d, $m) = emit_next('EmailOpens');
	my ($state, $log) = split /\n/, wait_outcome($d, 'private refused');
	is($state, 'pending|1', 'after allow_private_targets = off the delivery is not delivered');
	like($log // '', qr/^NULL\|connection blocked: .*loopback/,
		'... its attempt is logged as blocked (loopback), no status');
	is($rcv->count(event($m)), 0, '... and nothing reached the receiver');

	set_settings(allow_private_targets => 'on');
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'allowed again, the delivery arrives on a retry');
	my ($r) = @{ $rcv->wait_for_requests(1, 30, event($m)) };
	isnt($r ? $r->{conn} : $conn, $conn, '... over a new connection');
	deactivate('private');
}

########################################################################
# 2. an entry taken out of dns_overrides closes the connections it made
########################################################################
{
	add_webhook('pinned', 'EmailClicks', "https://webhooks.test:$port/ok/pinned");
	deliver_two_on_one_connection($rcv, 'EmailClicks', 'pinned name');

	set_settings(dns_overrides => '');
	my ($d, $m) = emit_next('EmailClicks');
	my ($state, $log) = split /\n/, wait_outcome($d, 'override taken out');
	is($state, 'pending|1', 'with the override taken out, the delivery is not delivered');
	like($log // '', qr/^NULL\|.*resolve/i, '... the name is resolved again and does not resolve');
	is($rcv->count(event($m)), 0, '... and nothing reached the receiver');

	set_settings(dns_overrides => $pinned);
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'pinned again, it arrives on a retry');
	deactivate('pinned');
}

########################################################################
# 3. ca_file: another file, or the same file with new content + reload
########################################################################
my $trust_dir = PostgreSQL::Test::Utils::tempdir('trust');
{
	my $trust = "$trust_dir/trust.pem";
	File::Copy::copy("$certs/ca.crt", $trust) or die "copy: $!";
	set_settings(ca_file => $trust);
	add_webhook('trusted', 'EmailSends', $rcv->url('/ok/trusted'));
	deliver_two_on_one_connection($rcv, 'EmailSends', 'ca_file trust.pem (the test CA)');

	# (a) the setting names another file, which trusts only the second CA
	set_settings(ca_file => "$certs/ca2.crt");
	my ($d, $m) = emit_next('EmailSends');
	my ($state, $log) = split /\n/, wait_outcome($d, 'ca_file changed');
	is($state, 'pending|1', 'ca_file naming another CA: the delivery is not delivered');
	like($log // '', qr/^NULL\|.*(certificate|SSL)/i, '... a certificate error is logged');
	is($rcv->count(event($m)), 0, '... and nothing reached the receiver');

	set_settings(ca_file => $trust);
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'ca_file back: it arrives on a retry');
	deliver_two_on_one_connection($rcv, 'EmailSends', 'ca_file trust.pem again');

	# (b) the same setting, the file replaced (atomically) by the second CA
	File::Copy::copy("$certs/ca2.crt", "$trust.new") or die "copy: $!";
	rename("$trust.new", $trust) or die "rename: $!";
	reload_unchanged();
	($d, $m) = emit_next('EmailSends');
	($state, $log) = split /\n/, wait_outcome($d, 'ca_file content changed');
	is($state, 'pending|1', 'ca_file content replaced + reload: the delivery is not delivered');
	like($log // '', qr/^NULL\|.*(certificate|SSL)/i, '... a certificate error is logged');
	is($rcv->count(event($m)), 0, '... and nothing reached the receiver');

	File::Copy::copy("$certs/ca.crt", "$trust.new") or die "copy: $!";
	rename("$trust.new", $trust) or die "rename: $!";
	reload_unchanged();
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'the test CA back in the file: it arrives on a retry');
	deactivate('trusted');
	set_settings(ca_file => "$certs/ca.crt");
}

########################################################################
# 4. a name that resolves to a refused address and to an allowed one
########################################################################
{
	# a receiver of its own: no connection to it is open yet
	my $mixed = start_receiver();
	my $mport = $mixed->port;
	$mixed->set_secret(@all_secrets);
	set_settings(dns_overrides => "webhooks.test:$mport:169.254.169.254,127.0.0.1");
	is(sq("SELECT current_setting('webhooks.allow_private_targets')"), 'on',
		'allow_private_targets is on (cloud metadata is refused even so)');

	my $row = sq(
		"SELECT ok, status, error_content IS NULL
		   FROM webhooks.test_connection(" . lit("https://webhooks.test:$mport/ok/mixed-test") . ", 'EmailBounces')");
	is($row, 't|200|t', 'connection test: the metadata address is skipped, ok with status 200');
	is($mixed->count('/ok/mixed-test'), 1, '... the receiver got the test request');

	$row = '';
	$node->psql(
		'postgres',
		"SELECT is_active FROM webhooks.create_webhook('mixed', 'EmailBounces', "
		  . lit("https://webhooks.test:$mport/ok/mixed") . ")",
		stdout => \$row);
	is($row, 't', 'create_webhook (with its connection test) succeeds');
	if ($row eq 't')
	{
		push @all_secrets, secret_of('mixed');
	}
	else
	{
		# the worker's part is tested all the same
		add_webhook('mixed', 'EmailBounces', "https://webhooks.test:$mport/ok/mixed");
	}
	$mixed->set_secret(@all_secrets);

	my ($d, $m) = emit_next('EmailBounces');
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'the delivery is delivered');
	is(sq("SELECT attempts FROM webhooks.all_deliveries WHERE id = $d"), '1', '... at the first attempt');
	is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE delivery_id = $d"), '0',
		'... and no failed attempt is logged');
	my ($r) = @{ $mixed->wait_for_requests(1, 30, event($m)) };
	ok($r && $r->{sig_ok}, '... the receiver got it, signed');
	is($mixed->count(event($m)), 1, '... once');
	deactivate('mixed');

	# only refused addresses: still blocked, and said so
	set_settings(dns_overrides => "webhooks.test:$mport:169.254.169.254,169.254.170.2");
	$row = sq(
		"SELECT ok, status IS NULL, error_content
		   FROM webhooks.test_connection(" . lit("https://webhooks.test:$mport/ok/all-refused") . ", 'EmailBounces')");
	like($row, qr/^f\|t\|connection blocked: .*metadata/,
		'every address refused: the connection test reports the block');
	is($mixed->count('/ok/all-refused'), 0, '... and nothing was sent');
	set_settings(dns_overrides => '');
	$mixed->stop;
}

########################################################################
# 5. the trust store: system defaults plus ca_file
########################################################################
{
	my $other = start_receiver(cert => 'otherca');
	$other->set_secret(@all_secrets);
	my $test_conn = sub {
		my ($r, $path) = @_;
		return sq(
			"SELECT ok, coalesce(error_content, '') FROM webhooks.test_connection("
			  . lit($r->url($path)) . ", 'EmailComplaints')");
	};

	# (a) the second CA is in no store
	like($test_conn->($other, '/ok/unknown-ca'), qr/^f\|.*(certificate|SSL)/i,
		'a certificate from a CA in no store: the connection test fails on the certificate');
	add_webhook('otherca', 'EmailComplaints', $other->url('/ok/otherca'));
	my ($d, $m) = emit_next('EmailComplaints');
	my ($state, $log) = split /\n/, wait_outcome($d, 'unknown CA');
	is($state, 'pending|1', 'the delivery to it is not delivered');
	like($log // '', qr/^NULL\|.*(certificate|SSL)/i, '... a certificate error is logged');
	is($other->count, 0, '... and nothing reached the receiver');

	# (b) the second CA as OpenSSL's default file, the test CA as ca_file
	{
		local $ENV{SSL_CERT_FILE} = "$certs/ca2.crt";
		$node->restart;
	}
	is(sq("SELECT current_setting('webhooks.ca_file')"), "$certs/ca.crt",
		'restarted with SSL_CERT_FILE = ca2.crt, ca_file still the test CA');
	is($test_conn->($other, '/ok/system-store'), 't|',
		'the system store (OpenSSL default file) is trusted with ca_file set');
	poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d",
		'... and the worker delivers to it');
	is($test_conn->($rcv, '/ok/ca-file-too'), 't|', '... and ca_file is trusted as well');

	# (c) without ca_file, only the system store
	set_settings(ca_file => '');
	like($test_conn->($rcv, '/ok/no-ca-file'), qr/^f\|.*(certificate|SSL)/i,
		'ca_file emptied: the test CA is not trusted any more');
	is($test_conn->($other, '/ok/system-only'), 't|', '... the system store still is');

	# (d) a ca_file that cannot be read is an error, not left out
	set_settings(ca_file => "$trust_dir/missing.pem");
	like($test_conn->($other, '/ok/missing-ca-file'),
		qr/^f\|.*webhooks\.ca_file ".*missing\.pem" could not be loaded/,
		'a ca_file that cannot be read: the connection test fails and says why');
	is($other->count('/ok/missing-ca-file'), 0, '... and sends nothing');
	set_settings(ca_file => "$certs/ca.crt");
	deactivate('otherca');
}

done_testing();
