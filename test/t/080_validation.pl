# One rule per item, defined once (src/validate.c), through every entry
# point that checks it, against a real server, worker and HTTPS receiver:
#
#   target URL       table guard (INSERT, UPDATE), create_webhook,
#                    update_webhook, test_connection, worker
#   extra headers    the same
#   auth token       table guard, create_webhook, update_webhook,
#                    test_connection, worker (empty, a control character,
#                    CR/LF; a tab is allowed)
#   secrets          table guard (secret, previous_secret), test_connection
#                    (secret, previous_secret), webhooks.sign(), worker
#   payload size     emit(), build_payload(), the trigger, worker
#   payload JSON     worker (emit() and the trigger only make valid JSON)
#
# Every entry point gives the same error message; a row written by hand
# behind the guard's back (a superuser can disable it) goes dead at send
# time with the log row "rejected before sending: <that message>", and
# nothing reaches the receiver.  Secrets are never printed.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv  = start_receiver();
my $node = new_node('validation', conf => 'webhooks.max_payload_size = 256');

my $good_url = $rcv->url('/ok/v');
$node->safe_psql('postgres',
	"SELECT FROM webhooks.create_webhook('v', 'EmailOpens', " . lit($good_url) . ')');
my $good_secret = $node->safe_psql('postgres', "SELECT secret FROM webhooks.webhooks WHERE name = 'v'");
$node->safe_psql('postgres',
	"INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('idle', 'EmailSends', 'https://hooks.example.com/idle')");

# The error message (errmsg) of $sql, '' when it does not fail.
sub message_of
{
	my ($sql) = @_;
	return psql_error($node, $sql)->{message} // '';
}

# Set $set on the active webhook's row with the guard disabled, emit an
# event, wait until its delivery is dead and return its log row's
# error_content; then put the row back as it was.
sub worker_refusal
{
	my ($set, $what) = @_;
	my $by_hand = sub {
		$node->safe_psql('postgres',
			    "BEGIN; ALTER TABLE webhooks.webhooks DISABLE TRIGGER webhooks_guard;"
			  . " UPDATE webhooks.webhooks SET $_[0] WHERE name = 'v';"
			  . " ALTER TABLE webhooks.webhooks ENABLE TRIGGER webhooks_guard; COMMIT;");
	};
	$by_hand->($set);
	my $d = $node->safe_psql('postgres',
		"SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 1) . "')");
	my $err = dead_delivery_error($d, $what);
	$by_hand->('target_url = ' . lit($good_url) . ", headers = '{}', auth_token = NULL, secret = "
		  . lit($good_secret) . ', previous_secret = NULL, previous_secret_expires_at = NULL');
	return $err;
}

# Wait until delivery $d is dead; its one log row's error_content.
sub dead_delivery_error
{
	my ($d, $what) = @_;
	ok($node->poll_query_until('postgres', "SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d"),
		"$what: the worker refuses the row");
	return $node->safe_psql('postgres',
		"SELECT string_agg(error_content, ' | ') FROM webhooks.webhook_logs WHERE delivery_id = $d");
}

# Check that every entry point of a rule says $expected.
sub same_message
{
	my ($rule, $expected, %by_entry) = @_;
	for my $entry (sort keys %by_entry)
	{
		my $got = $by_entry{$entry};
		$got =~ s/^rejected before sending: // if $entry eq 'worker';
		is($got, $expected, "$rule: $entry says \"$expected\"");
	}
	return;
}

sub insert_sql
{
	my ($cols, $vals) = @_;
	return "INSERT INTO webhooks.webhooks (name, event_type, target_url, $cols) "
	  . "VALUES ('bad', 'EmailSends', 'https://hooks.example.com/bad', $vals)";
}

########################################################################
# Target URL
########################################################################
{
	my $bad = lit('http://127.0.0.1:' . $rcv->port . '/ok/url');
	my $msg = 'invalid target URL: URL scheme must be https, not "http"';
	same_message('target URL', $msg,
		'table guard (INSERT)' => message_of(
			"INSERT INTO webhooks.webhooks (name, event_type, target_url) VALUES ('bad', 'EmailSends', $bad)"),
		'table guard (UPDATE)' =>
		  message_of("UPDATE webhooks.webhooks SET target_url = $bad WHERE name = 'idle'"),
		'create_webhook' => message_of("SELECT webhooks.create_webhook('bad', 'EmailSends', $bad)"),
		'update_webhook' => message_of("SELECT webhooks.update_webhook('idle', target_url => $bad)"),
		'test_connection' => message_of("SELECT webhooks.test_connection($bad, 'EmailOpens')"),
		'worker' => worker_refusal("target_url = $bad", 'http:// URL'));
}

########################################################################
# Extra headers
########################################################################
{
	my $bad = q{'{"Host": "evil.example.com"}'};
	my $msg = 'invalid extra headers: header "Host" is set by the extension and cannot be overridden';
	same_message('extra headers', $msg,
		'table guard (INSERT)' => message_of(insert_sql('headers', $bad)),
		'table guard (UPDATE)' =>
		  message_of("UPDATE webhooks.webhooks SET headers = $bad WHERE name = 'idle'"),
		'create_webhook' => message_of(
			"SELECT webhooks.create_webhook('bad', 'EmailSends', " . lit($rcv->url('/ok/h')) . ", headers => $bad)"),
		'update_webhook' => message_of("SELECT webhooks.update_webhook('idle', headers => $bad)"),
		'test_connection' => message_of(
			"SELECT webhooks.test_connection(" . lit($rcv->url('/ok/h')) . ", 'EmailOpens', headers => $bad)"),
		'worker' => worker_refusal("headers = $bad", 'reserved header'));
}

########################################################################
# Auth token: not empty, no control characters but tab
########################################################################
for my $case (
	[ 'empty',           q{''},         'invalid auth token: it is empty' ],
	[ 'control',         q{E'a\x01b'},  'invalid auth token: it contains a control character (CR, LF, NUL, ...)' ],
	[ 'CR LF',           q{E'a\r\nX-Injected: 1'}, 'invalid auth token: it contains a control character (CR, LF, NUL, ...)' ])
{
	my ($name, $bad, $msg) = @$case;
	my $path = "/ok/token-$name" =~ s/ /-/gr;
	# update_webhook(auth_token => '') removes the token: not an error
	my %update = $name eq 'empty' ? () : ('update_webhook' =>
		  message_of("SELECT webhooks.update_webhook('idle', auth_token => $bad)"));
	same_message("auth token ($name)", $msg, %update,
		'table guard (INSERT)' => message_of(insert_sql('auth_token', $bad)),
		'create_webhook' => message_of(
			"SELECT webhooks.create_webhook('bad', 'EmailSends', " . lit($rcv->url($path)) . ", auth_token => $bad)"),
		'test_connection' => message_of(
			"SELECT webhooks.test_connection(" . lit($rcv->url($path)) . ", 'EmailOpens', auth_token => $bad)"),
		'worker' => worker_refusal("auth_token = $bad", "auth token ($name)"));
	is($rcv->count($path), 0, "auth token ($name): the wizard and the connection test send nothing");
}
{
	my $tab = q{E'tok\ten'};
	is(message_of(insert_sql('auth_token', $tab)), '', 'auth token with a tab: the table guard accepts it');
	is( $node->safe_psql('postgres',
			"SELECT ok FROM webhooks.test_connection(" . lit($rcv->url('/ok/tab')) . ", 'EmailOpens', auth_token => $tab)"),
		't', 'auth token with a tab: the connection test sends it');
	$node->safe_psql('postgres', "DELETE FROM webhooks.webhooks WHERE name = 'bad'");
}

########################################################################
# Secrets: "whsec_" and base64 of 16 to 64 bytes
########################################################################
{
	my $bad = q{'whsec_short'};
	my $msg = 'invalid webhook secret';
	same_message('secret', $msg,
		'table guard (INSERT)' => message_of(insert_sql('secret', $bad)),
		'test_connection' => message_of(
			"SELECT webhooks.test_connection(" . lit($rcv->url('/ok/s')) . ", 'EmailOpens', secret => $bad)"),
		'webhooks.sign' => message_of("SELECT webhooks.sign($bad, 'msg_1', 1, '{}')"),
		'worker' => worker_refusal("secret = $bad", 'secret'));

	$msg = 'invalid previous webhook secret';
	same_message('previous secret', $msg,
		'table guard (INSERT)' => message_of(insert_sql('previous_secret', $bad)),
		'test_connection' => message_of(
			"SELECT webhooks.test_connection(" . lit($rcv->url('/ok/s')) . ", 'EmailOpens', previous_secret => $bad)"),
		'worker' => worker_refusal(
			"previous_secret = $bad, previous_secret_expires_at = now() + interval '1 hour'",
			'previous secret'));
	is($rcv->count('/ok/s'), 0, 'secrets: the connection test sends nothing');
}

########################################################################
# Payload size (webhooks.max_payload_size is 256 on this server)
########################################################################
{
	my $date  = '2024-05-10T13:28:23.209375Z';
	my $email = 'x' x 300;
	my $json  = qq({"eventDate": "$date", "messageId": 1, "subscriberId": 2, "subscriberEmail": "$email"});
	my $body  = $node->safe_psql('postgres',
		"SET webhooks.max_payload_size = '1MB'; SELECT webhooks.build_payload('EmailOpens', '$json')");
	my $msg = 'payload is too large: ' . length($body) . ' bytes, webhooks.max_payload_size is 256';

	$node->safe_psql('postgres',
		"CREATE TABLE opens (message_id bigint, subscriber_id bigint, subscriber_email text, event_date timestamptz);
		 CREATE TRIGGER opens_webhook AFTER INSERT ON opens
		   FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');");
	my $d = $node->safe_psql('postgres',
		"INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
		 SELECT id, 'EmailOpens', " . lit($body) . " FROM webhooks.webhooks WHERE name = 'v' RETURNING id");
	same_message('payload size', $msg,
		'emit' => message_of("SELECT webhooks.emit('EmailOpens', '$json')"),
		'build_payload' => message_of("SELECT webhooks.build_payload('EmailOpens', '$json')"),
		'trigger' => message_of("INSERT INTO opens VALUES (1, 2, '$email', '$date')"),
		'worker' => dead_delivery_error($d, 'body over max_payload_size'));
}

########################################################################
# Payload JSON: only rows written by hand can break it
########################################################################
{
	my $d = $node->safe_psql('postgres',
		"INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
		 SELECT id, 'EmailOpens', '{\"eventType\": ' FROM webhooks.webhooks WHERE name = 'v' RETURNING id");
	is(dead_delivery_error($d, 'body not JSON'),
		'rejected before sending: invalid payload: it is not valid JSON or is nested deeper than 64 levels',
		'payload JSON: the worker says why');
}

# the checks refuse what breaks a rule, not everything: the row, repaired,
# delivers, and nothing refused ever reached the receiver
{
	my $d = $node->safe_psql('postgres',
		"SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', 2) . "')");
	ok($node->poll_query_until('postgres', "SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d"),
		'the repaired webhook delivers again');
	is($rcv->count('/ok/v'), 2, 'the receiver got the wizard\'s test and that delivery only');
	is($rcv->count(sub { exists $_[0]{headers}{'x-injected'} }), 0, 'no injected header reached the receiver');
}

done_testing();
