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

# the event types with a count in database $db, e.g. "EmailClicks=4,EmailOpens=3":
# the live counts (webhooks.unrouted_events), or those of $relation
sub counts
{
	my ($db, $relation) = @_;
	$relation //= 'unrouted_events';
	return sq(
		"SELECT coalesce(string_agg(event_type || '=' || events, ',' ORDER BY event_type), '') "
		  . "FROM webhooks.$relation WHERE events > 0",
		db => $db);
}

# the counts the worker saved in database $db
sub saved { return counts($_[0], 'unrouted_event_totals'); }

# emit $n events of $type in database $db
sub emit_many
{
	my ($db, $type, $n) = @_;
	sq( "SELECT count(webhooks.emit('$type', '{\"messageId\": 1, \"subscriberId\": 2, \"subscriberEmail\": \"a\@b.c\"}')) "
		  . "FROM generate_series(1, $n)",
		db => $db);
}

# --- two databases ---------------------------------------------------------
sq(<<'SQL');
CREATE TABLE email_clicks (message_id bigint, subscriber_id bigint, subscriber_email text);
CREATE TRIGGER clicks_webhook AFTER INSERT ON email_clicks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
INSERT INTO email_clicks SELECT i, i, 'c@example.com' FROM generate_series(1, 4) i;
SQL
emit_many('postgres', 'EmailOpens', 3);
sq('CREATE DATABASE other');
sq('CREATE EXTENSION webhooks', db => 'other');
emit_many('other', 'EmailOpens', 2);
emit_many('other', 'EmailBounces', 1);
is(counts('postgres'), 'EmailClicks=4,EmailOpens=3', 'database postgres counts its own events');
is(counts('other'), 'EmailBounces=1,EmailOpens=2', 'database other counts its own events');

# --- saved by the worker, kept across a restart ------------------------------
restart_worker();
poll("SELECT sum(events) = 7 FROM webhooks.unrouted_event_totals",
	'the worker saves the counts of its database');
is(saved('postgres'), 'EmailClicks=4,EmailOpens=3', 'and only those');
is(counts('postgres'), 'EmailClicks=4,EmailOpens=3', 'saving changes no total');
is(saved('other'), '', 'nothing is saved in a database the worker does not serve');
emit_many('postgres', 'EmailOpens', 1);
is(counts('postgres'), 'EmailClicks=4,EmailOpens=4', 'an event after the save is shown at once');

$node->restart;
is(counts('postgres'), 'EmailClicks=4,EmailOpens=3',
	'after a restart: the saved counts, without what came after the save');
# until each database has its own worker (issue 9), other databases' counts
# live in shared memory only
is(counts('other'), '', 'a database the worker does not serve starts from zero');

# --- new counts add to the saved ones ------------------------------------------
emit_many('postgres', 'EmailOpens', 2);
emit_many('other', 'EmailOpens', 1);
is(counts('postgres'), 'EmailClicks=4,EmailOpens=5', 'counts after the restart add to the saved ones');
restart_worker();
poll("SELECT events = 5 FROM webhooks.unrouted_event_totals WHERE event_type = 'EmailOpens'",
	'the worker saves them');
is(counts('postgres'), 'EmailClicks=4,EmailOpens=5', 'saved once, counted once');
is(counts('other'), 'EmailOpens=1', 'database other still counts only its own');

$node->stop;
done_testing();
