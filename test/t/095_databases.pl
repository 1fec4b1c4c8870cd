# Issue 12, point 1: a launcher starts a delivery worker in every database
# that has the extension, with no configuration.
#
# - One launcher (backend_type "webhooks launcher", no database); a worker
#   (backend_type "webhooks worker", datname set) per database with the
#   extension, none elsewhere.
# - CREATE EXTENSION starts the database's worker, DROP EXTENSION stops it,
#   over several cycles; three databases deliver to one receiver at once,
#   each its own webhooks and events.
# - DROP DATABASE (without FORCE) while the others deliver, ALTER DATABASE
#   ... RENAME and CREATE DATABASE ... TEMPLATE of a database with a worker
#   all succeed; the renamed database keeps delivering and the copy gets a
#   worker of its own.
# - A worker killed is started again; events queued meanwhile arrive.
# - max_worker_processes reached: CREATE EXTENSION warns, the launcher logs
#   the database, its events wait (nothing lost) and are delivered once a
#   slot is free.
# - webhooks.databases leaves the databases not listed alone.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('databases', all_databases => 1);

# the databases with a worker, by name
sub workers
{
	my ($n) = @_;
	$n //= $node;
	return $n->safe_psql('postgres',
		"SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '')
           FROM pg_stat_activity WHERE backend_type = 'webhooks worker'");
}

# wait until the databases with a worker are $want; the seconds it took
sub wait_workers
{
	my ($want, $what, $n) = @_;
	my $t0 = time;
	my $got;
	while (($got = workers($n)) ne $want && time - $t0 < 30)
	{
		sleep 0.05;
	}
	is($got, $want, $what);
	return time - $t0;
}

# a webhook in database $db for EmailOpens, to /ok/<name>
sub hook
{
	my ($db, $name, $n) = @_;
	$n //= $node;
	$n->safe_psql($db,
		"SELECT FROM webhooks.create_webhook('$name', 'EmailOpens', " . lit($rcv->url("/ok/$name")) . ")");
	$rcv->add_secret($n->safe_psql($db, "SELECT secret FROM webhooks.webhooks WHERE name = '$name'"));
}

# $count events emitted in $db, one transaction each, message ids from $first
sub emit_in
{
	my ($db, $first, $count, $n) = @_;
	$n //= $node;
	$n->safe_psql($db,
		join('', map { "SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', $_) . "');\n" }
			  $first .. $first + $count - 1));
}

# how many deliveries arrived for webhook $name (not the connection tests)
sub arrived
{
	my ($name) = @_;
	return scalar(grep { $_->{path} eq "/ok/$name" && ($_->{headers}{'webhook-id'} // '') !~ /^msg_test_/ }
		  $rcv->requests);
}

sub wait_arrived
{
	my ($name, $count, $what) = @_;
	my $t0 = time;
	sleep 0.05 while arrived($name) < $count && time - $t0 < 60;
	is(arrived($name), $count, $what);
}

########################################################################
# one launcher, one worker per database with the extension
########################################################################
is( sq("SELECT count(*) || ' ' || count(datname) FROM pg_stat_activity WHERE backend_type = 'webhooks launcher'"),
	'1 0', 'one launcher, connected to no database');
wait_workers('postgres', 'a worker in postgres, the database with the extension');

sq("CREATE DATABASE a");
sq("CREATE DATABASE b");
sq("CREATE DATABASE c");
# they have no extension: a worker started for a look leaves
wait_workers('postgres', 'none in databases without the extension');

for my $db (qw(a b c))
{
	my $t0 = time;
	$node->safe_psql($db, 'CREATE EXTENSION webhooks');
	my $t = wait_workers(join(',', sort('postgres', grep { $_ le $db } qw(a b c))),
		"CREATE EXTENSION in $db starts its worker");
	diag(sprintf('worker of %s serving %.2f s after CREATE EXTENSION', $db, $t));
}

########################################################################
# three databases deliver at once, each its own webhooks
########################################################################
hook($_, "hook_$_") for qw(a b c);
emit_in($_, 1, 30) for qw(a b c);
wait_arrived("hook_$_", 30, "database $_: its 30 events delivered to its webhook") for qw(a b c);
for my $db (qw(a b c))
{
	is($node->safe_psql($db, "SELECT count(*) FROM webhooks.delivery_history WHERE state = 'delivered'"),
		'30', "database $db records its 30 deliveries");
}

########################################################################
# DROP DATABASE, without FORCE, while the others deliver
########################################################################
emit_in('a', 101, 200);
emit_in('c', 101, 200);
emit_in('b', 101, 5);
# a role that may not drop it cannot stop its worker by trying
my $pid_b = sq("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = 'b'");
sq('CREATE ROLE mallory LOGIN CREATEDB');
my ($ret, $out, $err);
for my $cmd ('DROP DATABASE b', 'ALTER DATABASE b RENAME TO bb', 'CREATE DATABASE bcopy TEMPLATE b')
{
	($ret, $out, $err) = $node->psql('postgres', $cmd, extra_params => [ '-U', 'mallory' ]);
	like($err, qr/must be owner of database b|permission denied to copy database "b"/,
		"$cmd: refused to a role that does not own b");
}
is(sq("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = 'b'"),
	$pid_b, 'and its attempts (DROP, RENAME, a copy) leave the worker of b running');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE b');
is($ret, 0, 'DROP DATABASE of a database with a worker succeeds') or diag($err);
wait_workers('a,c,postgres', 'its worker is gone, the others run');
wait_arrived('hook_a', 230, 'database a delivered all its events meanwhile');
wait_arrived('hook_c', 230, 'database c delivered all its events meanwhile');

########################################################################
# DROP EXTENSION and CREATE EXTENSION again, three times
########################################################################
for my $cycle (1 .. 3)
{
	$node->safe_psql('a', 'DROP EXTENSION webhooks');
	wait_workers('c,postgres', "cycle $cycle: DROP EXTENSION stops the worker of a");
	$node->safe_psql('a', 'CREATE EXTENSION webhooks');
	wait_workers('a,c,postgres', "cycle $cycle: CREATE EXTENSION starts it again");
	hook('a', "hook_a$cycle");
	emit_in('a', 1000 * $cycle, 3);
	wait_arrived("hook_a$cycle", 3, "cycle $cycle: the new install delivers");
}

########################################################################
# ALTER DATABASE ... RENAME, CREATE DATABASE ... TEMPLATE
########################################################################
($ret, $out, $err) = $node->psql('postgres', 'ALTER DATABASE c RENAME TO c2');
is($ret, 0, 'ALTER DATABASE RENAME of a database with a worker succeeds') or diag($err);
wait_workers('a,c2,postgres', 'the renamed database has its worker again');
emit_in('c2', 501, 5);
wait_arrived('hook_c', 235, 'and delivers');

($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE d TEMPLATE c2');
is($ret, 0, 'CREATE DATABASE ... TEMPLATE of a database with a worker succeeds') or diag($err);
wait_workers('a,c2,d,postgres', 'the copy gets a worker of its own, the template its own again');
$node->safe_psql('d', "SELECT webhooks.create_webhook('hook_d', 'EmailClicks', " . lit($rcv->url('/ok/hook_d')) . ")");
$rcv->add_secret($node->safe_psql('d', "SELECT secret FROM webhooks.webhooks WHERE name = 'hook_d'"));
$node->safe_psql('d', "SELECT webhooks.emit('EmailClicks', '" . payload('EmailClicks', 1) . "')");
wait_arrived('hook_d', 1, 'the copy delivers its own events');
is($node->safe_psql('d', "SELECT count(*) FROM webhooks.webhooks"), '2', 'with the webhooks it was copied with');

########################################################################
# a worker killed comes back; nothing queued meanwhile is lost
########################################################################
my $pid = sq("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = 'a'");
is(sq("SELECT pg_terminate_backend($pid)"), 't', 'the worker of a is terminated');
emit_in('a', 5000, 10);
$node->poll_query_until('postgres',
	"SELECT pid <> $pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = 'a'")
  or diag('no new worker in a');
wait_workers('a,c2,d,postgres', 'the launcher starts it again');
wait_arrived('hook_a3', 13, 'and the events queued meanwhile arrive');

########################################################################
# max_worker_processes reached
########################################################################
# the launcher and one worker: postgres takes the slot
my $full = new_node('full', all_databases => 1,
	conf => [ 'max_worker_processes = 2', 'max_logical_replication_workers = 0', 'max_parallel_workers = 0' ]);
wait_workers('postgres', 'the one worker slot serves postgres', $full);
my $offset = -s $full->logfile;
$full->safe_psql('postgres', 'CREATE DATABASE x');
($ret, $out, $err) = $full->psql('x', 'CREATE EXTENSION webhooks');
is($ret, 0, 'CREATE EXTENSION succeeds with every worker slot taken');
like($err, qr/WARNING:  no delivery worker could be started for database "x"/,
	'and warns that no worker could be started');
like($err, qr/max_worker_processes/, 'naming max_worker_processes');
my $t0 = time;
sleep 0.1 until slurp_file($full->logfile, $offset) =~ /no delivery worker for database "x"/ || time - $t0 > 10;
like(slurp_file($full->logfile, $offset), qr/webhooks launcher: no delivery worker for database "x"/,
	'the launcher logs the database without a worker');
hook('x', 'hook_x', $full);
emit_in('x', 1, 4, $full);
sleep 1;
is(arrived('hook_x'), 0, 'its events wait');
is($full->safe_psql('x', "SELECT count(*) FROM webhooks.deliveries WHERE state = 'pending'"),
	'4', 'queued, not lost');
$full->safe_psql('postgres', 'DROP EXTENSION webhooks');
wait_workers('x', 'a slot is free: the launcher starts the worker of x', $full);
wait_arrived('hook_x', 4, 'which delivers the events that waited');
$full->stop;

########################################################################
# webhooks.databases: only the databases listed
########################################################################
my $listed = new_node('listed', conf => "webhooks.databases = 'postgres, app'", all_databases => 1);
$listed->safe_psql('postgres', 'CREATE DATABASE app');
$listed->safe_psql('postgres', 'CREATE DATABASE other');
$listed->safe_psql('app', 'CREATE EXTENSION webhooks');
($ret, $out, $err) = $listed->psql('other', 'CREATE EXTENSION webhooks');
like($err, qr/NOTICE:  no delivery worker serves database "other": it is not in webhooks.databases/,
	'CREATE EXTENSION in a database not listed says that no worker serves it');
hook('other', 'hook_other', $listed);
emit_in('other', 1, 2, $listed);
wait_workers('app,postgres', 'workers in the listed databases only', $listed);
sleep 1;
is(arrived('hook_other'), 0, 'the events of a database not listed wait');
$listed->stop;

$node->stop;
done_testing();
