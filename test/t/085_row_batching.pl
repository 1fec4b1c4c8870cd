# The row trigger gathers a statement's events in backend memory and stores
# them when the statement ends: one webhooks.event_batches row for several
# events, a plain delivery row for one.  Here, against a real server and
# receiver: a 1,000-row INSERT becomes one batch and 1,000 deliveries with
# distinct webhook-ids derived from the batch's; a single row is a direct
# delivery; savepoints (ROLLBACK TO, RELEASE, a PL/pgSQL EXCEPTION block
# inside a statement) keep exactly the events of what committed; statements
# nested in a trigger; a deferred constraint trigger (stored at COMMIT and
# at PREPARE TRANSACTION); COPY FROM; a failing statement or a failing
# store fails the transaction and stores nothing; the memory of a long
# session stays flat.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WebhooksTest;

my $rcv  = start_receiver();
my $node = new_node('rowbatch',
	conf => [ "webhooks.retry_schedule = '1s, 1s'", 'max_prepared_transactions = 5' ]);

sq(<<'SQL');
CREATE SCHEMA app;
CREATE TABLE app.opens (id bigserial PRIMARY KEY, message_id bigint NOT NULL, subscriber_id bigint NOT NULL,
                        subscriber_email text NOT NULL UNIQUE, created_at timestamptz DEFAULT now());
CREATE TRIGGER opens_webhook AFTER INSERT ON app.opens
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
-- a statement nested in the trigger of another table
CREATE TABLE app.clicks (LIKE app.opens INCLUDING ALL);
CREATE TRIGGER clicks_webhook AFTER INSERT ON app.clicks
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
-- a deferred constraint trigger
CREATE TABLE app.deliveries (LIKE app.opens INCLUDING ALL);
CREATE CONSTRAINT TRIGGER deliveries_webhook AFTER INSERT ON app.deliveries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailDeliveries');

-- the events queued for a tag (a subscriber_email prefix): as delivery rows,
-- as events inside batch rows, and the number of batch rows holding them
CREATE FUNCTION app.queued(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM webhooks.all_deliveries
             WHERE body LIKE '%"subscriberEmail":"' || tag || '%')
           || '/' ||
           (SELECT count(*) FROM webhooks.event_batches b, string_to_table(b.bodies, E'\n') x
             WHERE x LIKE '%"subscriberEmail":"' || tag || '%')
           || '/' ||
           (SELECT count(*) FROM webhooks.event_batches b
             WHERE b.bodies LIKE '%"subscriberEmail":"' || tag || '%')
$$;
-- queued events of a tag, either form
CREATE FUNCTION app.total(tag text) RETURNS bigint LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM webhooks.all_deliveries
             WHERE body LIKE '%"subscriberEmail":"' || tag || '%')
           + (SELECT count(*) FROM webhooks.event_batches b, string_to_table(b.bodies, E'\n') x
               WHERE x LIKE '%"subscriberEmail":"' || tag || '%')
$$;
-- delivered events of a tag
CREATE FUNCTION app.delivered(tag text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM webhooks.all_deliveries
     WHERE state = 'delivered' AND body LIKE '%"subscriberEmail":"' || tag || '%'
$$;
SQL
make_webhook($rcv, 'opens',  'EmailOpens');
make_webhook($rcv, 'clicks', 'EmailClicks');
make_webhook($rcv, 'deliv',  'EmailDeliveries');

# rows of app.TABLE tagged TAG, numbered FROM .. TO
sub rows
{
	my ($table, $tag, $from, $to) = @_;
	return "INSERT INTO app.$table (message_id, subscriber_id, subscriber_email)
	        SELECT g, g, '$tag' || g || '\@example.com' FROM generate_series($from, $to) g;";
}

# ---------------------------------------------------------------------------
# 1,000 rows: one batch, visible in the transaction, 1,000 deliveries
# ---------------------------------------------------------------------------
my $in_xact = sq("BEGIN; " . rows('opens', 'big-', 1, 1000)
	  . "SELECT app.queued('big-'); SELECT pending FROM webhooks.webhook_stats WHERE webhook_name = 'opens';"
	  . "SELECT first_msg_id FROM webhooks.event_batches WHERE bodies LIKE '%big-1\@%';"
	  . "COMMIT;");
my ($queued, $pending, $first_msg) = split /\n/, $in_xact;
is($queued, '0/1000/1', 'a 1,000-row INSERT is one batch row of 1,000 events, visible in its transaction');
is($pending, '1000', "webhook_stats counts the statement's events as pending before COMMIT");
poll("SELECT app.delivered('big-') = 1000", 'all 1,000 events are delivered');
is(sq("SELECT count(DISTINCT msg_id) FROM webhooks.all_deliveries WHERE body LIKE '%\"big-%'"),
	'1000', 'with 1,000 distinct webhook-ids');
is( $first_msg =~ /^msg_/
	? sq("SELECT count(*) FROM webhooks.all_deliveries d, generate_series(0, 999) i
           WHERE d.body LIKE '%\"big-%' AND d.msg_id = webhooks._batch_msg_id('$first_msg', i)")
	: 'no batch',
	'1000', "derived from the batch's first_msg_id");
my @big = grep { ($_->{body} // '') =~ /"subscriberEmail":"big-/ } $rcv->wait_for_requests(1000, 60, real('/ok/opens'));
my %ids = map { $_->{headers}{'webhook-id'} => 1 } @big;
is(scalar(keys %ids), 1000, 'the receiver got 1,000 distinct webhook-ids');
my $secret = secret_of('opens');
is( scalar(grep { verify_request($secret, $_) } @big),
	scalar(@big), 'every request is signed');

# ---------------------------------------------------------------------------
# one row: a direct delivery, no batch to split
# ---------------------------------------------------------------------------
is(sq("BEGIN; " . rows('opens', 'one-', 1, 1) . "SELECT app.queued('one-'); COMMIT;"),
	'1/0/0', 'a single-row INSERT stores one delivery row, not a batch');
poll("SELECT app.delivered('one-') = 1", 'and it is delivered');

# ---------------------------------------------------------------------------
# savepoints
# ---------------------------------------------------------------------------
is( sq(   "BEGIN; "
		  . rows('opens', 'sp-a', 1, 3)
		  . "SAVEPOINT s1; "
		  . rows('opens', 'sp-b', 1, 5)
		  . "ROLLBACK TO SAVEPOINT s1; "
		  . rows('opens', 'sp-c', 1, 2)
		  . "SAVEPOINT s2; "
		  . rows('opens', 'sp-d', 1, 4)
		  . "RELEASE SAVEPOINT s2; "
		  . "SELECT app.queued('sp-a') || ' ' || app.queued('sp-b') || ' ' || app.queued('sp-c') || ' ' || app.queued('sp-d');"
		  . "COMMIT;"),
	'0/3/1 0/0/0 0/2/1 0/4/1',
	'ROLLBACK TO SAVEPOINT drops only its rows; RELEASE keeps them');
poll("SELECT app.delivered('sp-') = 9", 'the 9 kept events are delivered');

# a statement that fails after its rows were gathered, inside a savepoint:
# the gathered rows go with it (app.opens.subscriber_email is unique)
sq("CREATE FUNCTION app.fail_on_3() RETURNS trigger LANGUAGE plpgsql AS \$\$
    BEGIN
        IF NEW.subscriber_id = 3 THEN RAISE EXCEPTION 'row 3'; END IF;
        RETURN NULL;
    END \$\$;
    CREATE TRIGGER zz_fail AFTER INSERT ON app.opens FOR EACH ROW
        WHEN (NEW.subscriber_email LIKE 'fail-%') EXECUTE FUNCTION app.fail_on_3();");
my $r = psql_error($node,
	    "BEGIN; "
	  . rows('opens', 'sv-ok', 1, 4)
	  . "SAVEPOINT s; "
	  . rows('opens', 'fail-', 1, 5) . "\n"
	  . "ROLLBACK TO SAVEPOINT s; "
	  . "SELECT app.queued('sv-ok') || ' ' || app.queued('fail-'); COMMIT;",
	on_error_stop => 0);
like($r->{stderr}, qr/row 3/, 'the statement in the savepoint fails in a later trigger');
is($r->{stdout}, '0/4/1 0/0/0', 'its gathered rows are never stored, the parent\'s are');
sq("DROP TRIGGER zz_fail ON app.opens");

# a PL/pgSQL EXCEPTION block inside one statement: the rows the statement
# gathered before the block must survive the block's rollback, the block's
# own rows must not
sq(<<'SQL');
CREATE FUNCTION app.click_each_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.subscriber_email LIKE 'nest-%' THEN
        BEGIN
            INSERT INTO app.clicks (message_id, subscriber_id, subscriber_email)
            VALUES (NEW.message_id, NEW.subscriber_id, 'blk-' || NEW.subscriber_email);
            INSERT INTO app.opens (message_id, subscriber_id, subscriber_email)
            VALUES (NEW.message_id, NEW.subscriber_id, 'blkopen-' || NEW.subscriber_email);
            IF NEW.subscriber_id % 2 = 0 THEN
                RAISE EXCEPTION 'roll back the block';
            END IF;
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER zz_click AFTER INSERT ON app.opens FOR EACH ROW EXECUTE FUNCTION app.click_each_open();
SQL
is( sq(   "BEGIN; "
		  . rows('opens', 'nest-', 1, 10)
		  . "SELECT app.queued('nest-') || ' ' || app.queued('blk-nest-') || ' ' || app.queued('blkopen-nest-'); COMMIT;"
	),
	'0/10/1 5/0/0 5/0/0',
	'nested statements in an EXCEPTION block: the outer rows all stored, the rolled-back blocks\' rows not');
poll("SELECT app.delivered('nest-') = 10 AND app.delivered('blk-nest-') = 5 AND app.delivered('blkopen-nest-') = 5",
	'and exactly those are delivered');
sq("DROP TRIGGER zz_click ON app.opens");

# nested statements without a savepoint: 100 opens, each inserting a click
sq("CREATE OR REPLACE FUNCTION app.click_each_open2() RETURNS trigger LANGUAGE plpgsql AS \$\$
    BEGIN
        INSERT INTO app.clicks (message_id, subscriber_id, subscriber_email)
        VALUES (NEW.message_id, NEW.subscriber_id, 'n2c-' || NEW.subscriber_email);
        RETURN NULL;
    END \$\$;
    CREATE TRIGGER zz_click2 AFTER INSERT ON app.opens FOR EACH ROW
        WHEN (NEW.subscriber_email LIKE 'n2-%') EXECUTE FUNCTION app.click_each_open2();");
# (each nested INSERT stores its own event at its end, a delivery row; the
# outer INSERT's 100 events wait for the outer statement's end: one batch)
is( sq(   "BEGIN; " . rows('opens', 'n2-', 1, 100)
		. "SELECT app.queued('n2-') || ' ' || app.queued('n2c-'); COMMIT;"),
	'0/100/1 100/0/0',
	'an INSERT whose trigger inserts into another table: each statement stores its own events');
poll("SELECT app.delivered('n2-') = 100 AND app.delivered('n2c-') = 100", 'and delivers them all');
sq("DROP TRIGGER zz_click2 ON app.opens");

# ---------------------------------------------------------------------------
# a deferred constraint trigger: gathered at COMMIT, stored before it ends
# ---------------------------------------------------------------------------
# (the worker may split the batch as soon as it commits: app.total counts both forms)
is( sq("BEGIN; " . rows('deliveries', 'def-', 1, 10) . "SELECT app.queued('def-'); COMMIT; SELECT app.total('def-');"),
	"0/0/0\n10", 'a deferred trigger\'s events are stored by COMMIT');
poll("SELECT app.delivered('def-') = 10", 'and delivered');
is( sq("BEGIN; " . rows('deliveries', 'defi-', 1, 7) . "SET CONSTRAINTS ALL IMMEDIATE;"
		  . "SELECT app.queued('defi-'); COMMIT;"),
	'0/7/1', 'SET CONSTRAINTS ALL IMMEDIATE stores them when it ends');

# PREPARE TRANSACTION fires the deferred trigger; the events are stored
# before the backend forgets the transaction
sq("BEGIN; " . rows('deliveries', 'prep-', 1, 6) . "PREPARE TRANSACTION 'rb1';");
sq("BEGIN; " . rows('deliveries', 'prepx-', 1, 6) . "PREPARE TRANSACTION 'rb2';");
sq("COMMIT PREPARED 'rb1'; ROLLBACK PREPARED 'rb2';");
is(sq("SELECT app.total('prepx-') || ' ' || app.total('prep-')"), '0 6',
	'COMMIT PREPARED stores the events gathered at PREPARE, ROLLBACK PREPARED nothing');
poll("SELECT app.delivered('prep-') = 6", 'COMMIT PREPARED delivers the prepared events');

# ---------------------------------------------------------------------------
# COPY FROM fires the row triggers without an executor end of its own
# ---------------------------------------------------------------------------
my $copy = join('', map { "$_\t$_\tcopy-$_\@example.com\n" } 1 .. 50);
is( sq(   "BEGIN; COPY app.opens (message_id, subscriber_id, subscriber_email) FROM STDIN;\n$copy\\.\n"
		  . "SELECT app.queued('copy-'); COMMIT;"),
	'0/50/1', 'COPY FROM stores its rows as one batch when it ends, visible in its transaction');
poll("SELECT app.delivered('copy-') = 50", 'and they are delivered');

# ---------------------------------------------------------------------------
# failures: nothing stored, never half
# ---------------------------------------------------------------------------
# a later statement fails: the whole transaction goes, with the stored batch
$r = psql_error($node,
	"BEGIN; " . rows('opens', 'xf-', 1, 20) . rows('opens', 'xf-', 20, 20) . "COMMIT;",
	on_error_stop => 0);
is($r->{sqlstate}, '23505', 'a later statement of the transaction fails');
is(sq("SELECT app.queued('xf-')"), '0/0/0', 'nothing of the transaction is stored');

# the store itself fails (lock_timeout: a prepared transaction holds
# webhooks.event_batches): the statement fails, its rows are not inserted
sq("BEGIN; LOCK webhooks.event_batches IN ACCESS EXCLUSIVE MODE; PREPARE TRANSACTION 'locker';");
$r = psql_error($node,
	"SET lock_timeout = '100ms'; " . rows('opens', 'lockst-', 1, 10), on_error_stop => 0);
is($r->{sqlstate}, '55P03', 'a store that fails at the end of the statement fails the statement');
# at COMMIT: the deferred trigger gathers, storing fails, COMMIT fails
$r = psql_error($node,
	"SET lock_timeout = '100ms'; BEGIN; " . rows('deliveries', 'lockc-', 1, 10) . "COMMIT;",
	on_error_stop => 0);
is($r->{sqlstate}, '55P03', 'a store that fails at COMMIT fails the COMMIT');
sq("ROLLBACK PREPARED 'locker'");
is( sq("SELECT (SELECT count(*) FROM app.opens WHERE subscriber_email LIKE 'lockst-%') || ' '
         || (SELECT count(*) FROM app.deliveries WHERE subscriber_email LIKE 'lockc-%') || ' '
         || app.queued('lockst-') || ' ' || app.queued('lockc-')"),
	'0 0 0/0/0 0/0/0', 'neither transaction kept its rows: no event was dropped silently');

# ---------------------------------------------------------------------------
# unrouted events are still counted per row
# ---------------------------------------------------------------------------
sq("CREATE TABLE app.bounces (LIKE app.opens INCLUDING ALL);
    CREATE TRIGGER bounces_webhook AFTER INSERT ON app.bounces
        FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailBounces');");
my $before = sq("SELECT events FROM webhooks.unrouted_events WHERE event_type = 'EmailBounces'");
sq("BEGIN; " . rows('bounces', 'ur-', 1, 7) . "SAVEPOINT s; " . rows('bounces', 'urx-', 1, 3)
	  . "ROLLBACK TO SAVEPOINT s; COMMIT;");
is(sq("SELECT events - $before FROM webhooks.unrouted_events WHERE event_type = 'EmailBounces'"),
	'7', 'events without an active webhook are counted as unrouted, per committed row');

# ---------------------------------------------------------------------------
# memory: flat over a long session, bounded within a big statement
# ---------------------------------------------------------------------------
my $mem = "SELECT coalesce((SELECT total_bytes FROM pg_backend_memory_contexts
                            WHERE name = 'webhooks gathered events'), -1)
            || ' ' || (SELECT sum(total_bytes) FROM pg_backend_memory_contexts);";
my $script = '';
$script .= rows('opens', "ma$_-", 1, 5) . rows('opens', "mb$_-", 1, 1) for 1 .. 200;
$script .= $mem;
$script .= rows('opens', "ma$_-", 1, 5) . rows('opens', "mb$_-", 1, 1) for 201 .. 1200;
$script .= $mem;
$script .= "BEGIN; " . rows('opens', 'membig-', 1, 20000) . "ROLLBACK;" . $mem;
my ($m1, $m2, $m3) = split /\n/, sq($script, timeout => 600);
my ($cx1, $all1) = split / /, $m1;
my ($cx2, $all2) = split / /, $m2;
my ($cx3) = split / /, $m3;
ok($cx1 > 0, 'the gathered events have a memory context of their own');
is($cx2, $cx1, 'its size is the same after 1,000 more transactions in the session');
is($cx3, $cx1, 'and after a rolled-back transaction that gathered 20,000 rows');
cmp_ok($all2 - $all1, '<', 256 * 1024,
	"the session's memory grows by less than 256 kB over 2,000 transactions (grew "
	  . ($all2 - $all1) . ' bytes)');
my $mbig = sq("BEGIN; " . rows('opens', 'membig2-', 1, 20000)
	  . "SELECT total_bytes FROM pg_backend_memory_contexts WHERE name = 'webhooks gathered events'; ROLLBACK;",
	timeout => 600);
cmp_ok($mbig, '<', 2 * 1024 * 1024, "gathering 20,000 rows keeps less than 2 MB (full groups are stored at once)");

$node->stop;
$rcv->stop;
done_testing();
