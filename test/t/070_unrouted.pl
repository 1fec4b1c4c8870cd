# Events that found no active webhook are counted (webhooks.unrouted_events):
# - per database: two databases' counts never mix;
# - durably: the worker's maintenance saves its database's counts, which
#   then survive a restart (what came after the last save is lost);
# - after a restart, new counts add to the saved ones.
# Maintenance runs when the worker starts and every minute after; the test
# restarts the worker (pg_terminate_backend) instead of waiting a minute.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $node = new_node('unrouted');

sub sq { my ($db, $sql) = @_; return $node->safe_psql($db, $sql); }

# the event types with a count, e.g. "EmailClicks=4,EmailOpens=3"
sub counts
{
	my ($db) = @_;
	return sq($db,
		"SELECT coalesce(string_agg(event_type || '=' || events, ',' ORDER BY event_type), '') "
		  . "FROM webhooks.unrouted_events WHERE events > 0");
}

sub emit
{
	my ($db, $type, $n) = @_;
	sq($db,
		"SELECT count(webhooks.emit('$type', '{\"messageId\": 1, \"subscriberId\": 2, \"subscriberEmail\": \"a\@b.c\"}')) "
		  . "FROM generate_series(1, $n)");
}

sub restart_worker
{
	my $old = sq('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker'");
	sq('postgres', "SELECT pg_terminate_backend($old)");
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND pid <> $old"),
		'the worker comes back');
}

sub saved
{
	my ($db) = @_;
	return sq($db,
		"SELECT coalesce(string_agg(event_type || '=' || events, ',' ORDER BY event_type), '') "
		  . "FROM webhooks.unrouted_event_totals WHERE events > 0");
}

# --- two databases ---------------------------------------------------------
sq('postgres', <<'SQL');
CREATE TABLE email_clicks (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER clicks_webhook AFTER INSERT ON email_clicks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
INSERT INTO email_clicks SELECT i, i, 'c@example.com' FROM generate_series(1, 4) i;
SQL
emit('postgres', 'EmailOpens', 3);
sq('postgres', 'CREATE DATABASE other');
sq('other', 'CREATE EXTENSION webhooks');
emit('other', 'EmailOpens', 2);
emit('other', 'EmailBounces', 1);
is(counts('postgres'), 'EmailClicks=4,EmailOpens=3', 'database postgres counts its own events');
is(counts('other'), 'EmailBounces=1,EmailOpens=2', 'database other counts its own events');

# --- saved by the worker, kept across a restart ------------------------------
restart_worker();
ok( $node->poll_query_until('postgres',
		"SELECT sum(events) = 7 FROM webhooks.unrouted_event_totals"),
	'the worker saves the counts of its database');
is(saved('postgres'), 'EmailClicks=4,EmailOpens=3', 'and only those');
is(counts('postgres'), 'EmailClicks=4,EmailOpens=3', 'saving changes no total');
is(saved('other'), '', 'nothing is saved in a database the worker does not serve');
emit('postgres', 'EmailOpens', 1);
is(counts('postgres'), 'EmailClicks=4,EmailOpens=4', 'an event after the save is shown at once');

$node->restart;
is(counts('postgres'), 'EmailClicks=4,EmailOpens=3',
	'after a restart: the saved counts, without what came after the save');
# until each database has its own worker (issue 9), other databases' counts
# live in shared memory only
is(counts('other'), '', 'a database the worker does not serve starts from zero');

# --- new counts add to the saved ones ------------------------------------------
emit('postgres', 'EmailOpens', 2);
emit('other', 'EmailOpens', 1);
is(counts('postgres'), 'EmailClicks=4,EmailOpens=5', 'counts after the restart add to the saved ones');
restart_worker();
ok( $node->poll_query_until('postgres',
		"SELECT events = 5 FROM webhooks.unrouted_event_totals WHERE event_type = 'EmailOpens'"),
	'the worker saves them');
is(counts('postgres'), 'EmailClicks=4,EmailOpens=5', 'saved once, counted once');
is(counts('other'), 'EmailOpens=1', 'database other still counts only its own');

$node->stop;
done_testing();
