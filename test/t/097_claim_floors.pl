# Claims start at each webhook's floor (issue 11: a snapshot held open).
#
# A claim reads a webhook's due rows from its floor, the due time of the
# first row it left (or the last it took) last time, so that with a
# snapshot held open it does not walk the index entries of every row
# delivered since; full claims from the start, at most 20 times their cost
# apart (10 s at most), find the rows that become due below a floor.  What
# the floors save is measured by the soak (test/bench/soak.sh, snapshot
# phase); this file checks that nothing is left behind by them:
#
# - an event whose transaction started before newer events were claimed,
#   and committed after (its due time is its transaction's start), is
#   delivered;
# - a due row that another session locks while newer ones are claimed (the
#   claim skips it) is delivered once the lock is gone;
# - the same two with a REPEATABLE READ snapshot held open, after thousands
#   of deliveries made under it (full claims are then expensive, so rare);
# - the same with two workers, each with its floors;
# - every event emitted meanwhile is delivered exactly once.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use WebhooksTest;

my $rcv = start_receiver();
my $node = new_node('claim_floors');
my ($opens) = make_webhook($rcv, 'opens', 'EmailOpens');

my $n = 0;    # messageIds, one per event

# emit $k events in one transaction; their delivery ids
sub emit_many
{
	my ($k) = @_;
	my $from = $n + 1;
	$n += $k;
	return split /\n/, sq(
		"SELECT webhooks.emit('EmailOpens', json_build_object('messageId', g, 'subscriberId', 2,
		        'subscriberEmail', 'a\@b.c')::jsonb) FROM generate_series($from, $n) g");
}

sub wait_delivered
{
	my ($ids, $what, $secs) = @_;
	my $list = join ',', @$ids;
	poll("SELECT count(*) = " . scalar(@$ids) . " FROM webhooks.all_deliveries
	       WHERE id IN ($list) AND state = 'delivered'", $what, $secs // 60);
}

# the late and the locked event, around newer deliveries; $label names the case
sub late_and_locked
{
	my ($label) = @_;

	# a transaction that starts now, emits, and commits after newer events were delivered
	my $late = $node->background_psql('postgres');
	$late->query_safe('BEGIN');
	my $late_id = $late->query_safe("SELECT webhooks.emit('EmailOpens', '" . payload('EmailOpens', ++$n) . "')");
	chomp $late_id;
	sleep(0.2);

	# a row locked by another session before it is due, and newer ones claimed past it
	my $locker = $node->background_psql('postgres');
	my $locked_id = sq(
		"INSERT INTO webhooks.deliveries (webhook_id, event_type, body, next_attempt_at)
		 VALUES ($opens, 'EmailOpens', webhooks.build_payload('EmailOpens', '" . payload('EmailOpens', ++$n) . "'),
		         clock_timestamp() + interval '1 second') RETURNING id");
	$locker->query_safe('BEGIN');
	$locker->query_safe("SELECT id FROM webhooks.deliveries WHERE id = $locked_id FOR UPDATE");
	sleep(1.2);    # it is due now: the claims skip it while it is locked
	my @newer = emit_many(200);
	wait_delivered(\@newer, "$label: 200 newer events delivered meanwhile");
	my $late_visible = sq("SELECT count(*) FROM webhooks.all_deliveries WHERE id = $late_id");
	is($late_visible, '0', "$label: the late event is not visible before its commit");

	$late->query_safe('COMMIT');
	$late->quit;
	wait_delivered([$late_id], "$label: the event committed after newer ones were claimed is delivered", 30);

	$locker->query_safe('ROLLBACK');
	$locker->quit;
	wait_delivered([$locked_id], "$label: the row skipped while locked is delivered once unlocked", 30);
}

########################################################################
# without a snapshot
########################################################################
my @first = emit_many(500);
wait_delivered(\@first, 'warm-up: 500 events delivered');
late_and_locked('no snapshot');

########################################################################
# with a REPEATABLE READ snapshot held open (a long pg_dump)
########################################################################
my $snap = $node->background_psql('postgres');
$snap->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$snap->query_safe('SELECT count(*) FROM webhooks.deliveries');
my @all;
for my $round (1 .. 5)
{
	my @ids = emit_many(1000);
	push @all, @ids;
	wait_delivered(\@ids, "snapshot held: round $round, 1,000 events delivered");
}
is(sq("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_xmin IS NOT NULL"),
	'1', 'the snapshot is still held');
late_and_locked('snapshot held');
$snap->query_safe('COMMIT');
$snap->quit;

########################################################################
# two workers, each with its floors
########################################################################
$node->append_conf('postgresql.conf', 'webhooks.workers_per_database = 2');
$node->reload;
poll("SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'webhooks worker'", 'two workers', 30);
late_and_locked('two workers');

########################################################################
# exactly once
########################################################################
is(sq("SELECT count(*) FROM webhooks.deliveries"), '0', 'the queue is empty');
is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE state <> 'delivered'"), '0',
	'every delivery was delivered');
my %seen;
$seen{ $_->{headers}{'webhook-id'} }++ for $rcv->requests(real('/ok/opens'));
my @sent = split /\n/, sq("SELECT msg_id FROM webhooks.all_deliveries");
is(scalar(@sent), $n, "$n deliveries for $n events");
is(scalar(grep { ($seen{$_} // 0) == 1 } @sent), $n, "each of the $n events arrived, once");

$node->stop;
done_testing();
