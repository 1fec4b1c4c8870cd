# The worker is a superuser inside the application's database, next to roles
# we do not trust (issue 8, points 1 and 2).  The attacker here is a plain
# role that OWNS the database (so, on PostgreSQL 15, also the schema public):
# it can create functions, operators, aggregates and tables in public and
# ALTER DATABASE ... SET any user-settable setting.
#
# Part A (point 1, object hijacking): the attacker plants in public, for the
# operators and functions that the worker's SQL (src/worker.c, payload.c)
# and the install script's functions, triggers and views use, an object of
# the same name with exactly the argument types of the call.  Each one
# returns the right result (nothing visibly breaks), records that it ran
# (public.pwned, and a LOG line, which survives a rollback) and tries
# ALTER ROLE attacker SUPERUSER.  The attacker also sets the database's
# search_path to "public, pg_catalog", so that even exact pg_catalog matches
# are shadowed in any session that does not pin its own.  Then every path
# runs: row-trigger events, emit(), a multi-row statement-trigger batch (the
# worker splits it), a 500 (results, log rows, retries, dead), a 410
# (deactivation), redeliver(), redeliver_dead(), rotate_secret(), the
# maintenance pass at worker start (prune, expired secrets, deliveries of
# vanished webhooks), the release of a previous worker's leases, the
# wizard's functions as a superuser DBA in a session with the database's own
# settings, and DROP/CREATE EXTENSION.  None of the planted objects may ever
# run, the attacker stays a plain role, and the deliveries did happen.
#
# Part B (point 2, the worker's session is its own):
#   B1 the database's statement_timeout, lock_timeout,
#      idle_in_transaction_session_timeout, default_transaction_read_only,
#      default_transaction_isolation, DateStyle, TimeZone (set by the owner)
#      and session_replication_role = replica (an operator mistake, set by a
#      superuser) do not reach the worker: events are delivered with their
#      exact bodies, failures are logged and retried, a 410 deactivates (with
#      the guard trigger firing and an ISO time stamp in the reason), and
#      the worker reports no error caused by those settings;
#   B2 ALTER DATABASE ... SET role = attacker (allowed to the owner) does not
#      make the worker run as the attacker;
#   B3 an admin transaction left open on a webhook row, or on the row of an
#      in-flight delivery, does not stop the deliveries of another webhook
#      (delivered AND recorded), and everything settles once it ends.
#
# This test's own sessions pin their settings (PGOPTIONS), since the
# database's are hostile; only the attacker and the "DBA" sessions use the
# database's settings, with statements that contain no operator of their own.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use WebhooksTest;

# settings of this test's sessions (the attacker may not set the last one)
my $pin_user =
    '-c search_path=pg_catalog,pg_temp -c statement_timeout=0 -c lock_timeout=0'
  . ' -c idle_in_transaction_session_timeout=0 -c default_transaction_read_only=off'
  . ' -c default_transaction_isolation=read\\ committed -c DateStyle=ISO,MDY'
  . ' -c TimeZone=UTC -c role=none';
my $pin_super = "$pin_user -c session_replication_role=origin";
$ENV{PGOPTIONS} = $pin_super;

my $rcv = start_receiver();
my $node = new_node('untrusted',
	conf => [
		"webhooks.retry_schedule = '1s, 1s'", "webhooks.log_retention = '10min'",
		# a webhook with two requests in flight is left out of claims (<> ALL)
		"webhooks.max_concurrency_per_webhook = 2" ]);

# sq(), poll() and the other helpers of WebhooksTest.pm run as the
# superuser, with pinned settings: set-up and checks

# a superuser DBA in psql with the database's own settings
sub dba
{
	my ($sql) = @_;
	local $ENV{PGOPTIONS} = '';
	return $node->safe_psql('postgres', $sql);
}

# the attacker, with the database's own settings unless told otherwise
sub as_attacker
{
	my ($sql, $pgoptions) = @_;
	local $ENV{PGOPTIONS} = $pgoptions // '';
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', 'attacker' ]);
}

# every event of this test has its own number (messageId or listId)
sub body_sql_of
{
	my ($n) = @_;
	return "(body LIKE '%\"messageId\":$n,%' OR body LIKE '%\"listId\":$n,%')";
}

# the delivery of event $n
sub delivery_of
{
	my ($n) = @_;
	return sq("SELECT max(id) FROM webhooks.all_deliveries WHERE " . body_sql_of($n));
}

# receiver filter: the requests carrying event $n
sub requests_of
{
	my ($n) = @_;
	return sub { $_[0]{body} =~ /"(?:messageId|listId)":$n,/ };
}

# the events numbered @n are delivered, recorded, and arrived with their bodies
sub delivered_ok
{
	my ($what, $timeout, @n) = @_;
	my $cond = join ' OR ', map { body_sql_of($_) } @n;
	my $ok = poll("SELECT count(*) FILTER (WHERE state = 'delivered') = " . scalar(@n)
		  . " AND count(*) = " . scalar(@n)
		  . " FROM webhooks.all_deliveries WHERE $cond",
		"$what: delivered and recorded as delivered", $timeout);
	my $exact = 0;
	for my $n (@n)
	{
		my $body = sq("SELECT body FROM webhooks.all_deliveries WHERE " . body_sql_of($n));
		my @got = grep { requests_of($n)->($_) } $rcv->requests;
		$exact++ if @got && !grep { $_->{body} ne $body } @got;
	}
	is($exact, scalar(@n), "$what: the receiver got each one with its exact stored body");
	return $ok;
}

# the SQL that emits event $n of $type
sub emit_sql
{
	my ($type, $n) = @_;
	return "SELECT webhooks.emit('$type', '" . payload($type, $n) . "')";
}

# let the receiver verify with every secret the webhooks have
sub refresh_secrets
{
	$rcv->set_secret(split /\n/,
		sq("SELECT secret FROM webhooks.webhooks UNION ALL
		    SELECT previous_secret FROM webhooks.webhooks WHERE previous_secret IS NOT NULL"));
	return;
}

# restart the server; tests that the worker runs again
sub restart
{
	$node->restart;
	poll("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
		'the worker runs after the restart', 30);
	return;
}

########################################################################
# Part A: the attacker plants objects in public
########################################################################

sq(<<'SQL');
CREATE ROLE attacker LOGIN;
ALTER DATABASE postgres OWNER TO attacker;
GRANT webhooks_writer TO attacker;
CREATE SCHEMA app;
CREATE TABLE app.email_opens (id bigserial PRIMARY KEY, message_id bigint, subscriber_id bigint,
                              subscriber_email text, created_at timestamptz DEFAULT now());
CREATE TRIGGER email_opens_webhook AFTER INSERT ON app.email_opens
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
CREATE TABLE app.email_clicks (id bigserial PRIMARY KEY, message_id bigint, subscriber_id bigint,
                               subscriber_email text, created_at timestamptz DEFAULT now());
CREATE TRIGGER email_clicks_webhook AFTER INSERT ON app.email_clicks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('EmailClicks');
GRANT USAGE ON SCHEMA app TO attacker;
GRANT INSERT ON ALL TABLES IN SCHEMA app TO attacker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA app TO attacker;
SQL
is(sq("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"), 'pg_database_owner',
	'premise: public belongs to the database owner');
is(sq("SELECT has_schema_privilege('attacker', 'public', 'CREATE'), rolsuper FROM pg_roles WHERE rolname = 'attacker'"),
	't|f', 'premise: the attacker, owner of database postgres, may create in public and is no superuser');

# What the attacker's objects record: who ran them, in which backend.  Each
# object records once per session (a custom setting remembers it), so the
# worker is not slowed down much, and tries to make the attacker superuser.
as_attacker(<<'SQL');
CREATE TABLE public.pwned (usr text, which text, backend text, path text, at timestamptz DEFAULT pg_catalog.now());
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public._pwn(key text, what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bt text := (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid());
BEGIN
    IF coalesce(current_setting('pwn.' || key, true), '') = 'done' THEN
        RETURN;
    END IF;
    PERFORM set_config('pwn.' || key, 'done', false);
    RAISE LOG 'hijacked%: % ran as % in %', '!', what, current_user, bt;
    INSERT INTO public.pwned (usr, which, backend, path)
    VALUES (current_user, what, bt, current_setting('search_path'));
    BEGIN
        EXECUTE 'ALTER ROLE attacker SUPERUSER';
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
END
$$;
SQL

# Operators: [name, left, right, result, the correct result, where it is used]
my @ops = (
	[ '*',  'integer', 'interval', 'interval', 'interval_mul($2, float8($1))',
		'worker claim lease and prune cutoff: $n * interval (no exact pg_catalog match)' ],
	[ '||', 'text', 'timestamptz', 'text', 'textcat($1, $2::text)',
		'worker 410 reason: text || now() (no exact pg_catalog match)' ],
	[ '||', 'text', 'name', 'text', 'textcat($1, $2::text)',
		'deactivate/delete_webhook: text || session_user (no exact pg_catalog match)' ],
	[ '=',  'bigint', 'bigint', 'boolean', 'int8eq($1, $2)',
		'worker joins, id = ANY($1), id IN (...); functions and triggers' ],
	[ '<>', 'bigint', 'bigint', 'boolean', 'int8ne($1, $2)', 'worker: w.id <> ALL($2); guard trigger' ],
	[ '<',  'bigint', 'bigint', 'boolean', 'int8lt($1, $2)', 'comparisons of ids' ],
	[ '>',  'bigint', 'bigint', 'boolean', 'int8gt($1, $2)', 'comparisons of ids' ],
	[ '+',  'bigint', 'bigint', 'bigint', 'int8pl($1, $2)', 'delete guard: n + sum()' ],
	[ '=',  'bigint', 'integer', 'boolean', 'int84eq($1, $2)', 'bigint = integer' ],
	[ '>',  'bigint', 'integer', 'boolean', 'int84gt($1, $2)', 'delete guard: n > 0' ],
	[ '+',  'bigint', 'integer', 'bigint', 'int84pl($1, $2)', '_expand_batches: n + b.events' ],
	[ '=',  'integer', 'integer', 'boolean', 'int4eq($1, $2)', 'integer comparisons' ],
	[ '<>', 'integer', 'integer', 'boolean', 'int4ne($1, $2)', 'integer comparisons' ],
	[ '<',  'integer', 'integer', 'boolean', 'int4lt($1, $2)', '_expand_batches: done < max_batches' ],
	[ '>',  'integer', 'integer', 'boolean', 'int4gt($1, $2)', 'guard: length(name) > 200' ],
	[ '+',  'integer', 'integer', 'integer', 'int4pl($1, $2)', 'worker claim: attempts + 1' ],
	[ '=',  'text', 'text', 'boolean', 'texteq($1, $2)',
		'worker: state = \'pending\', r.state = ...; functions, IS DISTINCT FROM' ],
	[ '<>', 'text', 'text', 'boolean', 'textne($1, $2)', 'update_webhook: new_name <> w.name' ],
	[ '||', 'text', 'text', 'text', 'textcat($1, $2)', 'text concatenation' ],
	[ '~',  'text', 'text', 'boolean', 'textregexeq($1, $2)', 'guard of 1.0: auth_token ~ ... (1.1 checks tokens in C)' ],
	[ '=',  'name', 'name', 'boolean', 'nameeq($1, $2)', 'rolname = ...' ],
	[ '=',  'boolean', 'boolean', 'boolean', 'booleq($1, $2)', 'boolean comparisons' ],
	[ '=',  'jsonb', 'jsonb', 'boolean', 'jsonb_eq($1, $2)', 'guard: headers IS DISTINCT FROM' ],
	[ '=',  'timestamptz', 'timestamptz', 'boolean', 'timestamptz_eq($1, $2)', 'guard: IS DISTINCT FROM' ],
	[ '<',  'timestamptz', 'timestamptz', 'boolean', 'timestamptz_lt($1, $2)',
		'worker prune: finished_at / occurrence_date < cutoff; secret expiry' ],
	[ '<=', 'timestamptz', 'timestamptz', 'boolean', 'timestamptz_le($1, $2)',
		'worker claim: next_attempt_at <= now()' ],
	[ '>',  'timestamptz', 'timestamptz', 'boolean', 'timestamptz_gt($1, $2)',
		'worker claim: previous_secret_expires_at > now(); views' ],
	[ '>=', 'timestamptz', 'timestamptz', 'boolean', 'timestamptz_ge($1, $2)',
		'redeliver_dead: finished_at >= since' ],
	[ '+',  'timestamptz', 'interval', 'timestamptz', 'timestamptz_pl_interval($1, $2)',
		'worker claim: now() + lease; rotate_secret' ],
	[ '-',  'timestamptz', 'interval', 'timestamptz', 'timestamptz_mi_interval($1, $2)',
		'worker prune: now() - retention' ],
	[ '-',  'timestamptz', 'timestamptz', 'interval', 'timestamptz_mi($1, $2)', 'webhook_stats' ],
	[ '*',  'double precision', 'interval', 'interval', 'mul_d_interval($1, $2)', 'float8 * interval' ],
	[ '*',  'interval', 'double precision', 'interval', 'interval_mul($1, $2)', 'interval * float8' ],
	[ '*',  'interval', 'integer', 'interval', 'interval_mul($1, float8($2))', 'interval * integer' ],
);

# Functions and aggregates: [key, signature, DDL with KEY and WHAT placeholders, where it is used]
my @funcs = (
	[ 'fn_now', 'public.now()', <<'SQL', 'defaults, functions (now())' ],
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN pg_catalog.now(); END $f$;
SQL
	[ 'agg_min', 'public.min(timestamptz)', <<'SQL', 'worker next-due: min(x.t)' ],
CREATE FUNCTION public.pwn_min_sf(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT);
  RETURN CASE WHEN $1 IS NULL OR $2 < $1 THEN $2 ELSE $1 END; END $f$;
CREATE AGGREGATE public.min(timestamptz) (SFUNC = public.pwn_min_sf, STYPE = timestamptz);
SQL
	[ 'agg_max', 'public.max(timestamptz)', <<'SQL', 'webhook_stats: max(...)' ],
CREATE FUNCTION public.pwn_max_sf(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT);
  RETURN CASE WHEN $1 IS NULL OR $2 > $1 THEN $2 ELSE $1 END; END $f$;
CREATE AGGREGATE public.max(timestamptz) (SFUNC = public.pwn_max_sf, STYPE = timestamptz);
SQL
	[ 'agg_count', 'public.count(*)', <<'SQL', 'delete guard, views: count(*)' ],
CREATE FUNCTION public.pwn_count_sf(bigint) RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN $1 + 1; END $f$;
CREATE AGGREGATE public.count(*) (SFUNC = public.pwn_count_sf, STYPE = bigint, INITCOND = '0');
SQL
	[ 'agg_sum', 'public.sum(integer)', <<'SQL', 'delete guard, webhook_stats: sum(events)' ],
CREATE FUNCTION public.pwn_sum_sf(bigint, integer) RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT);
  RETURN CASE WHEN $2 IS NULL THEN $1 ELSE coalesce($1, 0) + $2 END; END $f$;
CREATE AGGREGATE public.sum(integer) (SFUNC = public.pwn_sum_sf, STYPE = bigint);
SQL
	(map {
		my ($k, $t) = @$_;
		[ "fn_unnest_$k", "public.unnest($t\[])", <<"SQL", 'worker record/log: unnest($n) of typed arrays' ]
CREATE FUNCTION public.unnest($t\[]) RETURNS SETOF $t LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
\$f\$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN QUERY SELECT pg_catalog.unnest(\$1); END \$f\$;
SQL
	} ([ 'int8', 'bigint' ], [ 'int4', 'integer' ], [ 'text', 'text' ],
		[ 'tstz', 'timestamptz' ], [ 'float8', 'double precision' ])),
	[ 'fn_json_or_null', 'public._json_or_null(text)', <<'SQL', 'worker log: _json_or_null(body)' ],
CREATE FUNCTION public._json_or_null(text) RETURNS json LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN $1::json; EXCEPTION WHEN OTHERS THEN RETURN NULL; END $f$;
SQL
	[ 'fn_expand_batches', 'public._expand_batches(integer)', <<'SQL', 'worker split: _expand_batches(1)' ],
CREATE FUNCTION public._expand_batches(integer) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN 0; END $f$;
SQL
	[ 'fn_string_to_table', 'public.string_to_table(text, text)', <<'SQL', '_expand_batches, delete_webhook' ],
CREATE FUNCTION public.string_to_table(text, text) RETURNS SETOF text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN QUERY SELECT pg_catalog.string_to_table($1, $2); END $f$;
SQL
	[ 'fn_btrim', 'public.btrim(text)', <<'SQL', '_require, guard: btrim(name)' ],
CREATE FUNCTION public.btrim(text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN pg_catalog.btrim($1); END $f$;
SQL
	[ 'fn_length', 'public.length(text)', <<'SQL', 'guard: length(name)' ],
CREATE FUNCTION public.length(text) RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN pg_catalog.length($1); END $f$;
SQL
	[ 'fn_hashtext', 'public.hashtext(text)', <<'SQL', '_lock_event_type: hashtext()' ],
CREATE FUNCTION public.hashtext(text) RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN pg_catalog.hashtext($1); END $f$;
SQL
	[ 'fn_advisory', 'public.pg_advisory_xact_lock(integer, integer)', <<'SQL', '_lock_event_type' ],
CREATE FUNCTION public.pg_advisory_xact_lock(integer, integer) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); PERFORM pg_catalog.pg_advisory_xact_lock($1, $2); END $f$;
SQL
	[ 'fn_current_setting', 'public.current_setting(text)', <<'SQL', 'rotate_secret: current_setting()' ],
CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN pg_catalog.current_setting($1); END $f$;
SQL
	[ 'fn_jsonb_object_keys', 'public.jsonb_object_keys(jsonb)', <<'SQL', 'webhooks_public view' ],
CREATE FUNCTION public.jsonb_object_keys(jsonb) RETURNS SETOF text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS
$f$ BEGIN PERFORM public._pwn(KEY, WHAT); RETURN QUERY SELECT pg_catalog.jsonb_object_keys($1); END $f$;
SQL
);

my (%where, @planted);
{
	my $i = 0;
	my $ddl = '';
	for my $o (@ops)
	{
		my ($op, $l, $r, $ret, $expr, $use) = @$o;
		my $sig = "public.$op($l, $r)";
		my $key = 'op' . $i++;
		$ddl .= "CREATE FUNCTION public.pwn_$key($l, $r) RETURNS $ret LANGUAGE plpgsql"
		  . " SET search_path = pg_catalog, pg_temp AS\n"
		  . "\$f\$ BEGIN PERFORM public._pwn('$key', " . lit($sig) . "); RETURN $expr; END \$f\$;\n"
		  . "CREATE OPERATOR public.$op (LEFTARG = $l, RIGHTARG = $r, FUNCTION = public.pwn_$key);\n";
		push @planted, $sig;
		$where{$sig} = $use;
	}
	for my $f (@funcs)
	{
		my ($key, $sig, $sql, $use) = @$f;
		my ($k, $w) = (lit($key), lit($sig));
		$sql =~ s/\bKEY\b/$k/g;
		$sql =~ s/\bWHAT\b/$w/g;
		$ddl .= $sql;
		push @planted, $sig;
		$where{$sig} = $use;
	}
	as_attacker($ddl);
}
is( sq("SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace
         AND pg_get_userbyid(oprowner) = 'attacker'"),
	scalar(@ops), 'the attacker planted ' . scalar(@ops) . ' operators in public');
is( sq("SELECT count(DISTINCT p.oid) FROM pg_proc p WHERE pronamespace = 'public'::regnamespace
         AND pg_get_userbyid(proowner) = 'attacker' AND proname NOT LIKE 'pwn\\_%' AND proname <> '_pwn'"),
	scalar(@funcs), 'and ' . scalar(@funcs) . ' functions and aggregates named like pg_catalog\'s and ours');

# Casts between built-in types cannot be planted: CREATE CAST needs the
# ownership of the source or the target type.
{
	local $ENV{PGOPTIONS} = '';
	my ($ret, $out, $err) = $node->psql('postgres',
		"CREATE FUNCTION public.pwn_cast(integer) RETURNS double precision LANGUAGE sql AS 'SELECT 1::float8';
		 CREATE CAST (integer AS double precision) WITH FUNCTION public.pwn_cast(integer)",
		extra_params => [ '-U', 'attacker' ]);
	like($err, qr/must be owner of type integer or type double precision/,
		'premise: the attacker cannot plant a cast between built-in types (integer to double precision)');
}

# what the worker sees: the database's settings (it connects like any session)
as_attacker("ALTER DATABASE postgres SET search_path = public, pg_catalog");

# canary: a session with the database's settings does pick the planted
# objects (the attacker's own session, harmless), so the test can fail
as_attacker(
	"SELECT 1::bigint = 2::bigint, 3 * interval '1 second', 'at ' || pg_catalog.now(), min(pg_catalog.now())");
is( sq("SELECT string_agg(which, ', ' ORDER BY which COLLATE \"C\") FROM public.pwned WHERE usr = 'attacker'"),
	'public.*(integer, interval), public.=(bigint, bigint), public.min(timestamptz), public.||(text, timestamptz)',
	'canary: a session with the database\'s search_path runs the planted objects');
as_attacker("TRUNCATE public.pwned");
my $log_from = -s $node->logfile;

# the worker connects again, with the attacker's search_path
restart();

# --- the DBA defines webhooks, in psql with the database's settings -------
my $ok_url = sub { lit($rcv->url("/ok/$_[0]")) };
dba("SELECT * FROM webhooks.create_webhook('opens', 'EmailOpens', " . $ok_url->('opens') . ")");
dba("SELECT * FROM webhooks.create_webhook('clicks', 'EmailClicks', " . $ok_url->('clicks') . ")");
dba("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active) VALUES
     ('fail', 'EmailSends', " . lit($rcv->url('/status/500/fail')) . ", true),
     ('gone', 'EmailBounces', " . lit($rcv->url('/gone/gone')) . ", true),
     ('slowa', 'EmailDeliveries', " . lit($rcv->url('/slow/1000/slowa')) . ", true)");
# the whole life of a webhook
dba("SELECT * FROM webhooks.create_webhook('tmp', 'EmailComplaints', " . $ok_url->('tmp') . ")");
dba("SELECT * FROM webhooks.deactivate_webhook('tmp')");
dba("SELECT * FROM webhooks.update_webhook('tmp', new_name => 'tmp2', target_url => " . $ok_url->('tmp2')
	  . ", auth_token => 'tok-1', headers => '{\"X-Test\": \"1\"}')");
dba("SELECT * FROM webhooks.activate_webhook('tmp2')");
dba("SELECT webhooks.rotate_secret('tmp2')");
refresh_secrets();
is(sq("SELECT count(*) FROM webhooks.webhooks WHERE is_active"), '6', 'six active webhooks');

# --- events: the attacker as an application role, and the DBA -------------
# three slow ones first: their webhook fills its two slots, so the claims
# for the events below leave it out
as_attacker(join ';', map { emit_sql('EmailDeliveries', $_) } 601 .. 603);
as_attacker(emit_sql('EmailOpens', 101));
as_attacker("INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email) VALUES (102, 2, 'a\@b.c')");
as_attacker("INSERT INTO app.email_clicks (message_id, subscriber_id, subscriber_email) VALUES
             (201, 2, 'a\@b.c'), (202, 2, 'a\@b.c'), (203, 2, 'a\@b.c'), (204, 2, 'a\@b.c'), (205, 2, 'a\@b.c')");
dba(emit_sql('EmailOpens', 103));
dba(emit_sql('EmailComplaints', 104));
as_attacker(emit_sql('EmailSends', 301));
as_attacker(emit_sql('EmailBounces', 401));

delivered_ok('row trigger, emit() as attacker and as DBA', 30, 101, 102, 103);
delivered_ok('a statement-trigger batch, split by the worker', 30, 201 .. 205);
delivered_ok('the renamed, re-activated webhook with token and headers', 30, 104);
delivered_ok('a slow webhook, at most two in flight', 30, 601 .. 603);
my $d301 = delivery_of(301);
poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d301",
	'a delivery answered 500 ends dead after its retries');
is( sq("SELECT string_agg(attempt || ':' || status || ':' || outcome, ',' ORDER BY attempt)
          FROM webhooks.webhook_logs WHERE delivery_id = $d301"),
	'1:500:retry,2:500:retry,3:500:dead', '... each failed attempt logged');
poll("SELECT NOT is_active FROM webhooks.webhooks WHERE name = 'gone'", 'a 410 deactivates its webhook');
is(sq("SELECT count(*) FROM webhooks.webhook_logs WHERE webhook_name = 'gone' AND outcome = 'deactivated'"),
	'1', '... logged as deactivated');

# --- redelivery ------------------------------------------------------------
my $d101 = delivery_of(101);
dba("SELECT webhooks.redeliver($d101)");
cmp_ok(scalar(@{ $rcv->wait_for_requests(2, 30, requests_of(101)) }), '>=', 2, 'redeliver(): sent again');
poll("SELECT state = 'delivered' FROM webhooks.all_deliveries WHERE id = $d101", '... and delivered');
is(dba("SELECT webhooks.redeliver_dead('fail')"), '1', 'redeliver_dead() queues the dead one');
poll("SELECT state = 'dead' AND (SELECT count(*) = 6 FROM webhooks.webhook_logs WHERE delivery_id = $d301)
        FROM webhooks.all_deliveries WHERE id = $d301", '... which is tried three more times');

# --- discard on delete -------------------------------------------------------
dba("SELECT * FROM webhooks.deactivate_webhook('fail')");
dba("SELECT webhooks.delete_webhook('fail', discard_pending => true)");
is(sq("SELECT count(*) FROM webhooks.webhooks WHERE name = 'fail'"), '0', 'delete_webhook(discard_pending)');
dba("SELECT * FROM webhooks.deactivate_webhook('tmp2')");
dba("SELECT webhooks.delete_webhook('tmp2')");

# --- maintenance and lease release at worker start ---------------------------
# an expired previous secret, rows older than the retention, a delivery whose
# webhook vanished, and a lease left by a "previous worker"
my $opens = sq("SELECT id FROM webhooks.webhooks WHERE name = 'opens'");
dba("SELECT webhooks.rotate_secret('opens')");
refresh_secrets();
sq(<<"SQL");
UPDATE webhooks.webhooks SET previous_secret_expires_at = now() - interval '1 s' WHERE id = $opens;
INSERT INTO webhooks.delivery_history (id, webhook_id, event_type, body, state, attempts, created_at, finished_at, msg_id)
VALUES (9501, $opens, 'EmailOpens', webhooks.build_payload('EmailOpens', '${\ payload('EmailOpens', 501)}'),
        'delivered', 1, now() - interval '2 h', now() - interval '1 h', 'msg_9501');
INSERT INTO webhooks.webhook_logs (occurrence_date, webhook_name, webhook_id, status, error_content, outcome)
VALUES (now() - interval '1 h', 'opens', $opens, 500, 'old failure', 'retry');
INSERT INTO webhooks.deliveries (webhook_id, event_type, body)
VALUES (999999, 'EmailOpens', webhooks.build_payload('EmailOpens', '${\ payload('EmailOpens', 502)}'));
INSERT INTO webhooks.deliveries (webhook_id, event_type, body, next_attempt_at, lease_until, attempts)
VALUES ($opens, 'EmailOpens', webhooks.build_payload('EmailOpens', '${\ payload('EmailOpens', 503)}'),
        now() + interval '1 h', now() + interval '1 h', 1);
SQL
restart();
poll("SELECT count(*) = 0 FROM webhooks.all_deliveries WHERE " . body_sql_of(501),
	'maintenance at worker start: an old delivered row is pruned');
poll("SELECT count(*) = 0 FROM webhooks.webhook_logs WHERE error_content = 'old failure'",
	'maintenance: an old log row is pruned');
poll("SELECT previous_secret IS NULL FROM webhooks.webhooks WHERE id = $opens",
	'maintenance: the expired previous secret is dropped');
poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE " . body_sql_of(502),
	'maintenance: a delivery whose webhook vanished dies (logged)');
delivered_ok('a lease of a previous worker is released at start', 30, 503);
as_attacker(emit_sql('EmailOpens', 504));
delivered_ok('an event after the maintenance pass', 30, 504);

# --- reinstall by the DBA, with the database's settings ----------------------
dba("DROP EXTENSION webhooks CASCADE");
dba("CREATE EXTENSION webhooks");
is(sq("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'"), latest_version(), 'DROP/CREATE EXTENSION');

# --- the verdict -------------------------------------------------------------
my %ran = map { split /\t/, $_, 2 }
  split /\n/, sq("SELECT which || chr(9) || string_agg(DISTINCT usr || ' in ' || coalesce(backend, '?'), '; ')
                    FROM public.pwned GROUP BY which");
for my $sig (@planted)
{
	ok(!exists $ran{$sig}, "point 1: planted $sig never ran ($where{$sig})")
	  or diag("$sig ran as: $ran{$sig}");
}
is(sq("SELECT count(*) FROM public.pwned"), '0', 'point 1: public.pwned is empty');
my @lines = grep { /hijacked!:/ } split /\n/, log_since($log_from);
is(scalar(@lines), 0, 'point 1: the server log shows no planted object running')
  or diag(join "\n", @lines[ 0 .. ($#lines < 9 ? $#lines : 9) ]);
is(sq("SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'"), 'f',
	'point 1: the attacker is still not a superuser');
# clean up if the attacker won, so Part B runs with a plain attacker
sq("ALTER ROLE attacker NOSUPERUSER");

########################################################################
# Part B: the database's settings do not reach the worker
########################################################################

# B1 --------------------------------------------------------------------------
as_attacker(<<'SQL', $pin_user);
ALTER DATABASE postgres SET statement_timeout = '1ms';
ALTER DATABASE postgres SET lock_timeout = '1ms';
ALTER DATABASE postgres SET idle_in_transaction_session_timeout = '1ms';
ALTER DATABASE postgres SET default_transaction_read_only = on;
ALTER DATABASE postgres SET default_transaction_isolation = 'serializable';
ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
ALTER DATABASE postgres SET TimeZone = 'Pacific/Chatham';
SQL
sq("ALTER DATABASE postgres SET session_replication_role = replica");
is( sq("SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) c
         WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = 'postgres') AND s.setrole = 0"),
	'9', 'the database has its nine hostile settings (search_path included)');
$log_from = -s $node->logfile;
restart();
my $wpid = worker_pid();

sq(<<'SQL');
CREATE TABLE app.subs (id bigserial PRIMARY KEY, list_id bigint, subscriber_id bigint,
                       subscriber_email text, created_at timestamptz DEFAULT now());
CREATE TRIGGER subs_webhook AFTER INSERT ON app.subs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('Subscriptions');
SQL
sq("SELECT * FROM webhooks.create_webhook('b_ok', 'EmailDeliveries', " . $ok_url->('b_ok') . ")");
sq("SELECT * FROM webhooks.create_webhook('b_subs', 'Subscriptions', " . $ok_url->('b_subs') . ")");
sq("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active) VALUES
    ('b_fail', 'EmailComplaints', " . lit($rcv->url('/status/500/b_fail')) . ", true),
    ('b_gone', 'Unsubscriptions', " . lit($rcv->url('/gone/b_gone')) . ", true)");
refresh_secrets();
sq(emit_sql('EmailDeliveries', $_)) for 1001 .. 1003;
sq("INSERT INTO app.subs (list_id, subscriber_id, subscriber_email) SELECT g, 2, 'a\@b.c' FROM generate_series(1011, 1013) g");
sq(emit_sql('EmailComplaints', 1021));
sq(emit_sql('Unsubscriptions', 1031));

delivered_ok('point 2 (hostile database settings): emit()', 15, 1001 .. 1003);
delivered_ok('point 2 (hostile database settings): a batch split by the worker', 10, 1011 .. 1013);
my $d1021 = delivery_of(1021);
poll("SELECT state = 'dead' FROM webhooks.all_deliveries WHERE id = $d1021", 'point 2 (hostile database settings): a 500 is retried, then dead', 10);
is( sq("SELECT string_agg(attempt || ':' || status || ':' || outcome, ',' ORDER BY attempt)
          FROM webhooks.webhook_logs WHERE delivery_id = $d1021"),
	'1:500:retry,2:500:retry,3:500:dead', 'point 2 (hostile database settings): each failed attempt logged');
poll("SELECT NOT is_active FROM webhooks.webhooks WHERE name = 'b_gone'",
	'point 2 (hostile database settings): a 410 deactivates the webhook', 10);
is(sq("SELECT updated_at > created_at FROM webhooks.webhooks WHERE name = 'b_gone'"), 't',
	'point 2 (session_replication_role): the guard trigger fired on the worker\'s deactivation (updated_at set)');
my $reason = sq("SELECT deactivated_reason FROM webhooks.webhooks WHERE name = 'b_gone'");
note("410 reason: $reason");
like($reason, qr/\d{4}-\d\d-\d\d/, 'point 2 (DateStyle): the 410 reason\'s time stamp is ISO 8601');
unlike($reason, qr{\d\d/\d\d/\d{4}|\+1[23]:?45|CHA[SD]T},
	'point 2 (DateStyle, TimeZone): ... neither in the database\'s DateStyle nor in its TimeZone');
{
	my @errs = grep { /\[$wpid\]/ && /ERROR|FATAL/ } split /\n/, log_since($log_from);
	is(scalar(@errs), 0, 'point 2 (hostile database settings): the worker logged no error')
	  or diag(join "\n", @errs[ 0 .. ($#errs < 9 ? $#errs : 9) ]);
}

# B2: the owner makes every session of the database take its role ----------
sq("ALTER DATABASE postgres RESET ALL");
as_attacker("ALTER DATABASE postgres SET role = 'attacker'", $pin_user);
$log_from = -s $node->logfile;
restart();
$wpid = worker_pid();
sq(emit_sql('EmailDeliveries', 1101));
delivered_ok('point 2 (ALTER DATABASE SET role): the worker does not run as the owner', 10, 1101);
{
	my @errs = grep { /\[$wpid\]/ && /ERROR|FATAL/ } split /\n/, log_since($log_from);
	is(scalar(@errs), 0, 'point 2 (ALTER DATABASE SET role): the worker logged no error')
	  or diag(join "\n", @errs[ 0 .. ($#errs < 4 ? $#errs : 4) ]);
}

# B3: locks held by an open admin transaction ---------------------------------
sq("ALTER DATABASE postgres RESET ALL");
# one request per webhook at a time: a second delivery of the slow webhook is
# sent only once the worker has the first one's result
sq("ALTER SYSTEM SET webhooks.max_concurrency_per_webhook = 1");
restart();
sq("SELECT * FROM webhooks.create_webhook('l_ok', 'EmailOpens', " . $ok_url->('l_ok') . ")");
sq("INSERT INTO webhooks.webhooks (name, event_type, target_url, is_active) VALUES
    ('l_gone', 'EmailSends', " . lit($rcv->url('/gone/l_gone')) . ", true),
    ('l_slow', 'EmailBounces', " . lit($rcv->url('/slow/2000/l_slow')) . ", true)");
refresh_secrets();

# (a) the row of a webhook, whose target then answers 410
{
	my $bg = $node->background_psql('postgres');
	$bg->query_safe("BEGIN; SELECT id FROM webhooks.webhooks WHERE name = 'l_gone' FOR UPDATE");
	sq(emit_sql('EmailSends', 2001));
	ok(scalar(@{ $rcv->wait_for_requests(1, 20, requests_of(2001)) }),
		'point 2 (lock on a webhook row): its event is sent and answered 410');
	sq(emit_sql('EmailOpens', $_)) for 2002, 2003;
	delivered_ok('point 2 (lock on a webhook row): another webhook\'s events meanwhile', 10, 2002, 2003);
	$bg->query_safe('ROLLBACK');
	$bg->quit;
	poll("SELECT NOT is_active FROM webhooks.webhooks WHERE name = 'l_gone'",
		'point 2 (lock on a webhook row): once released, the 410 deactivates it', 20);
	poll("SELECT state = 'held' FROM webhooks.all_deliveries WHERE " . body_sql_of(2001),
		'point 2 (lock on a webhook row): ... and its delivery is held', 20);
}

# (b) the row of a delivery in flight
{
	sq(emit_sql('EmailBounces', 2101));
	ok(scalar(@{ $rcv->wait_for_requests(1, 20, requests_of(2101)) }), 'a slow delivery is in flight');
	my $d2101 = delivery_of(2101);
	my $bg = $node->background_psql('postgres');
	$bg->query_safe("BEGIN; SELECT id FROM webhooks.deliveries WHERE id = $d2101 FOR UPDATE");
	sq(emit_sql('EmailBounces', 2102));
	# sent only after the worker got the first one's result (one at a time)
	ok(scalar(@{ $rcv->wait_for_requests(1, 10, requests_of(2102)) }),
		'point 2 (lock on an in-flight delivery): the worker goes on after its result came back');
	sq(emit_sql('EmailOpens', 2103));
	delivered_ok('point 2 (lock on an in-flight delivery): another webhook\'s event meanwhile', 10, 2103);
	$bg->query_safe('ROLLBACK');
	$bg->quit;
	delivered_ok('point 2 (lock on an in-flight delivery): once released, everything settles', 30, 2101, 2102);
}
is(sq("SELECT count(*) FROM webhooks.all_deliveries WHERE state = 'pending'"), '0', 'nothing is left pending');

$node->stop;
$rcv->stop;
done_testing();
