=pod

=head1 NAME

WebhooksTest - helpers for the webhooks TAP tests

=head1 SYNOPSIS

  use strict;
  use warnings;
  use PostgreSQL::Test::Utils;
  use Test::More;
  use WebhooksTest;            # prove -I test

  my $rcv  = start_receiver(cert => 'server', secret => $secret);
  my $node = new_node('main', conf => "webhooks.some_setting = 5");
  sq("... '" . $rcv->url('/ok') . "' ...");      # on that node, database postgres
  poll("SELECT ...", 'what becomes true');       # ok() once it returns t
  my $reqs = $rcv->wait_for_requests(1, 30);
  ok(verify_request($secret, $reqs->[0]), 'delivery is signed');
  ok($reqs->[0]{sig_ok}, 'the receiver agrees');
  done_testing();

=head1 DESCRIPTION

Exports C<certs_dir>, C<start_receiver>, C<new_node>, C<sign>,
C<verify_signature>, C<verify_request>, C<lit>, C<redact>, C<payload>,
C<psql_error>, C<real>, and the helpers that work on the test's node (see
L</HELPERS ON THE TEST'S NODE>): C<sq>, C<poll>, C<poll_until>,
C<worker_pid>, C<poll_worker_idle>, C<restart_worker>, C<wait_server_up>,
C<set_settings>, C<log_since>, C<wait_log_count>, C<msg_of>, C<body_of>,
C<secret_of>, C<emit>, C<make_webhook> and C<deactivate>.

Everything is written under C<$PostgreSQL::Test::Utils::tmp_check> (that is
C<$TESTDIR/tmp_check>, or C<./tmp_check> without TESTDIR): the certificates
in C<tmp_check/certs> (shared by all test scripts of a run), each receiver in
its own C<tmp_check/receiver_XXXX> directory (C<port>, C<requests.jsonl>,
C<secrets>, C<receiver.log> = the receiver's stderr).  Those directories are
removed at the end unless a test failed or PG_TEST_NOCLEAN is set.

The test receiver is F<test/receiver.py> (run with F</usr/bin/python3>, or
C<$ENV{WEBHOOKS_TEST_PYTHON}>); the certificates come from
F<test/make_certs.sh>.  See those files for the paths the receiver answers.

=cut

package WebhooksTest;

use strict;
use warnings;

use Carp;
use Cwd ();
use Digest::SHA qw(hmac_sha256);
use Exporter 'import';
use File::Basename ();
use File::Spec;
use JSON::PP ();
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX ();
use Scalar::Util ();
use Test::More ();
use Time::HiRes ();

# Loaded at compile time so that their INIT blocks run; loading them does not
# need any PostgreSQL binary.
use PostgreSQL::Test::Utils ();
use PostgreSQL::Test::Cluster ();

our @EXPORT =
  qw(certs_dir start_receiver new_node sign verify_signature verify_request
  lit redact payload psql_error real
  sq poll poll_until worker_pid poll_worker_idle restart_worker wait_server_up
  set_settings log_since wait_log_count msg_of body_of secret_of emit
  make_webhook deactivate waiting_ids upgrade_fixture most_at_once latest_version);

# Directory of this file (the repository's test/), absolute.
my $test_dir = File::Basename::dirname(Cwd::abs_path(__FILE__));

my $python = $ENV{WEBHOOKS_TEST_PYTHON}
  // (-x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3');

my %cert_kinds = map { $_ => 1 } qw(server expired wronghost selfsigned otherca);

=pod

=head1 FUNCTIONS

=over

=item certs_dir()

Runs F<test/make_certs.sh> (once per process; the script itself is idempotent
and safe to run concurrently) into C<tmp_check/certs> and returns that
directory as an absolute path.  It holds C<ca.crt ca.key>, and C<.crt/.key>
pairs for C<server> (signed by the CA for 127.0.0.1 and localhost),
C<expired>, C<wronghost> (SAN wrong.example) and C<selfsigned>; and
C<ca2.crt ca2.key>, a second CA that nothing trusts unless a test installs
it, with C<otherca.crt/.key> (signed by it, same names as C<server>).

=cut

my $certs_dir;

# the directory of the test certificates, made on first use
sub certs_dir
{
	return $certs_dir if defined $certs_dir;

	my $dir =
	  File::Spec->rel2abs("$PostgreSQL::Test::Utils::tmp_check/certs");
	PostgreSQL::Test::Utils::system_or_bail('bash', "$test_dir/make_certs.sh",
		$dir);
	croak "make_certs.sh did not create $dir/ca.crt" unless -f "$dir/ca.crt";
	$certs_dir = $dir;
	return $certs_dir;
}

=pod

=item start_receiver(%opt)

Starts F<test/receiver.py> in the background on 127.0.0.1 and waits (polling
every 50 ms, at most 10 s) until it has written its port file.  Options:

  cert    => 'server' (default) | 'expired' | 'wronghost' | 'selfsigned'
             | 'otherca' (from the second CA, ca2.crt)
  secret  => 'whsec_...' or ['whsec_...', ...]   secrets for the sig_ok check
             (can be changed later with ->set_secret)
  port    => fixed port (default: ephemeral)
  verbose => 1   access log and tracebacks into receiver.log
  http2   => 1   run test/h2receiver.py instead: HTTP/2 and HTTP/1.1 by
                 ALPN, 200 "ok" to everything; logs the protocol of each
                 request (no signature checks: use verify_request)
  early   => 1   with http2: answer HTTP/2 requests before their body
                 (see h2receiver.py)

Returns a C<WebhooksTest::Receiver> (methods below).  It is stopped when the
object goes away, and at the end of the test script in any case.  Dies if the
receiver does not come up.

=cut

# a running test receiver (a WebhooksTest::Receiver)
sub start_receiver
{
	my (%opt) = @_;
	return WebhooksTest::Receiver->_start(%opt);
}

=pod

=item new_node($name, %opt)

C<PostgreSQL::Test::Cluster-E<gt>new($name)>, C<init>, then appends to
postgresql.conf:

  shared_preload_libraries = 'webhooks'
  webhooks.ca_file = '<certs_dir>/ca.crt'
  webhooks.allow_private_targets = on
  webhooks.databases = 'postgres'

followed by C<$opt{conf}> (a string of lines, or an array ref of lines), starts
the node and runs C<CREATE EXTENSION webhooks> in database postgres.  The
first node made is the test's node, on which the helpers below (C<sq>,
C<poll>, ...) work.  Other options:

  init         => { ... }   passed to $node->init (e.g. allows_streaming => 1)
  no_extension => 1         do not CREATE EXTENSION
  no_start     => 1         do not start the node (implies no_extension)
  all_databases => 1        no webhooks.databases: workers in every database

When run by hand outside C<make installcheck>, puts C<pg_config --bindir> on
PATH and sets PG_REGRESS if they are missing (pg_config from $PG_CONFIG or
PATH).  Returns the node.

=cut

# the first node new_node() made: the one sq(), poll() and the others use
my $test_node;

# a started node with the extension, configured for the test receiver
sub new_node
{
	my ($name, %opt) = @_;

	_ensure_pg_env();
	my $ca = certs_dir() . '/ca.crt';
	(my $ca_quoted = $ca) =~ s/'/''/g;

	my $node = PostgreSQL::Test::Cluster->new($name);
	$test_node //= $node;
	$node->init(%{ $opt{init} // {} });

	my @conf = (
		"shared_preload_libraries = 'webhooks'",
		"webhooks.ca_file = '$ca_quoted'",
		"webhooks.allow_private_targets = on");
	# workers in database postgres only, unless the test asks for every database
	push @conf, "webhooks.databases = 'postgres'" unless $opt{all_databases};
	if (defined $opt{conf})
	{
		push @conf, ref $opt{conf} eq 'ARRAY' ? @{ $opt{conf} } : $opt{conf};
	}
	$node->append_conf('postgresql.conf',
		"\n# Added by WebhooksTest.pm\n" . join("\n", @conf) . "\n");

	return $node if $opt{no_start};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION webhooks')
	  unless $opt{no_extension};
	return $node;
}

# Make PostgreSQL::Test::Cluster usable when the script is run by hand with
# prove instead of through PGXS's prove_installcheck.
sub _ensure_pg_env
{
	my $have_initdb =
	  grep { -x "$_/initdb" } split /:/, ($ENV{PATH} // '');
	return if $have_initdb && $ENV{PG_REGRESS};

	my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
	chomp(my $bindir = `$pg_config --bindir`);
	croak "could not run $pg_config --bindir" if $? || $bindir eq '';
	$ENV{PATH} = "$bindir:" . ($ENV{PATH} // '') unless $have_initdb;

	if (!$ENV{PG_REGRESS})
	{
		chomp(my $pgxs = `$pg_config --pgxs`);
		croak "could not run $pg_config --pgxs" if $? || $pgxs eq '';
		# .../lib/pgxs/src/makefiles/pgxs.mk -> .../lib/pgxs/src/test/regress/pg_regress
		my $src = File::Basename::dirname(File::Basename::dirname($pgxs));
		$ENV{PG_REGRESS} = "$src/test/regress/pg_regress";
	}
	return;
}

=pod

=item sign($secret, $id, $timestamp, $body)

The C<webhook-signature> header value for these inputs by the Standard
Webhooks v1 scheme: C<v1,> + base64(HMAC-SHA256(base64_decode(secret without
C<whsec_>), "$id.$timestamp.$body")).  With an array ref of secrets, one entry
per secret, separated by one space (a rotation).  C<$body> is bytes; a Perl
character string is UTF-8 encoded first.

=cut

# the webhook-signature header of a message
sub sign
{
	my ($secret, $id, $ts, $body) = @_;
	my @secrets = ref $secret eq 'ARRAY' ? @$secret : ($secret);
	my $signed = _signed_content($id, $ts, $body);
	return join ' ',
	  map { 'v1,' . encode_base64(hmac_sha256($signed, _key($_)), '') }
	  @secrets;
}

=pod

=item verify_signature($secret, $id, $timestamp, $body, $sig_header)

Returns 1 if any C<v1,> entry of the space-separated C<$sig_header> is the
signature of C<$id.$timestamp.$body> under C<$secret> (or under any of the
secrets, given an array ref), else 0.  Only the HMAC is checked, not the age
of the timestamp (the receiver's C<ts_ok> does that).

=cut

# whether a webhook-signature header signs a message under a secret
sub verify_signature
{
	my ($secret, $id, $ts, $body, $sig_header) = @_;
	return 0
	  unless defined $secret
	  && defined $id
	  && defined $ts
	  && defined $body
	  && defined $sig_header;
	my @secrets = ref $secret eq 'ARRAY' ? @$secret : ($secret);
	my @given = map { substr($_, 3) } grep { /^v1,/ } split / /, $sig_header;
	my $signed = _signed_content($id, $ts, $body);
	for my $s (@secrets)
	{
		my $want = encode_base64(hmac_sha256($signed, _key($s)), '');
		return 1 if grep { $_ eq $want } @given;
	}
	return 0;
}

=pod

=item verify_request($secret, $request)

C<verify_signature> on a request as returned by C<-E<gt>requests> (its
webhook-id, webhook-timestamp and webhook-signature headers and exact body).

=cut

# whether a logged request is signed with a secret
sub verify_request
{
	my ($secret, $req) = @_;
	return 0 unless ref $req eq 'HASH';
	my $h = $req->{headers} // {};
	return verify_signature(
		$secret, $h->{'webhook-id'}, $h->{'webhook-timestamp'},
		$req->{body}, $h->{'webhook-signature'});
}

=item lit($s)

C<$s> as an SQL string literal (C<NULL> when undefined).

=cut

# an SQL string literal
sub lit
{
	my ($s) = @_;
	return 'NULL' unless defined $s;
	$s =~ s/'/''/g;
	return "'$s'";
}

=item redact($s)

C<$s> with every C<whsec_...> secret replaced by C<whsec_...>, for test
names and diagnostics, which must never show a secret.

=cut

# a string fit to print: its secrets hidden
sub redact
{
	my ($s) = @_;
	$s =~ s/whsec_[A-Za-z0-9+\/=]*/whsec_.../g;
	return $s;
}

=item payload($event_type, $n)

A valid payload (JSON text) for C<webhooks.emit()>, with C<$n> as its
messageId (or listId, for the list event types).

=cut

# a valid emit() payload numbered $n
sub payload
{
	my ($type, $n) = @_;
	return qq({"listId":$n,"subscriberId":2,"subscriberEmail":"a\@b.c"})
	  if $type =~ /^(Subscriptions|Unsubscriptions)$/;
	return
	  qq({"messageId":$n,"subscriberId":2,"subscriberEmail":"a\@b.c","listId":7})
	  if $type eq 'Confirmations';
	return qq({"messageId":$n,"subscriberId":2,"subscriberEmail":"a\@b.c"});
}

=item psql_error($node, $sql, %psql_options)

Runs C<$sql> (usually expected to fail) in database postgres with psql's
verbose error reports and a 60 s timeout (a timeout fails the test).
Returns a hashref: C<rc>, C<stdout>, C<stderr>, and from the error report
C<sqlstate>, C<message>, C<detail>, C<hint>.

=cut

# the SQLSTATE, message, detail and hint of SQL that fails
sub psql_error
{
	my ($node, $sql, %opts) = @_;
	my ($out, $err) = ('', '');
	my $timed_out = 0;
	my $rc = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err, timeout => 60,
		timed_out => \$timed_out, %opts);
	Test::More::fail('did not return within 60 s: ' . redact($sql)) if $timed_out;
	my %e = (rc => $rc, stderr => $err, stdout => $out);
	if ($err =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/)
	{
		$e{sqlstate} = $1;
		$e{message}  = $2;
	}
	$e{detail} = $1 if $err =~ /^DETAIL:\s+(.*)$/m;
	$e{hint}   = $1 if $err =~ /^HINT:\s+(.*)$/m;
	return \%e;
}

=item real($prefix)

A filter for C<-E<gt>requests>, C<-E<gt>count> and C<-E<gt>wait_for_requests>:
the requests under path C<$prefix> that are deliveries, not the connection
tests of the wizard (webhook-id C<msg_test_...>).

=cut

# filter: the deliveries (not connection tests) a receiver got under $prefix
sub real
{
	my ($prefix) = @_;
	return sub {
		index($_[0]{path}, $prefix) == 0
		  && ($_[0]{headers}{'webhook-id'} // '') !~ /^msg_test_/;
	};
}

=pod

=back

=head1 HELPERS ON THE TEST'S NODE

These work on the first node C<new_node> made in the script (database
postgres unless said otherwise).

=over

=item sq($sql, %opt)

C<safe_psql> of C<$sql>: its output, dies on an error.  C<db =E<gt> $name>
runs it in another database; other options go to C<safe_psql> (the default
C<timeout> is C<$PostgreSQL::Test::Utils::timeout_default>, a timeout dies).

=cut

# run SQL on the test's node, return its output
sub sq
{
	my ($sql, %opt) = @_;
	my $db = delete $opt{db} // 'postgres';
	return $test_node->safe_psql($db, $sql,
		timeout => $PostgreSQL::Test::Utils::timeout_default, %opt);
}

=item poll_until($sql, $secs, $db)

C<poll_query_until>: true once C<$sql> returns C<t>, false (with a diag)
after about C<$secs> seconds (default
C<$PostgreSQL::Test::Utils::timeout_default>).

=item poll($sql, $what, $secs)

C<ok(poll_until($sql, $secs), $what)>.

=cut

# wait until SQL returns t; false after about $secs seconds
sub poll_until
{
	my ($sql, $secs, $db) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $secs // $PostgreSQL::Test::Utils::timeout_default;
	return $test_node->poll_query_until($db // 'postgres', $sql);
}

# the test that SQL comes to return t (within $secs seconds)
sub poll
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($sql, $what, $secs) = @_;
	return Test::More::ok(poll_until($sql, $secs), $what);
}

=item worker_pid()

The pid of the webhooks worker (empty when there is none).

=item poll_worker_idle()

Tests that the worker comes to show C<idle> in pg_stat_activity.  It does
so only between claims: once it is seen, a reload signalled before the
query started has been processed.

=item restart_worker()

C<pg_terminate_backend> of the worker, then tests that a new one comes.
The worker does its maintenance when it starts.

=item wait_server_up($secs)

After a crash: true once the server answers C<SELECT 1> again, false after
C<$secs> seconds (default C<$PostgreSQL::Test::Utils::timeout_default>).

=cut

# the worker's pid
sub worker_pid
{
	return sq("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker'");
}

# the test that the worker comes to show idle (between claims)
sub poll_worker_idle
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	poll(q{SELECT count(*) = 1 FROM pg_stat_activity
	        WHERE backend_type = 'webhooks worker' AND query = 'idle'},
		'the worker is idle');
	return;
}

# terminate the worker; the test that another one starts
sub restart_worker
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $old = worker_pid();
	sq("SELECT pg_terminate_backend($old)");
	poll("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND pid <> $old",
		'the worker comes back');
	return;
}

# wait until the server accepts queries again (after a crash restart);
# psql may fail in several ways meanwhile, IPC::Run even dies on EPIPE
sub wait_server_up
{
	my ($secs) = @_;
	my $deadline = Time::HiRes::time() + ($secs // $PostgreSQL::Test::Utils::timeout_default);
	while (Time::HiRes::time() < $deadline)
	{
		my $ok = eval {
			my ($ret, $out) = $test_node->psql('postgres', 'SELECT 1');
			$ret == 0 && $out eq '1';
		};
		return 1 if $ok;
		Time::HiRes::sleep(0.2);
	}
	return 0;
}

=item set_settings($name => $value, ...)

C<ALTER SYSTEM SET webhooks.$name = $value> for each pair, a reload, then
tests that a new session sees the values: the postmaster has then re-read
the files and signalled the worker, which reloads at the top of its loop,
before it claims anything emitted later.

=cut

# change webhooks.* settings of the running node and wait for the reload
sub set_settings
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my (@kv) = @_;
	my (@alter, @check, @names);
	while (my ($k, $v) = splice(@kv, 0, 2))
	{
		push @alter, "ALTER SYSTEM SET webhooks.$k = " . lit($v) . ";";
		push @check, "current_setting('webhooks.$k') = " . lit($v);
		push @names, $k;
	}
	sq(join "\n", @alter);
	$test_node->reload;
	poll('SELECT ' . join(' AND ', @check), 'settings reloaded: ' . join(', ', @names));
	return;
}

=item log_since($offset)

The server log from byte C<$offset> on (take C<-s $node-E<gt>logfile> before).

=item wait_log_count($offset, $re, $n, $secs)

Polls (every 100 ms) the server log from C<$offset> until C<$re> matches at
least C<$n> times or C<$secs> seconds passed; returns the number of matches.

=cut

# the server log from byte $offset on
sub log_since
{
	my ($offset) = @_;
	return PostgreSQL::Test::Utils::slurp_file($test_node->logfile, $offset);
}

# wait until the log since $offset matches $re at least $n times; the count
sub wait_log_count
{
	my ($offset, $re, $n, $secs) = @_;
	my $deadline = Time::HiRes::time() + $secs;
	my $count;
	while (1)
	{
		$count = () = log_since($offset) =~ /$re/g;
		return $count if $count >= $n || Time::HiRes::time() > $deadline;
		Time::HiRes::sleep(0.1);
	}
}

=item msg_of($delivery_id), body_of($delivery_id), secret_of($webhook_name)

The webhook-id a delivery is sent with, its stored body, the current secret
of a webhook.

=cut

# the webhook-id a delivery is sent with
sub msg_of
{
	my ($id) = @_;
	return sq("SELECT msg_id FROM webhooks.all_deliveries WHERE id = $id");
}

# the body stored for a delivery
sub body_of
{
	my ($id) = @_;
	return sq("SELECT body FROM webhooks.all_deliveries WHERE id = $id");
}

# the current secret of a webhook
sub secret_of
{
	my ($name) = @_;
	return sq("SELECT secret FROM webhooks.webhooks WHERE name = " . lit($name));
}

=item emit($event_type, $n)

C<webhooks.emit()> of C<payload($event_type, $n)>; tests that it returns a
delivery id, and returns it.

=cut

# emit one event, return its delivery id
sub emit
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($type, $n) = @_;
	my $id = sq("SELECT webhooks.emit('$type', '" . payload($type, $n) . "')");
	Test::More::like($id, qr/^\d+$/, "emit $type #$n returns a delivery id");
	return $id;
}

=item make_webhook($rcv, $name, $event_type, $target)

A webhook for C<$event_type> created (and connection-tested) by
C<create_webhook> against C</ok/$name> of receiver C<$rcv>; when C<$target>
is given (and differs), it is then deactivated, pointed there and activated
by a direct UPDATE, which skips the connection test (for targets that fail
it, or are slow), not the URL validation.  Tests that it is active, adds its
secret to C<$rcv>'s and returns (id, secret).

=item deactivate($name)

C<webhooks.deactivate_webhook($name)>.

=cut

# create an active webhook, optionally pointed at a target that fails the connection test
=pod

=item waiting_ids()

The webhook-ids of every event waiting for delivery (queued or held
deliveries, and the events of unsplit batches), by webhook name: a hash
reference of name => [ids].  The upgrade tests take it before an update and
compare what arrives after.

=cut

# the webhook-ids of the waiting events, by webhook name
sub waiting_ids
{
	my %ids;
	for my $line (split /\n/, sq(<<'SQL'))
SELECT w.name, d.msg_id FROM webhooks.deliveries d JOIN webhooks.webhooks w ON w.id = d.webhook_id
 WHERE d.state IN ('pending', 'held')
UNION ALL
SELECT w.name, webhooks._batch_msg_id(b.first_msg_id, e.i - 1)
  FROM webhooks.event_batches b JOIN webhooks.webhooks w ON w.id = b.webhook_id,
       string_to_table(b.bodies, E'\n') WITH ORDINALITY AS e(body, i)
SQL
	{
		my ($name, $id) = split /\|/, $line;
		push @{ $ids{$name} }, $id;
	}
	return \%ids;
}

sub make_webhook
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($rcv, $name, $type, $target) = @_;
	my $create = $rcv->url("/ok/$name");
	sq("SELECT FROM webhooks.create_webhook('$name', '$type', " . lit($create) . ")");
	if (defined $target && $target ne $create)
	{
		sq( "SELECT FROM webhooks.deactivate_webhook('$name');"
			  . "SELECT FROM webhooks.update_webhook('$name', target_url => " . lit($target) . ");"
			  . "UPDATE webhooks.webhooks SET is_active = true WHERE name = '$name'");
	}
	my $id = sq("SELECT id FROM webhooks.webhooks WHERE name = '$name' AND is_active");
	Test::More::like($id, qr/^\d+$/, "webhook $name is active");
	my $secret = secret_of($name);
	$rcv->add_secret($secret);
	return ($id, $secret);
}

=pod

=item upgrade_fixture($rcv)

What the upgrade tests install before updating: table C<app.email_sends>
with a statement trigger for EmailSends, and active webhooks C<opens>
(EmailOpens), C<sends> (EmailSends) and C<bounces> (EmailBounces) to
C</ok/E<lt>nameE<gt>> of the receiver, whose secrets it learns.

=cut

sub upgrade_fixture
{
	my ($rcv) = @_;
	sq(<<'SQL');
CREATE SCHEMA app;
CREATE TABLE app.email_sends (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER sends_webhook AFTER INSERT ON app.email_sends
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailSends');
SQL
	for my $w ([ 'opens', 'EmailOpens' ], [ 'sends', 'EmailSends' ], [ 'bounces', 'EmailBounces' ])
	{
		sq("SELECT webhooks.create_webhook('$w->[0]', '$w->[1]', '" . $rcv->url("/ok/$w->[0]") . "')");
		$rcv->add_secret(sq("SELECT secret FROM webhooks.webhooks WHERE name = '$w->[0]'"));
	}
	return;
}

=pod

=item latest_version()

The extension's current version: C<default_version> of F<webhooks.control>,
what C<CREATE EXTENSION webhooks> installs and the library needs.

=cut

sub latest_version
{
	my $control = "$test_dir/../webhooks.control";
	open(my $fh, '<', $control) or croak "cannot read $control: $!";
	while (my $line = <$fh>)
	{
		return $1 if $line =~ /^default_version\s*=\s*'([^']+)'/;
	}
	croak "no default_version in $control";
}

=pod

=item most_at_once(\@arrivals, $seconds)

The most requests that were at the receiver at the same time, when each
stays C<$seconds> after its arrival time (C<t> of the receiver's log).

=cut

sub most_at_once
{
	my ($t, $secs) = @_;
	my $max = 0;
	for my $ti (@$t)
	{
		my $n = grep { $_ <= $ti && $ti < $_ + $secs } @$t;
		$max = $n if $n > $max;
	}
	return $max;
}

# deactivate a webhook
sub deactivate
{
	my ($name) = @_;
	sq("SELECT FROM webhooks.deactivate_webhook('$name')");
	return;
}

# the HMAC key of a whsec_ secret
sub _key
{
	my ($secret) = @_;
	(my $b64 = $secret) =~ s/^whsec_//;
	return decode_base64($b64);
}

# the bytes that are signed: id.timestamp.body
sub _signed_content
{
	my @parts = @_;
	for (@parts)
	{
		$_ //= '';
		utf8::encode($_) if utf8::is_utf8($_);
	}
	return join '.', @parts;
}

=pod

=back

=head1 RECEIVER METHODS (WebhooksTest::Receiver)

=over

=item ->port, ->url($path), ->dir, ->log_file, ->pid

C<url> returns C<https://127.0.0.1:PORT$path> (C<$path> defaults to C</>).

=item ->requests

The logged requests, oldest first: a list in list context, an array ref in
scalar context.  Each is a hash ref with the keys of F<receiver.py>'s log:
C<t> (epoch seconds, float), C<method>, C<path> (with query string),
C<headers> (lower-cased names), C<body>, C<sig_ok>, C<sig_ok_by_secret>,
C<ts_ok>, C<status>, C<conn>, C<n_on_conn>, C<body_len>.  C<body> is the exact
bytes received (a byte string: compare with literals of a script without
C<use utf8>, or C<decode_json> it).  JSON booleans are JSON::PP::Boolean
(true/false in boolean context, 1/0 as numbers); JSON null is undef
(C<sig_ok> is undef when the receiver has no secret).

B<Context>: C<my @r = $rcv-E<gt>requests> and C<my $r = $rcv-E<gt>requests>
both work, but C<scalar($rcv-E<gt>requests)> is an array ref, not a count:
count with C<scalar(@{ $rcv-E<gt>requests })> or C<-E<gt>count>.  The same holds
for C<wait_for_requests>.

=item ->count($filter)

The number of logged requests (matching C<$filter>, as below), without waiting.

=item ->wait_for_requests($n, $timeout_s, $filter)

Polls the log every 50 ms until at least C<$n> requests (matching C<$filter>
if given) are there, or C<$timeout_s> (default
C<$PostgreSQL::Test::Utils::timeout_default>, 180 s) passed.  Returns the
(matching) requests like C<-E<gt>requests>, so possibly fewer than C<$n> on
timeout, which is also reported with C<diag>.  C<$filter> is a path prefix
string, a C<qr//> matched against the path, or a code ref called with the
request.

=item ->clear_log

Empties the log (flaky counters and connection numbers are kept).

=item ->set_secret(@secrets)

Replaces the secrets the receiver verifies with (it re-reads them on every
request); with no argument, clears them (C<sig_ok> becomes undef).

=item ->add_secret(@secrets)

Adds secrets to those the receiver verifies with.

=item ->stop

SIGTERM, then waits (SIGKILL after 10 s).  Returns the wait status (0 for a
clean exit), or undef if it was already stopped.  Called automatically.

=back

=cut

package WebhooksTest::Receiver;

use strict;
use warnings;

use Carp;
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();

# Weak references to every running receiver, stopped in END.
my %running;

# start receiver.py (or h2receiver.py) and wait for its port file
sub _start
{
	my ($class, %opt) = @_;
	my $kind = $opt{cert} // 'server';
	croak "unknown cert kind '$kind'" unless $cert_kinds{$kind};

	my $certs = WebhooksTest::certs_dir();
	my $dir   = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir('receiver'));
	my $self  = bless {
		dir         => $dir,
		cert        => $kind,
		port_file   => "$dir/port",
		log_file    => "$dir/requests.jsonl",
		secret_file => "$dir/secrets",
		stderr_file => "$dir/receiver.log",
		owner       => $$,
	}, $class;

	# create the log up front, so ->requests never races its creation
	open my $fh, '>', $self->{log_file} or croak "$self->{log_file}: $!";
	close $fh;
	$self->set_secret(
		!defined $opt{secret} ? ()
		: ref $opt{secret} eq 'ARRAY' ? @{ $opt{secret} }
		:                                ($opt{secret}));

	my @cmd = $opt{http2}
	  ? (
		$python, "$test_dir/h2receiver.py",
		'--cert'      => "$certs/$kind.crt",
		'--key'       => "$certs/$kind.key",
		'--port-file' => $self->{port_file},
		'--log'       => $self->{log_file},
		'--exit-with-parent',
		($opt{early} ? ('--early') : ()))
	  : (
		$python, "$test_dir/receiver.py",
		'--cert'        => "$certs/$kind.crt",
		'--key'         => "$certs/$kind.key",
		'--port-file'   => $self->{port_file},
		'--log'         => $self->{log_file},
		'--secret-file' => $self->{secret_file},
		'--host'        => '127.0.0.1',
		'--port'        => $opt{port} // 0,
		'--exit-with-parent',
		($opt{verbose} ? ('--verbose') : ()));

	my $pid = fork;
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# child: never return into the test script (no END blocks)
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $self->{stderr_file};
		open STDERR, '>&', \*STDOUT;
		{ exec { $cmd[0] } @cmd; }
		print STDERR "exec $cmd[0]: $!\n";
		POSIX::_exit(127);
	}
	$self->{pid} = $pid;
	$running{ Scalar::Util::refaddr($self) } = $self;
	Scalar::Util::weaken($running{ Scalar::Util::refaddr($self) });

	my $deadline = Time::HiRes::time() + 10;
	while (1)
	{
		if (-s $self->{port_file})
		{
			open my $pf, '<', $self->{port_file}
			  or croak "$self->{port_file}: $!";
			my $port = <$pf>;
			close $pf;
			if (defined $port && $port =~ /^(\d+)\s*$/)
			{
				$self->{port} = $1;
				last;
			}
		}
		my $gone = waitpid($pid, POSIX::WNOHANG());
		if ($gone == $pid || Time::HiRes::time() > $deadline)
		{
			my $why =
			  $gone == $pid ? "exited with status $?" : 'did not start in 10 s';
			local $?;
			$self->stop;
			croak "receiver ($kind) $why:\n"
			  . PostgreSQL::Test::Utils::slurp_file($self->{stderr_file});
		}
		Time::HiRes::sleep(0.05);
	}
	Test::More::note("receiver ($kind) pid $pid on port $self->{port}, dir $dir");
	return $self;
}

# the receiver's port, directory, request log and pid
sub port     { return $_[0]{port} }
sub dir      { return $_[0]{dir} }
sub log_file { return $_[0]{log_file} }
sub pid      { return $_[0]{pid} }

# https://127.0.0.1:PORT$path
sub url
{
	my ($self, $path) = @_;
	$path //= '/';
	$path = "/$path" unless $path =~ m{^/};
	return "https://127.0.0.1:$self->{port}$path";
}

# the logged requests, parsed
sub requests
{
	my ($self) = @_;
	my @out;
	if (open my $fh, '<:raw', $self->{log_file})
	{
		local $/ = "\n";
		while (my $line = <$fh>)
		{
			# a line without its newline is still being written
			last unless $line =~ /\n\z/;
			my $r = JSON::PP::decode_json($line);
			$r->{body} = decode_base64($r->{body_b64})
			  if defined $r->{body_b64};
			push @out, $r;
		}
		close $fh;
	}
	return wantarray ? @out : \@out;
}

# a request filter (undef, path prefix, qr// or code ref) as a code ref
sub _matcher
{
	my ($filter) = @_;
	return sub { 1 }
	  unless defined $filter;
	return $filter if ref $filter eq 'CODE';
	return sub { $_[0]{path} =~ $filter }
	  if ref $filter eq 'Regexp';
	return sub { index($_[0]{path}, $filter) == 0 };
}

# the number of logged requests matching a filter
sub count
{
	my ($self, $filter) = @_;
	my $match = _matcher($filter);
	return scalar(grep { $match->($_) } $self->requests);
}

# wait until $n requests match a filter; those that do
sub wait_for_requests
{
	my ($self, $n, $timeout, $filter) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $match    = _matcher($filter);
	my $deadline = Time::HiRes::time() + $timeout;
	my @got;
	while (1)
	{
		@got = grep { $match->($_) } $self->requests;
		last if @got >= $n;
		if (Time::HiRes::time() > $deadline)
		{
			Test::More::diag(
				"receiver ($self->{cert}): waited ${timeout}s for $n requests"
				  . (defined $filter ? " matching $filter" : '')
				  . ", got " . scalar(@got));
			last;
		}
		Time::HiRes::sleep(0.05);
	}
	return wantarray ? @got : \@got;
}

# empty the request log
sub clear_log
{
	my ($self) = @_;
	# the receiver appends (O_APPEND), so it continues at the new end
	truncate($self->{log_file}, 0) or croak "truncate $self->{log_file}: $!";
	return;
}

# replace the secrets the receiver verifies with
sub set_secret
{
	my ($self, @secrets) = @_;
	$self->{secrets} = [@secrets];
	my $tmp = "$self->{secret_file}.tmp";
	open my $fh, '>', $tmp or croak "$tmp: $!";
	print $fh map { "$_\n" } @secrets;
	close $fh or croak "$tmp: $!";
	rename $tmp, $self->{secret_file}
	  or croak "rename $tmp: $!";
	return;
}

# add to the secrets the receiver verifies with
sub add_secret
{
	my ($self, @secrets) = @_;
	$self->set_secret(@{ $self->{secrets} }, @secrets);
	return;
}

# stop the receiver; its wait status
sub stop
{
	my ($self) = @_;
	my $pid = delete $self->{pid};
	delete $running{ Scalar::Util::refaddr($self) };
	return undef unless $pid && $self->{owner} == $$;

	local $?;
	kill 'TERM', $pid;
	my $deadline = Time::HiRes::time() + 10;
	my $status;
	while (1)
	{
		my $r = waitpid($pid, POSIX::WNOHANG());
		if ($r == $pid)
		{
			$status = $?;
			last;
		}
		last if $r == -1;    # already reaped
		if (Time::HiRes::time() > $deadline)
		{
			kill 'KILL', $pid;
			waitpid($pid, 0);
			$status = $?;
			last;
		}
		Time::HiRes::sleep(0.02);
	}
	return $status;
}

# stop the receiver when its object goes away
sub DESTROY
{
	my ($self) = @_;
	local ($?, $!, $@);
	$self->stop if $self->{pid};
	return;
}

END
{
	# keep the test script's exit status
	local ($?, $!, $@);
	for my $r (grep { defined } values %running)
	{
		$r->stop;
	}
}

1;
