/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker that delivers webhooks.deliveries.
 *
 * Design
 * ------
 * One worker serves webhooks.database_name.  Its loop never holds a
 * transaction open while the network is used:
 *
 *	0. split (short transaction): a multi-row statement stores its events
 *	   as compact batch rows (payload.c); they become deliveries here.
 *	1. claim (short transaction): lock due pending deliveries with
 *	   FOR UPDATE SKIP LOCKED, pick as many as there are free request slots
 *	   (webhooks.max_concurrency overall, max_concurrency_per_webhook per
 *	   webhook), and take a lease on them: next_attempt_at and lease_until
 *	   move to now() + lease, attempts is incremented.  Commit.
 *	2. send (no transaction): each claimed delivery becomes a signed request
 *	   in the curl multi engine (http_engine.c), signed now, so every attempt has a
 *	   fresh webhook-timestamp and the delivery's stable webhook-id.
 *	3. record (short transaction): finished requests are collected and
 *	   written together: delivered, or a log row and a retry time, or dead,
 *	   or (410 Gone) the webhook deactivated.  Commit.
 *
 * Steps 1 and 3 interleave with step 2: requests complete one by one, and
 * a request's slot is free as soon as it completes; between its SQL steps
 * the loop lets curl work on the sockets that are ready (service_sockets),
 * so a flush or a split never holds a response for a whole turn.  Slots are shared
 * fairly: every busy webhook may hold its max-min fair share of
 * webhooks.max_concurrency (less a few reserved slots), never more than
 * max_concurrency_per_webhook, and a claim takes rows one webhook at a time
 * in turn.  The reserved slots (1/16) take only the first request of a
 * webhook with none in flight, and a commit claims at once for such
 * webhooks, so new work never waits for other webhooks' backlogs or slow
 * endpoints.  Busy webhooks are refilled in chunks, to keep claims few and
 * large: when a quarter of a webhook's share is free, or a quarter of
 * webhooks.max_concurrency (an idle worker claims at once).
 * Results are written in batches (when enough have finished, when nothing
 * else is in flight, or a few milliseconds after the first one finished).
 *
 * The lease makes delivery at-least-once: if the worker dies mid-flight,
 * the leased rows become due again when the lease ends; a restarted worker
 * (there is only one) releases every lease at start, so a crash repeats the
 * requests that were in flight, with the same webhook-id, and loses none.
 * Each claim stamps its rows with a lease token, and a result is written
 * only while the row still carries it (successes by two saved statements,
 * other outcomes by webhooks._record_results): a late result never
 * overwrites a newer attempt or a reinstalled extension's row.
 *
 * The worker is a superuser in a database that other roles own, so its
 * session is its own (pin_session): settings from ALTER DATABASE/ROLE are
 * undone, search_path is pg_catalog, pg_temp, and every statement resolves
 * to pg_catalog and schema webhooks only.  It never waits on other sessions
 * for long: rows and webhooks they hold locked are skipped (SKIP LOCKED)
 * and retried a second later, and lock_timeout bounds anything else.
 *
 * Sleeping: the worker waits in the engine's WaitEventSet on its latch,
 * curl's sockets and timers and postmaster death.  A committing
 * transaction that enqueued something sets the latch (webhooks.c); the
 * next scheduled retry bounds the sleep; once a second it looks for due
 * work anyway (COMMIT PREPARED and rows written by hand wake nobody); a
 * maintenance pass (the history's partitions made ahead and dropped past
 * webhooks.log_retention, expired secrets, orphaned events, saving the
 * counts of unrouted events) runs at start and every minute, or twice per
 * history period when the retention is short.
 *
 * Signals follow worker_spi: SIGHUP reloads the settings, SIGTERM (die)
 * ends the worker at its next CHECK_FOR_INTERRUPTS, which the latch makes
 * immediate; SIGINT (pg_cancel_backend) cancels the current step.  An
 * error, in a step or between steps, is reported and rolled back with
 * interrupts held (recover_from_error); no SQL runs for a second after it,
 * while requests in flight go on: HTTP failures are data, never errors.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/jsonapi.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc_tables.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "catalog/namespace.h"
#include "access/htup_details.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "http.h"
#include "launcher.h"
#include "payload.h"
#include "validate.h"
#include "webhooks.h"
#include "worker.h"

#define FLUSH_MAX_RESULTS 512
/* finished but unrecorded results held at most (claims pause above half) */
#define MAX_FINISHED (2 * 1024 + 10000)
#define FLUSH_DELAY_MS 2
#define MAINTENANCE_INTERVAL_MS (60 * 1000)
#define IDLE_CHECK_MS (5 * 1000)
/* a worker that finds no extension waits this long for CREATE EXTENSION's commit */
#define EXTENSION_WAIT_MS (10 * 1000)
#define ERROR_PAUSE_MS 1000
/* due work that no wake-up announced (hand-written rows, COMMIT PREPARED) */
#define POLL_INTERVAL_MS 1000
/* unrecorded results whose rows another session holds are retried after */
#define LOCKED_RETRY_MS 1000
/*
 * While requests are in flight, split at most one batch (1,000 events, a few
 * milliseconds of SQL) this often: curl is not served while SQL runs, so
 * splitting every batch back to back held other webhooks' requests for
 * hundreds of milliseconds.  Splitting 50,000 events a second still feeds
 * any drain.
 */
#define SPLIT_INTERVAL_MS 20
/* the worker never waits long for a lock: it skips, or gives up and retries */
#define WORKER_LOCK_TIMEOUT "200ms"

/* one claimed delivery, in its own memory context */
typedef struct Delivery
{
	WhRequest	req;			/* first: the engine hands us req pointers */
	MemoryContext cxt;
	char	   *webhook_name;
	char	   *msg_id;
	int64		lease_token;	/* the claim that leased it */
	const char *precheck_error; /* set when the row fails the send-time checks */
	bool		kept;			/* its row was locked at the last flush */
	bool		counted;		/* in its webhook's shared count of requests */
} Delivery;

typedef struct WebhookSlot
{
	int64		webhook_id;		/* hash key */
	int			in_flight;
	int			unrecorded;		/* results kept because its rows were locked */
	bool		more_due;		/* its last claim was cut short (cap, share) */
	bool		left_out;		/* left out of the current claim (saturated) */
	int			share;			/* the most it may hold, as of the last claim */
	bool		http1_only;		/* its receiver's HTTP/2 answers were lost */
	char	   *valid_url;		/* the target URL last found valid, or NULL */
	bool		valid_url_private;	/* webhooks.allow_private_targets then */
	int			counted;		/* of the database's count of it (shared), ours */
	int			count_idx;		/* that count's place in the entry, -1: none yet */
	int			claim_counted;	/* counted by the current claim, not yet leased */
	bool		has_floor;
	TimestampTz due_floor;		/* bounded claims start here (see read_candidates) */
} WebhookSlot;

/*
 * Everything the worker knows between two turns of its loop.
 */
typedef struct WorkerState
{
	MemoryContext worker_cxt;	/* lives as long as the worker */
	MemoryContext loop_cxt;		/* reset after every step */
	MemoryContext deliveries_cxt;	/* parent of the deliveries in flight */
	WhEngine   *engine;
	HTAB	   *slots;			/* WebhookSlot by webhook id */
	int			in_flight;

	/* finished requests whose results are not yet recorded */
	Delivery  **finished;
	int			nfinished;
	int			nkept;			/* of those, kept from a flush (rows locked) */
	TimestampTz first_finished_at;
	TimestampTz kept_retry_at;

	/* claimed and committed, not yet handed to the engine */
	Delivery  **unstarted;
	int			nunstarted;
	int			unstarted_from; /* the next one start_claimed() hands over */
	/* leases of claimed deliveries never sent (an error came): released next */
	int64	   *to_release;
	int64	   *to_release_tokens;
	int			nto_release;

	/* the database served, and its install */
	WhDatabase *db;				/* its entry in shared memory (launcher.c) */
	int			index;			/* this worker's number in the database */
	WhWorkerSlot *slot;			/* and its place in the entry */
	bool		retiring;		/* beyond webhooks.workers_per_database: drain, leave */
	char		dbname[NAMEDATALEN];
	TimestampTz leave_at;		/* no extension: leave then (0: stay) */
	bool		extension_present;
	Oid			extension_oid;
	char		installed_version[NAMEDATALEN + 64];	/* when not the library's */
	bool		leases_released;	/* by this worker, at its first claim */

	/* what to do next, and when */
	bool		maybe_work;		/* a claim may find due rows */
	bool		announced;		/* a commit woke us: maybe a newly due webhook */
	bool		refill_due;		/* a webhook has a quantum of its share free */
	bool		batches_pending;	/* event batches may wait to be split */
	TimestampTz next_due;
	TimestampTz next_maintenance;
	TimestampTz next_expiry;	/* when the oldest history partition expires */
	TimestampTz next_minute_tasks;	/* unrouted counts, secrets, orphans */
	bool		orphans_seen;	/* by the last minute's pass: sweep them at this one */
	TimestampTz next_poll;
	TimestampTz next_split;		/* while requests are in flight */
	TimestampTz db_backoff_until;	/* after an error, until then no SQL */

	/* claims */
	uint64		lease_token_base;	/* random per worker start */
	uint64		claims_made;
	uint32		claim_rotor;	/* round-robin start among the claim's webhooks */
	TimestampTz next_full_scan; /* claims until then start at each webhook's floor */
	TimestampTz next_due_check; /* find_next_due reads the queue again then */

	char		activity[128];	/* the activity string last reported */
} WorkerState;

static WorkerState wk = {.maybe_work = true, .batches_pending = true};

/* the worker's saved statements (prepare_plans), and its result row type */
typedef struct WorkerPlans
{
	SPIPlanPtr	candidates;
	SPIPlanPtr	claim;
	SPIPlanPtr	hold;
	SPIPlanPtr	next_due;
	SPIPlanPtr	record;
	SPIPlanPtr	record_delivered;
	SPIPlanPtr	lock_rows;
	SPIPlanPtr	still_leased;
	SPIPlanPtr	deactivate;
	SPIPlanPtr	release;
	Oid			result_typid;	/* webhooks._delivery_result */
	TupleDesc	result_desc;
} WorkerPlans;

static WorkerPlans plans;

static void begin_xact(const char *activity);
static void commit_xact(void);
static void uncount_all_requests(void);

/*
 * Give up this worker's place in the database's entry: commits stop waking
 * it (webhooks.c reads the slot's pid), the requests it counted are over,
 * and with stop_wanting the database no longer wants workers.
 */
static void
vacate_slot(bool stop_wanting)
{
	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	wk.slot->procno = -1;
	wk.slot->pid = 0;
	wk.slot->in_flight = 0;
	if (stop_wanting)
		wk.db->wanted = wk.db->serving = false;
	LWLockRelease(wh_shared->lock);
	uncount_all_requests();
}

/* on exit: the launcher starts another worker while the database wants one */
static void
worker_shmem_exit(int code, Datum arg)
{
	if (wk.slot != NULL && wk.slot->pid == MyProcPid)
	{
		vacate_slot(false);
		wh_wake_launcher();
	}
}

/*
 * Take this worker's place in the database's entry (launcher.c), unless
 * another worker has it or a command holds the database (DROP DATABASE,
 * say): then leave quietly.
 */
static void
take_database_entry(int index)
{
	WhDatabase *db;
	bool		ok;

	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	db = wh_database_entry(MyDatabaseId);
	ok = db != NULL && index < WH_MAX_WORKERS_PER_DATABASE && db->workers[index].pid == 0 &&
		db->held == 0 && db->wanted;
	if (ok)
	{
		db->workers[index].pid = MyProcPid;
		db->workers[index].procno = wh_my_procno();
		db->workers[index].starting_until = 0;
		db->workers[index].in_flight = 0;
		db->workers[index].last_claim_at = 0;
	}
	LWLockRelease(wh_shared->lock);
	if (!ok)
		proc_exit(0);
	wk.db = db;
	wk.index = index;
	wk.slot = &db->workers[index];
	before_shmem_exit(worker_shmem_exit, (Datum) 0);
}

/*
 * The extension is not (or no longer) in the database: leave, and stop
 * wanting a worker.  A CREATE EXTENSION that commits after the entry
 * stops naming this process asks the launcher for a worker (webhooks.c);
 * one that committed before is seen by the last look here.
 */
static void
leave_database(void)
{
	bool		back;

	/* what it had in flight is abandoned: a new install's webhooks start from 0 */
	vacate_slot(true);

	begin_xact("looking for the extension a last time");
	back = OidIsValid(get_extension_oid("webhooks", true));
	commit_xact();
	if (back)
		wh_request_worker();
	ereport(LOG,
			(errmsg("webhooks worker: extension webhooks is not in database \"%s\"; stopping", wk.dbname)));
	proc_exit(0);
}

/* ---------------------------------------------------------------------
 * the worker's session: its own settings, whatever the database says
 * ---------------------------------------------------------------------
 */

/* the value a setting has when nothing sets it, as a string */
static const char *
boot_value(struct config_generic *gen, char *buf, size_t len)
{
	switch (gen->vartype)
	{
		case PGC_BOOL:
			return ((struct config_bool *) gen)->boot_val ? "on" : "off";
		case PGC_INT:
			snprintf(buf, len, "%d", ((struct config_int *) gen)->boot_val);
			return buf;
		case PGC_REAL:
			snprintf(buf, len, "%.17g", ((struct config_real *) gen)->boot_val);
			return buf;
		case PGC_STRING:
			return ((struct config_string *) gen)->boot_val;
		case PGC_ENUM:
			return config_enum_lookup_by_value((struct config_enum *) gen,
											   ((struct config_enum *) gen)->boot_val);
	}
	return NULL;
}

/*
 * The worker is a superuser in a database that other roles own.  Settings
 * made with ALTER DATABASE / ALTER ROLE reached it at connection: a
 * search_path naming their schema first would make its statements run their
 * functions and operators as superuser, and timeouts, read-only defaults,
 * isolation, DateStyle, TimeZone or session_replication_role would change
 * what it does.  So every setting that came from there goes back to its
 * built-in default (webhooks.* excepted: only a superuser can set those per
 * database), and what the worker relies on is pinned above any source.
 */
static void
pin_session(void)
{
	int			nvars;
	struct config_generic **vars = wh_guc_variables(&nvars);
	int			i;
	static const char *const pins[][2] = {
		{"search_path", "pg_catalog, pg_temp"},
		{"DateStyle", "ISO, YMD"},
		{"IntervalStyle", "postgres"},
		{"TimeZone", "UTC"},
		{"statement_timeout", "0"},
		{"lock_timeout", WORKER_LOCK_TIMEOUT},
		{"idle_in_transaction_session_timeout", "0"},
		{"default_transaction_read_only", "off"},
		{"default_transaction_isolation", "read committed"},
		{"default_transaction_deferrable", "off"},
		{"session_replication_role", "origin"},
		{"row_security", "on"},
		{"check_function_bodies", "on"},
		/*
		 * The worker's own commits (leases, results) need not wait for the
		 * WAL flush: a crash can only lose the newest of them, and a lost
		 * lease or result means the delivery is sent again with the same
		 * webhook-id, which at-least-once delivery allows.  What
		 * applications enqueue is committed by their own transactions.
		 */
		{"synchronous_commit", "off"},
		/* short statements run thousands of times a second: never worth JIT */
		{"jit", "off"},

		/*
		 * Every statement of the worker finds its rows through an index.  A
		 * cached generic plan made while the queue was nearly empty chose a
		 * seq scan, and kept it once a backlog arrived: each claim became a
		 * scan of the whole table.  (Planning every execution instead cost
		 * 40 us per delivery.)
		 */
		{"enable_seqscan", "off"},
	};

	for (i = 0; i < nvars; i++)
	{
		struct config_generic *gen = vars[i];
		char		buf[64];
		const char *val;

		if (gen->source != PGC_S_DATABASE && gen->source != PGC_S_USER &&
			gen->source != PGC_S_DATABASE_USER)
			continue;
		if ((gen->flags & GUC_CUSTOM_PLACEHOLDER) || strncmp(gen->name, "webhooks.", 9) == 0 ||
			(gen->context != PGC_USERSET && gen->context != PGC_SUSET))
			continue;
		val = boot_value(gen, buf, sizeof(buf));
		if (val == NULL ||
			set_config_option(gen->name, val, PGC_SUSET, PGC_S_OVERRIDE, GUC_ACTION_SET,
							  true, WARNING, false) <= 0)
			continue;
		ereport(DEBUG1,
				(errmsg("webhooks worker: ignoring the database or role setting of \"%s\"", gen->name)));
	}
	for (i = 0; i < lengthof(pins); i++)
		SetConfigOption(pins[i][0], pins[i][1], PGC_SUSET, PGC_S_OVERRIDE);
}

/* ---------------------------------------------------------------------
 * transactions
 * ---------------------------------------------------------------------
 */

/* start a step's transaction, with SPI and a snapshot; "activity" for pg_stat_activity */
static void
begin_xact(const char *activity)
{
	pgstat_report_activity(STATE_RUNNING, activity);
	wk.activity[0] = '\0';
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

/* end a step's transaction */
static void
commit_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

/*
 * The worker's statements.  They run as superuser with search_path pinned
 * to pg_catalog, pg_temp, and are written so that every name resolves
 * there or in schema webhooks anyway: relations and functions qualified,
 * operators between types that match a pg_catalog operator exactly, times
 * computed here and passed as timestamptz parameters.
 */
static void
prepare_plans(void)
{
	Oid			t_cand[4] = {INT4OID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID};
	Oid			t_next_due[4] = {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};
	Oid			t_claim[3] = {INT8ARRAYOID, TIMESTAMPTZOID, INT8OID};
	Oid			t_hold[1] = {INT8ARRAYOID};
	Oid			t_record[1];
	Oid			t_leased[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Oid			t_delivered[5] = {INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZOID, INT8ARRAYOID};
	Oid			t_deactivate[2] = {INT8ARRAYOID, TEXTOID};

	if (plans.candidates != NULL)
		return;

	plans.result_typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
								   CStringGetDatum("_delivery_result"),
								   ObjectIdGetDatum(get_namespace_oid("webhooks", false)));
	if (!OidIsValid(plans.result_typid))
		elog(ERROR, "type webhooks._delivery_result does not exist");
	t_record[0] = get_array_type(plans.result_typid);
	plans.result_desc = lookup_rowtype_tupdesc_copy(plans.result_typid, -1);
	{
		MemoryContext old = MemoryContextSwitchTo(wk.worker_cxt);
		TupleDesc	copy = CreateTupleDescCopy(plans.result_desc);

		MemoryContextSwitchTo(old);
		plans.result_desc = copy;
	}

	/*
	 * Due rows per webhook (at most one active per event type, so few):
	 * each webhook's rows come from its own range of deliveries_due, so a
	 * saturated webhook's backlog is never scanned to find another's rows.
	 * A webhook listed in $3 with a floor in $4 is read from its floor on
	 * (see read_candidates).
	 */
	plans.candidates = wh_keep_plan(
		"SELECT c.id, w.id, w.is_active, c.next_attempt_at "
		"  FROM webhooks.webhooks w "
		"  LEFT JOIN ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4)) AS f(webhook_id, due_floor) "
		"    ON f.webhook_id = w.id "
		" CROSS JOIN LATERAL ("
		"       SELECT d.id, d.next_attempt_at FROM webhooks.deliveries d "
		"        WHERE d.webhook_id = w.id AND d.state = 'pending' "
		"          AND d.next_attempt_at >= COALESCE(f.due_floor, '-infinity'::pg_catalog.timestamptz) "
		"          AND d.next_attempt_at <= pg_catalog.now() "
		"        ORDER BY d.next_attempt_at "
		"        LIMIT $1 "
		"          FOR UPDATE SKIP LOCKED) c "
		" WHERE w.id <> ALL ($2)",
		4, t_cand);
	plans.claim = wh_keep_plan(
		"UPDATE webhooks.deliveries d "
		"   SET next_attempt_at = $2, lease_until = $2, lease_token = $3, "
		"       attempts = LEAST(d.attempts, 2147483646) + 1, "
		"       last_attempt_at = pg_catalog.now() "
		"  FROM webhooks.webhooks w "
		" WHERE d.id = ANY ($1) AND w.id = d.webhook_id AND w.is_active "
		"RETURNING d.id, d.attempts, d.body, w.id, w.name, w.target_url, w.secret, "
		"          CASE WHEN w.previous_secret_expires_at > pg_catalog.now() "
		"               THEN w.previous_secret END, "
		"          w.auth_token, w.headers, d.msg_id",
		3, t_claim);
	/*
	 * due rows of an inactive webhook (a race with its deactivation) are
	 * held, judged under a lock on the webhook row (a racing activation)
	 */
	plans.hold = wh_keep_plan("SELECT webhooks._hold_inactive($1)", 1, t_hold);
	/* webhooks with every slot taken are skipped: their completions wake us */
	plans.next_due = wh_keep_plan(
		"SELECT pg_catalog.min(x.t) FROM webhooks.webhooks w "
		"  LEFT JOIN ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS f(webhook_id, due_floor) "
		"    ON f.webhook_id = w.id "
		" CROSS JOIN LATERAL ("
		"       SELECT d.next_attempt_at AS t FROM webhooks.deliveries d "
		"        WHERE d.webhook_id = w.id AND d.state = 'pending' "
		"          AND d.next_attempt_at >= COALESCE(f.due_floor, '-infinity'::pg_catalog.timestamptz) "
		"          AND d.next_attempt_at <= $4 "
		"        ORDER BY d.next_attempt_at LIMIT 1) x "
		" WHERE w.id <> ALL ($1)",
		4, t_next_due);
	plans.record = wh_keep_plan("SELECT webhooks._record_results($1)", 1, t_record);

	/*
	 * Successes, most results: the webhook's state does not matter and
	 * there is no log row, so only the rows are locked (skipped when
	 * another session holds them, as _record_results() does), then moved
	 * from the queue to the history under their lease.  Two statements, every access to deliveries by the
	 * id list: a generic plan can neither scan the table, however small it
	 * was when the plan was made, nor rescan the locked rows per row.
	 */
	plans.lock_rows = wh_keep_plan(
		"SELECT x.id FROM webhooks.deliveries x "
		" WHERE x.id = ANY ($1) FOR UPDATE SKIP LOCKED",
		1, t_delivered);
	plans.record_delivered = wh_keep_plan(
		"WITH f AS ("
		"  DELETE FROM webhooks.deliveries d "
		"   USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
		"                    pg_catalog.unnest($3)) AS r(id, token, status) "
		"   WHERE d.id = ANY ($5) AND d.id = r.id AND d.lease_token = r.token "
		"  RETURNING d.id, d.webhook_id, d.event_type, d.body, d.attempts, d.created_at, "
		"            d.last_attempt_at, d.msg_id, r.status) "
		"INSERT INTO webhooks.delivery_history (id, webhook_id, event_type, body, state, attempts, "
		"       created_at, last_attempt_at, finished_at, last_status, msg_id) "
		"SELECT f.id, f.webhook_id, f.event_type, f.body, 'delivered', f.attempts, "
		"       f.created_at, f.last_attempt_at, $4, f.status, f.msg_id FROM f "
		"RETURNING id",
		5, t_delivered);
	/* of results not written, those whose lease is still ours (rows locked) */
	plans.still_leased = wh_keep_plan(
		"SELECT d.id FROM webhooks.deliveries d, "
		"       ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS r(id, token) "
		" WHERE d.id = r.id AND d.lease_token = r.token",
		2, t_leased);
	plans.deactivate = wh_keep_plan("SELECT webhooks._deactivate_gone($1, $2)", 2, t_deactivate);
	/* leases of deliveries claimed but never sent: due again, attempt undone */
	plans.release = wh_keep_plan(
		"UPDATE webhooks.deliveries d "
		"   SET lease_until = NULL, lease_token = NULL, next_attempt_at = pg_catalog.now(), "
		"       attempts = GREATEST(d.attempts - 1, 0) "
		"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS r(id, token) "
		" WHERE d.id = r.id AND d.lease_token = r.token",
		2, t_leased);
}

/* after DROP EXTENSION or an error: saved plans may point at dropped objects */
static void forget_floors(void);

static void
forget_plans(void)
{
	SPIPlanPtr *all[] = {&plans.candidates, &plans.claim, &plans.hold, &plans.next_due,
		&plans.record, &plans.record_delivered, &plans.lock_rows, &plans.still_leased,
		&plans.deactivate, &plans.release};
	int			i;

	for (i = 0; i < lengthof(all); i++)
	{
		if (*all[i] != NULL)
			SPI_freeplan(*all[i]);
		*all[i] = NULL;
	}
	if (plans.result_desc != NULL)
		FreeTupleDesc(plans.result_desc);
	plans.result_desc = NULL;
	plans.result_typid = InvalidOid;
	forget_floors();
}

/*
 * Is the extension installed, at the version this library is written for?
 * An install that was not updated (ALTER EXTENSION webhooks UPDATE) is
 * waited for, not guessed at.  An extension dropped and created again
 * between two looks (in one transaction, say) is a new install: its version
 * is checked again and nothing prepared for the old one is used.
 */
static bool
check_extension(void)
{
	Oid			oid = get_extension_oid("webhooks", true);
	bool		present = OidIsValid(oid);
	char		problem[NAMEDATALEN + 64] = "";

	if (present && wk.extension_present && oid != wk.extension_oid)
	{
		ereport(LOG,
				(errmsg("webhooks worker: extension webhooks was dropped and created again")));
		forget_plans();
		wk.leases_released = false;
		wk.orphans_seen = false;
		wk.extension_present = false;
		wk.next_maintenance = 0;	/* look again soon, not at the next maintenance */
	}
	if (present && !wk.extension_present)
	{
		bool		isnull;
		Datum		v;

		if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'webhooks'",
						true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the extension's version");
		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (strcmp(TextDatumGetCString(v), WEBHOOKS_VERSION) != 0)
		{
			snprintf(problem, sizeof(problem), "%s", TextDatumGetCString(v));
			present = false;
		}
	}
	if (problem[0] != '\0' && strcmp(problem, wk.installed_version) != 0)
		ereport(LOG,
				(errmsg("webhooks worker: extension webhooks is at version %s, this library needs %s",
						problem, WEBHOOKS_VERSION),
				 errhint("Run ALTER EXTENSION webhooks UPDATE in database \"%s\".", wk.dbname)));
	strlcpy(wk.installed_version, problem, sizeof(wk.installed_version));

	if (!present && wk.extension_present)
	{
		ereport(LOG,
				(errmsg("webhooks worker: extension dropped")));
		wk.leave_at = GetCurrentTimestamp();
		forget_plans();
		wk.leases_released = false;
		wk.orphans_seen = false;
		wk.next_maintenance = 0;
	}
	else if (present && !wk.extension_present)
		ereport(LOG,
				(errmsg("webhooks worker: serving database \"%s\"", wk.dbname)));
	wk.extension_present = present;
	wk.extension_oid = present ? oid : InvalidOid;
	/* the launcher starts the database's other workers once one serves */
	if (present && !wk.db->serving)
	{
		wk.db->serving = true;
		if (wh_workers_per_database > 1)
			wh_wake_launcher();
	}
	/* an install at another version keeps its worker (waiting for UPDATE) */
	if (present || problem[0] != '\0')
		wk.leave_at = 0;
	return present;
}

/* ---------------------------------------------------------------------
 * arrays for SPI parameters
 * ---------------------------------------------------------------------
 */

/* a one-dimensional array of n elements, for a statement's parameter */
static Datum
make_array(Datum *elems, bool *nulls, int n, Oid elmtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1] = {1};

	dims[0] = n;
	get_typlenbyvalalign(elmtype, &typlen, &typbyval, &typalign);
	if (n == 0)
		return PointerGetDatum(construct_empty_array(elmtype));
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, elmtype,
											  typlen, typbyval, typalign));
}

/* ---------------------------------------------------------------------
 * slots
 * ---------------------------------------------------------------------
 */

/* the worker's record of a webhook, made on first use */
static WebhookSlot *
slot_for(int64 webhook_id)
{
	bool		found;
	WebhookSlot *s = hash_search(wk.slots, &webhook_id, HASH_ENTER, &found);

	if (!found)
	{
		s->in_flight = 0;
		s->unrecorded = 0;
		s->more_due = false;
		s->left_out = false;
		s->share = 0;
		s->valid_url = NULL;
		s->http1_only = false;
		s->counted = 0;
		s->count_idx = -1;
		s->claim_counted = 0;
		s->has_floor = false;
	}
	return s;
}

/* ---------------------------------------------------------------------
 * requests in flight per webhook, over all the database's workers
 * ---------------------------------------------------------------------
 */

/*
 * The database's count of a webhook's requests in flight (shared by its
 * workers), found or taken under the lock; NULL when the entry has no room
 * (WH_WEBHOOKS_PER_DATABASE webhooks with requests in flight at once).  A
 * count at zero may be given to another webhook: the caller checks the id
 * again after counting.
 */
static WhWebhookCount *
shared_count(WebhookSlot *s)
{
	WhWebhookCount *c;
	int			free_idx = -1;

	if (s->count_idx >= 0)
	{
		c = &wk.db->webhooks[s->count_idx];
		if (pg_atomic_read_u64(&c->webhook_id) == (uint64) s->webhook_id)
			return c;
	}
	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	s->count_idx = -1;
	for (int k = 0; k < WH_WEBHOOKS_PER_DATABASE && s->count_idx < 0; k++)
	{
		c = &wk.db->webhooks[k];
		if (pg_atomic_read_u64(&c->webhook_id) == (uint64) s->webhook_id)
			s->count_idx = k;
		else if (free_idx < 0 && (pg_atomic_read_u64(&c->webhook_id) == 0 ||
								  pg_atomic_read_u32(&c->in_flight) == 0))
			free_idx = k;
	}
	if (s->count_idx < 0 && free_idx >= 0)
	{
		pg_atomic_write_u64(&wk.db->webhooks[free_idx].webhook_id, (uint64) s->webhook_id);
		s->count_idx = free_idx;
	}
	LWLockRelease(wh_shared->lock);
	return s->count_idx >= 0 ? &wk.db->webhooks[s->count_idx] : NULL;
}

/*
 * Count up to "want" more requests to a webhook in this claim, as many as
 * webhooks.max_concurrency_per_webhook leaves over all the database's
 * workers; how many.  Without room for a shared count (more than
 * WH_WEBHOOKS_PER_DATABASE webhooks with requests in flight), each worker
 * keeps to its part of the cap, uncounted.
 */
static int
count_requests(WebhookSlot *s, int want)
{
	int			cap = wh_max_concurrency_per_webhook;

	while (want > 0)
	{
		WhWebhookCount *c = shared_count(s);
		uint32		cur;
		int			n;

		if (c == NULL)
			return Max(0, Min(want, Max(cap / Max(wh_workers_per_database, 1), 1) - s->in_flight));
		cur = pg_atomic_read_u32(&c->in_flight);
		n = Min(want, cap - (int) cur);
		if (n <= 0)
			return 0;
		if (!pg_atomic_compare_exchange_u32(&c->in_flight, &cur, cur + n))
			continue;
		if (pg_atomic_read_u64(&c->webhook_id) != (uint64) s->webhook_id)
		{
			/* given to another webhook meanwhile: take it back, look again */
			pg_atomic_fetch_sub_u32(&c->in_flight, n);
			continue;
		}
		s->counted += n;
		s->claim_counted += n;
		return n;
	}
	return 0;
}

/* n requests to a webhook counted by count_requests are over (or never began) */
static void
uncount_requests(WebhookSlot *s, int n)
{
	n = Min(n, s->counted);
	if (n <= 0)
		return;
	s->counted -= n;
	if (s->count_idx >= 0 &&
		pg_atomic_read_u64(&wk.db->webhooks[s->count_idx].webhook_id) == (uint64) s->webhook_id)
		pg_atomic_fetch_sub_u32(&wk.db->webhooks[s->count_idx].in_flight, n);
}

/*
 * Counted by a claim and not leased (rows gone, fewer picked, an error):
 * over.  The leased ones were marked on their deliveries.
 */
static void
uncount_claim_leftovers(void)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;

	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		if (s->claim_counted > 0)
		{
			uncount_requests(s, s->claim_counted);
			s->claim_counted = 0;
		}
}

/* a delivery's request is over, or will never be sent */
static void
uncount_delivery(Delivery *d)
{
	if (d->counted)
	{
		uncount_requests(slot_for(d->req.webhook_id), 1);
		d->counted = false;
	}
}

/* at exit: whatever this worker counted is over */
static void
uncount_all_requests(void)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;

	if (wk.slots == NULL || wk.db == NULL)
		return;
	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		uncount_requests(s, s->counted);
}

/* a reload gives HTTP/2 another chance with every webhook */
static void
forget_http1_fallbacks(void)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;

	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		s->http1_only = false;
}

/*
 * How many of its slots a capped webhook must have free before it is worth
 * another claim: refilling in chunks keeps claim transactions few.
 */
static int
refill_quantum(int cap)
{
	return Max(1, cap / 4);
}

/*
 * The last slots of webhooks.max_concurrency are kept for the first request
 * of webhooks that have none in flight: a webhook with new work never waits
 * for busy webhooks' requests to end.
 */
static int
reserved_slots(void)
{
	return Max(1, wh_max_concurrency / 16);
}

/* the most a webhook may hold: its fair share, as of the last claim */
static int
share_of(WebhookSlot *s)
{
	return s->share > 0 ? Min(s->share, wh_max_concurrency_per_webhook) : wh_max_concurrency_per_webhook;
}

/*
 * A webhook with requests in flight is worth a claim when a quantum of its
 * share is free (so refills come in chunks); one with none always is.
 */
static bool
wants_refill(WebhookSlot *s)
{
	int			share = share_of(s);

	return s->in_flight == 0 || share - s->in_flight >= refill_quantum(share);
}

/*
 * Webhooks to leave out of the next claim: those whose results wait on a
 * lock, and those without a quantum of their share free.
 */
static Datum
saturated_webhooks(void)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;
	Datum	   *ids = palloc(sizeof(Datum) * (hash_get_num_entries(wk.slots) + 1));
	int			n = 0;

	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		s->left_out = true;
		if (s->unrecorded >= wh_max_concurrency)
		{
			/*
			 * Its results wait for rows another session holds: one locked
			 * row does not stop a webhook, but results it cannot record are
			 * not piled up without bound either.
			 */
			ids[n++] = Int64GetDatum(s->webhook_id);
		}
		else if (s->in_flight >= wh_max_concurrency_per_webhook || !wants_refill(s))
		{
			/* left out, so it may have due rows: its completions will tell */
			s->more_due = true;
			ids[n++] = Int64GetDatum(s->webhook_id);
		}
		else
			s->left_out = false;
	}
	return make_array(ids, NULL, n, INT8OID);
}

/* qsort comparator of ints */
static int
cmp_int(const void *a, const void *b)
{
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	return (x > y) - (x < y);
}

/*
 * Max-min fair share: the level L such that webhooks wanting up to
 * demand[i] slots, each given min(demand[i], L), fill capacity.  Webhooks
 * that want less than their share leave the rest to the others.  Sorts
 * demand.
 */
static int
fair_level(int *demand, int n, int capacity)
{
	int			remaining = Max(capacity, 0);
	int			k;

	qsort(demand, n, sizeof(int), cmp_int);
	for (k = 0; k < n; k++)
	{
		int			fair = (remaining + (n - k) - 1) / (n - k);

		if (demand[k] > fair)
			return fair;
		remaining = Max(remaining - demand[k], 0);
	}
	return wh_max_concurrency_per_webhook;	/* every demand is met */
}

/* ---------------------------------------------------------------------
 * send-time checks: rows written by hand get the same checks as the API
 * ---------------------------------------------------------------------
 */

/*
 * A leased row's send-time checks (rows written by hand get the same rules
 * as the API): NULL, or why it is rejected without a request.
 */
static const char *
precheck(Delivery *d, const char *secret, const char *previous_secret,
		 const char *auth_token, Jsonb *headers)
{
	WhProblem	problem;
	WebhookSlot *slot = slot_for(d->req.webhook_id);

	/* the same URL as the webhook's last delivery: already checked */
	if (slot->valid_url == NULL || strcmp(slot->valid_url, d->req.url) != 0 ||
		slot->valid_url_private != wh_allow_private_targets)
	{
		if (slot->valid_url != NULL)
			pfree(slot->valid_url);
		slot->valid_url = NULL;
		if (!wh_valid_target_url(d->req.url, &problem))
			return wh_refusal(&problem);
		slot->valid_url = MemoryContextStrdup(wk.worker_cxt, d->req.url);
		slot->valid_url_private = wh_allow_private_targets;
	}
	if (!wh_valid_delivery(d->msg_id, d->req.body, secret, previous_secret,
						   auth_token, headers, &problem))
		return wh_refusal(&problem);
	return NULL;
}

/* ---------------------------------------------------------------------
 * claim
 * ---------------------------------------------------------------------
 */

/* a text column of an SPI row as a C string, or NULL */
static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* a request is over (or never started): remember its result for the flush */
static void
add_finished(Delivery *d)
{
	wk.finished[wk.nfinished++] = d;
	if (wk.nfinished == 1)
		wk.first_finished_at = GetCurrentTimestamp();
}

/* hand a delivery to the engine (or, rejected by precheck, straight to the results) */
static void
start_delivery(Delivery *d)
{
	WebhookSlot *s;

	if (d->precheck_error != NULL)
	{
		/* counts as an attempt that failed before any connection */
		d->req.done = true;
		d->req.status = 0;
		d->req.result = CURLE_OK;
		uncount_delivery(d);
		add_finished(d);
		return;
	}
	s = slot_for(d->req.webhook_id);
	s->in_flight++;
	wk.in_flight++;
	d->req.http1_only = s->http1_only;
	wh_engine_add(wk.engine, &d->req);
}

/*
 * Hand the deliveries of a committed claim to the engine.  Until then they
 * live in the loop's memory and are listed as unstarted: an error on the
 * way frees them with the loop's memory and releases their leases.
 */
static void
start_claimed(void)
{
	while (wk.unstarted_from < wk.nunstarted)
	{
		Delivery   *d = wk.unstarted[wk.unstarted_from++];

		MemoryContextSetParent(d->cxt, wk.deliveries_cxt);
		start_delivery(d);
	}
	wk.nunstarted = wk.unstarted_from = 0;
}

/* after an error: the leases of claimed deliveries that were never sent */
static void
forget_unstarted(void)
{
	int			i;

	for (i = wk.unstarted_from; i < wk.nunstarted; i++)
	{
		uncount_delivery(wk.unstarted[i]);
		wk.to_release[wk.nto_release] = wk.unstarted[i]->req.delivery_id;
		wk.to_release_tokens[wk.nto_release++] = wk.unstarted[i]->lease_token;
	}
	wk.nunstarted = wk.unstarted_from = 0;
}

/* release the leases of claimed deliveries that were never sent */
static void
step_release(void)
{
	Datum		args[2];
	Datum	   *ids = palloc(sizeof(Datum) * wk.nto_release);
	Datum	   *tokens = palloc(sizeof(Datum) * wk.nto_release);
	int			i;

	for (i = 0; i < wk.nto_release; i++)
	{
		ids[i] = Int64GetDatum(wk.to_release[i]);
		tokens[i] = Int64GetDatum(wk.to_release_tokens[i]);
	}
	begin_xact("releasing unsent deliveries");
	if (check_extension())
	{
		prepare_plans();
		args[0] = make_array(ids, NULL, wk.nto_release, INT8OID);
		args[1] = make_array(tokens, NULL, wk.nto_release, INT8OID);
		if (SPI_execute_plan(plans.release, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not release unsent deliveries");
	}
	commit_xact();
	wk.nto_release = 0;
	wk.maybe_work = true;
}

/* the due rows of one webhook in a claim */
typedef struct ClaimGroup
{
	WebhookSlot *slot;
	int			first;			/* its rows: rows[first] .. rows[first + n - 1] */
	int			n;
	int			taken;
	int			allowance;		/* how many more it may hold */
} ClaimGroup;

/*
 * Share the free slots among the webhooks of a claim (groups, their due
 * rows in "rows", at most "limit" each) and pick at most "room" rows into
 * "pick"; returns how many.
 *
 * Every webhook that is busy (requests in flight, or due rows) may hold its
 * max-min fair share of webhooks.max_concurrency less the reserved slots,
 * and never more than webhooks.max_concurrency_per_webhook; a webhook
 * holding more than its share (others became busy since) gets nothing until
 * it is below it.  The reserved slots take only the first request of a
 * webhook with none in flight, so new work starts at once however busy the
 * others are.  Rows are taken one per webhook in turn, from a starting
 * webhook that rotates from claim to claim.
 */
static int
pick_fairly(ClaimGroup *groups, int ngroups, Datum *rows, int room, int limit, Datum *pick)
{
	int			cap = wh_max_concurrency_per_webhook;
	int			capacity = wh_max_concurrency - reserved_slots();
	int		   *demand = palloc(sizeof(int) * (hash_get_num_entries(wk.slots) + ngroups + 1));
	int			ndemand = 0;
	int			share;
	int			free_all = room;
	int			free_shared = capacity - wk.in_flight;
	int			npick = 0;
	int			start;
	int			g;
	bool		progress;
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;

	/* what each busy webhook wants: its due rows, or more when some were left */
	for (g = 0; g < ngroups; g++)
		demand[ndemand++] = Min(cap, groups[g].n >= limit ? cap : groups[g].slot->in_flight + groups[g].n);
	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		bool		in_claim = false;

		for (g = 0; g < ngroups && !in_claim; g++)
			in_claim = (groups[g].slot == s);
		if (in_claim)
			continue;
		if (!s->left_out)
			s->more_due = false;	/* looked at, and nothing was due */
		if (s->left_out && s->more_due)
			demand[ndemand++] = cap;
		else if (s->in_flight > 0)
			demand[ndemand++] = Min(cap, s->in_flight);
	}
	share = Min(cap, Max(1, fair_level(demand, ndemand, capacity)));

	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		s->share = share;
	for (g = 0; g < ngroups; g++)
	{
		ClaimGroup *gr = &groups[g];

		gr->allowance = Max(share - gr->slot->in_flight, gr->slot->in_flight == 0 ? 1 : 0);
		/* and the webhook's cap over all the database's workers */
		gr->allowance = count_requests(gr->slot, Min(gr->allowance, gr->n));
	}

	/* round robin */
	start = ngroups > 0 ? (int) (wk.claim_rotor++ % (uint32) ngroups) : 0;
	do
	{
		progress = false;
		for (g = 0; g < ngroups && free_all > 0; g++)
		{
			ClaimGroup *gr = &groups[(start + g) % ngroups];

			if (gr->taken >= gr->n || gr->taken >= gr->allowance)
				continue;
			/* past the first request of an idle webhook, the reserve is not for it */
			if (free_shared <= 0 && !(gr->slot->in_flight == 0 && gr->taken == 0))
				continue;
			pick[npick++] = rows[gr->first + gr->taken++];
			free_all--;
			free_shared--;
			progress = true;
		}
	} while (progress && free_all > 0);

	/* a webhook cut short may have more due: its completions will tell */
	for (g = 0; g < ngroups; g++)
		groups[g].slot->more_due = (groups[g].taken < groups[g].n || groups[g].n >= limit);
	return npick;
}

/* the due rows a claim found: the active webhooks' by webhook, the others' */
typedef struct Candidates
{
	ClaimGroup *groups;
	int			ngroups;
	Datum	   *rows;			/* delivery ids, each group's together, oldest first */
	TimestampTz *due;			/* and their next_attempt_at */
	Datum	   *held;			/* rows of inactive webhooks: to be held */
	int			nheld;
} Candidates;

/*
 * A lease token says which worker of the database holds the lease: its
 * number in the top byte (below the sign bit), then 56 bits that are random
 * per worker start and count its claims.
 */
#define LEASE_OWNER_SHIFT 56

static int64
lease_token_of(int index, uint64 n)
{
	return (int64) (((uint64) index << LEASE_OWNER_SHIFT) | (n & ((UINT64CONST(1) << LEASE_OWNER_SHIFT) - 1)));
}

/*
 * A worker that starts releases the leases its number held before (a
 * crash, a restart: nothing of them is in flight any more) and, the first
 * worker, those of numbers beyond webhooks.workers_per_database, of tokens
 * from before leases had owners and of rows leased by hand (no token).
 * Other workers' leases are theirs; an expired lease is due again anyway.
 */
static void
release_previous_leases(void)
{
	Datum		args[2] = {Int32GetDatum(wk.index), Int32GetDatum(wk.index == 0 ? wh_workers_per_database : 0)};
	Oid			argtypes[2] = {INT4OID, INT4OID};

	if (wk.leases_released)
		return;
	if (SPI_execute_with_args("UPDATE webhooks.deliveries SET next_attempt_at = pg_catalog.now(), lease_until = NULL, "
							  "       lease_token = NULL "
							  " WHERE state = 'pending' AND lease_until IS NOT NULL "
							  "   AND (lease_token >> " CppAsString2(LEASE_OWNER_SHIFT) " = $1 "
							  "        OR ($2 > 0 AND (lease_token IS NULL OR lease_token < 0 "
							  "                        OR lease_token >> " CppAsString2(LEASE_OWNER_SHIFT) " >= $2)))",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not release the leases of a previous worker");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("webhooks worker %d: released %llu deliveries leased by a previous worker",
						wk.index, (unsigned long long) SPI_processed)));
	wk.leases_released = true;
}

/*
 * Floors.  A claim reads each webhook's due rows in deliveries_due order
 * (next_attempt_at), and a claimed or finished row leaves its old index
 * entry behind until vacuum removes it, which a snapshot held open (a long
 * pg_dump) prevents: with every claim reading the queue from its start,
 * each walked all the entries of the rows delivered since the snapshot was
 * taken, and a 5-minute snapshot cut the worker to a seventh of its rate
 * (perf: 77 % of its CPU in the claim's and find_next_due's index scans).
 * So a claim starts each webhook at its floor, the due time of the first
 * row it did not take last time (or of its last taken row).  Rows can still
 * become due below a floor: a transaction's events carry its start time
 * and may commit after later ones were claimed, a row skipped as locked
 * stays, a held row released keeps its time.  A full claim from the start
 * of every webhook finds them, and resets the floors: the first claim after
 * next_full_scan, set after each full claim to 20 times what it took (at
 * most 10 s).  A full claim costs what a bounded one does when nothing is
 * dead, so then they alternate every few milliseconds; with a snapshot held
 * they make a twentieth of the worker's time until one takes half a
 * second, more as the dead entries pile up (in the soak, the last of 5
 * minutes held at 4,600 events/s).  A 60 s bound kept the hold flat but
 * was slower after the release in one run (RESULTS.md).
 */
#define SCAN_COST_FACTOR 20
#define FULL_SCAN_MAX_INTERVAL_MS 10000
#define NEXT_DUE_MAX_INTERVAL_MS POLL_INTERVAL_MS

static void
forget_floors(void)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;

	wk.next_full_scan = 0;
	wk.next_due_check = 0;
	if (wk.slots == NULL)
		return;
	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		s->has_floor = false;
}

/* the floors as two arrays (webhook ids, times); empty ones for a full claim */
static void
floor_arrays(bool full, Datum *ids, Datum *floors)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;
	long		n = hash_get_num_entries(wk.slots);
	Datum	   *id = palloc(sizeof(Datum) * (n + 1));
	Datum	   *at = palloc(sizeof(Datum) * (n + 1));
	int			k = 0;

	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		if (!full && s->has_floor)
		{
			id[k] = Int64GetDatum(s->webhook_id);
			at[k] = TimestampTzGetDatum(s->due_floor);
			k++;
		}
	*ids = make_array(id, NULL, k, INT8OID);
	*floors = make_array(at, NULL, k, TIMESTAMPTZOID);
}

/* when the next full claim or due-time read may run, after one that took "from" to "to" */
static TimestampTz
after_scan(TimestampTz from, TimestampTz to, int max_ms)
{
	int64		took_us = Max(to - from, 0);

	return TimestampTzPlusMilliseconds(to, Min(took_us * SCAN_COST_FACTOR / 1000, (int64) max_ms));
}

/*
 * The claim's rows are taken or left: each webhook's floor is the due time
 * of its first row left, or of its last row taken.
 */
static void
set_floors(Candidates *c)
{
	for (int g = 0; g < c->ngroups; g++)
	{
		ClaimGroup *gr = &c->groups[g];

		if (gr->n == 0)
			continue;
		gr->slot->due_floor = c->due[gr->first + Min(gr->taken, gr->n - 1)];
		gr->slot->has_floor = true;
	}
}

/*
 * Lock up to "room" due rows of each webhook not in "saturated" and group
 * them by webhook.  False when the install changed meanwhile: the query may
 * have waited for a DROP/CREATE EXTENSION to commit and then run against
 * the new install's tables; the next check sees the change.
 */
static bool
read_candidates(int room, Datum saturated, Candidates *c)
{
	Datum		args[4] = {Int32GetDatum(room), saturated};
	TimestampTz start = GetCurrentTimestamp();
	bool		full = start >= wk.next_full_scan;
	int			ncand,
				nactive = 0,
				i;
	Datum	   *ids;
	TimestampTz *due;
	int		   *group_of;

	floor_arrays(full, &args[2], &args[3]);
	if (SPI_execute_plan(plans.candidates, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not select due deliveries");
	if (full)
		wk.next_full_scan = after_scan(start, GetCurrentTimestamp(), FULL_SCAN_MAX_INTERVAL_MS);
	if (get_extension_oid("webhooks", true) != wk.extension_oid)
		return false;
	ncand = (int) SPI_processed;
	ids = palloc(sizeof(Datum) * (ncand + 1));
	due = palloc(sizeof(TimestampTz) * (ncand + 1));
	group_of = palloc(sizeof(int) * (ncand + 1));
	c->rows = palloc(sizeof(Datum) * (ncand + 1));
	c->due = palloc(sizeof(TimestampTz) * (ncand + 1));
	c->held = palloc(sizeof(Datum) * (ncand + 1));
	c->groups = palloc0(sizeof(ClaimGroup) * (ncand + 1));
	c->ngroups = c->nheld = 0;

	for (i = 0; i < ncand; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		id = SPI_getbinval(tup, desc, 1, &isnull);
		int64		webhook_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		int			g;

		if (!DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
		{
			c->held[c->nheld++] = id;
			continue;
		}
		for (g = c->ngroups - 1; g >= 0; g--)
			if (c->groups[g].slot->webhook_id == webhook_id)
				break;
		if (g < 0)
		{
			g = c->ngroups++;
			c->groups[g].slot = slot_for(webhook_id);
		}
		c->groups[g].n++;
		group_of[nactive] = g;
		due[nactive] = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
		ids[nactive++] = id;
	}
	for (i = 1; i < c->ngroups; i++)
		c->groups[i].first = c->groups[i - 1].first + c->groups[i - 1].n;
	for (i = 0; i < nactive; i++)
	{
		ClaimGroup *gr = &c->groups[group_of[i]];

		c->due[gr->first + gr->taken] = due[i];
		c->rows[gr->first + gr->taken++] = ids[i];
	}
	for (i = 0; i < c->ngroups; i++)
		c->groups[i].taken = 0;
	return true;
}

/* due rows of inactive webhooks (a race with a deactivation) are held */
static void
hold_rows(Datum *ids, int n)
{
	Datum		arg;

	if (n == 0)
		return;
	arg = make_array(ids, NULL, n, INT8OID);
	if (SPI_execute_plan(plans.hold, &arg, NULL, false, 0) < 0)
		elog(ERROR, "could not hold deliveries of inactive webhooks");
}

/* a leased row (plans.claim's RETURNING) as a delivery ready to send */
static Delivery *
delivery_from_row(HeapTuple tup, TupleDesc desc, int64 lease_token)
{
	/* in the loop's memory until the engine has it (start_claimed) */
	MemoryContext dcxt = AllocSetContextCreate(wk.loop_cxt, "webhooks delivery", ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(dcxt);
	Delivery   *d = palloc0(sizeof(Delivery));
	bool		isnull;
	char	   *secret;
	char	   *previous_secret;
	char	   *auth_token;
	Jsonb	   *headers = NULL;
	Datum		hd;

	d->cxt = dcxt;
	d->req.delivery_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	d->req.attempt = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	d->req.body = spi_text(tup, desc, 3);
	d->req.webhook_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	d->webhook_name = spi_text(tup, desc, 5);
	d->req.url = spi_text(tup, desc, 6);
	secret = spi_text(tup, desc, 7);
	previous_secret = spi_text(tup, desc, 8);
	auth_token = spi_text(tup, desc, 9);
	hd = SPI_getbinval(tup, desc, 10, &isnull);
	if (!isnull)
		headers = DatumGetJsonbPCopy(hd);
	d->msg_id = spi_text(tup, desc, 11);
	d->lease_token = lease_token;
	d->req.arg = d;
	d->precheck_error = precheck(d, secret, previous_secret, auth_token, headers);
	if (d->precheck_error == NULL)
		d->req.headers = wh_build_headers(d->msg_id, d->req.body, secret, previous_secret,
										  auth_token, headers);
	MemoryContextSwitchTo(old);
	return d;
}

/*
 * Lease the picked rows under a new token and list them as unstarted.  The
 * lease outlives any request: the total timeout, twice, plus a margin.
 */
static void
lease_rows(Datum *ids, int n)
{
	int64		lease_token = lease_token_of(wk.index, wk.lease_token_base + ++wk.claims_made);
	Datum		args[3];
	uint64		i;

	args[0] = make_array(ids, NULL, n, INT8OID);
	args[1] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															  2 * (int64) wh_request_timeout_ms + 60000));
	args[2] = Int64GetDatum(lease_token);
	if (SPI_execute_plan(plans.claim, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim deliveries");
	for (i = 0; i < SPI_processed; i++)
	{
		Delivery   *d = delivery_from_row(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, lease_token);
		WebhookSlot *s = slot_for(d->req.webhook_id);

		/* counted for this claim: now the delivery's */
		if (s->claim_counted > 0)
		{
			s->claim_counted--;
			d->counted = true;
		}
		wk.unstarted[wk.nunstarted++] = d;
	}
}

/*
 * When the queue ran dry: sleep until its next due row.  Due rows that the
 * claim could not take are locked by another session (SKIP LOCKED): do not
 * spin on them, the poll comes back.  Only the next poll interval is read
 * (the poll claims anyway), from each webhook's floor, and not again before
 * 20 times what the last read took (the floors' reasons, above: a held
 * snapshot leaves the entries of the rows claimed meanwhile, due at their
 * lease's end, in this range).
 */
static void
find_next_due(Datum saturated)
{
	bool		isnull;
	Datum		due;
	Datum		args[4] = {saturated};
	TimestampTz start = GetCurrentTimestamp();

	if (start < wk.next_due_check)
		return;
	floor_arrays(false, &args[1], &args[2]);
	args[3] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(start, POLL_INTERVAL_MS));
	if (SPI_execute_plan(plans.next_due, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the next due time");
	wk.next_due_check = after_scan(start, GetCurrentTimestamp(), NEXT_DUE_MAX_INTERVAL_MS);
	due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	wk.next_due = isnull ? 0 : DatumGetTimestampTz(due);
	if (wk.next_due != 0 && wk.next_due <= GetCurrentTimestamp())
		wk.next_due = 0;
}

/*
 * Claim up to "room" due deliveries, fairly among the webhooks, and start
 * them once the leases are committed.  Returns how many were claimed
 * (equal to room when more may be waiting).
 */
static int
claim(int room)
{
	Candidates	c;
	Datum		saturated;
	Datum	   *pick;
	int			npick;

	begin_xact("claiming deliveries");
	if (!check_extension())
	{
		commit_xact();
		return 0;
	}
	release_previous_leases();
	prepare_plans();
	saturated = saturated_webhooks();
	if (!read_candidates(room, saturated, &c))
	{
		commit_xact();
		return 0;
	}
	pick = palloc(sizeof(Datum) * (room + 1));
	npick = pick_fairly(c.groups, c.ngroups, c.rows, room, room, pick);
	hold_rows(c.held, c.nheld);
	if (npick > 0)
		lease_rows(pick, npick);
	set_floors(&c);
	uncount_claim_leftovers();
	if (npick < room)
		find_next_due(saturated);
	commit_xact();

	/* only now, with the leases committed, does anything touch the network */
	start_claimed();
	return npick;
}

/* ---------------------------------------------------------------------
 * record
 * ---------------------------------------------------------------------
 */

/* when to try a failed delivery again: Retry-After, or the schedule with jitter */
static int64
retry_delay_ms(Delivery *d)
{
	int64		delay;
	/* attempts made so far: >= 1 after a claim, and the caller checked the end */
	int			n = Min(Max(d->req.attempt, 1), wh_retry_count);

	if ((d->req.status == 429 || d->req.status == 503) && d->req.retry_after_s >= 0)
	{
		int64		s = Max(d->req.retry_after_s, 1);

		s = Min(s, (int64) wh_retry_after_max_s);
		return s * 1000;
	}
	delay = wh_retry_delays_ms[n - 1];
	/* +-10 % jitter, so retries of a burst do not arrive in lockstep */
	delay += (int64) ((pg_prng_double(&pg_global_prng_state) * 0.2 - 0.1) * delay);
	return Max(delay, 0);
}

/* a delivery's memory, request included */
static void
free_delivery(Delivery *d)
{
	MemoryContextDelete(d->cxt);
}

/* the columns of webhooks._delivery_result, in order */
enum
{
	R_DELIVERY_ID, R_LEASE_TOKEN, R_STATE, R_STATUS, R_ERROR, R_NEXT_AT, R_FINISHED_AT,
	R_LOG_OUTCOME, R_LOG_NEXT_AT, R_OCCURRED_AT, R_WEBHOOK_ID, R_WEBHOOK_NAME, R_MSG_ID,
	R_ATTEMPT, R_DURATION_MS, R_PAYLOAD, R_NCOLS
};

/* Outcomes of finished requests, as rows of webhooks._delivery_result. */
typedef struct ResultBatch
{
	int			n;
	Datum	   *rows;
	/* successes, written by plan_record_delivered: id, lease token, status */
	int			nok;
	Datum	   *ok_ids;
	Datum	   *ok_tokens;
	Datum	   *ok_status;
	TimestampTz now;
	TimestampTz earliest_retry; /* 0: no retry scheduled */
	Datum	   *gone;			/* webhooks that answered 410 Gone */
	int			ngone;
} ResultBatch;

/* an empty batch for up to "capacity" results */
static void
result_batch_init(ResultBatch *b, int capacity)
{
	b->n = 0;
	b->rows = palloc(sizeof(Datum) * capacity);
	b->nok = 0;
	b->ok_ids = palloc(sizeof(Datum) * capacity);
	b->ok_tokens = palloc(sizeof(Datum) * capacity);
	b->ok_status = palloc(sizeof(Datum) * capacity);
	b->now = GetCurrentTimestamp();
	b->earliest_retry = 0;
	b->gone = palloc(sizeof(Datum) * capacity);
	b->ngone = 0;
}

/* Decide what follows a finished request, and add its row. */
static void
result_batch_add(ResultBatch *b, Delivery *d)
{
	WhRequest  *r = &d->req;
	Datum		v[R_NCOLS];
	bool		isnull[R_NCOLS];
	bool		got_response = r->status > 0 && (r->result == CURLE_OK || r->response_truncated) &&
		!r->headers_too_large && r->blocked_reason == NULL && d->precheck_error == NULL;
	const char *state;
	const char *outcome = NULL;
	TimestampTz next_at = 0;
	bool		final = false;
	int			i;

	for (i = 0; i < R_NCOLS; i++)
		isnull[i] = true;

	if (got_response && r->status >= 200 && r->status < 300)
	{
		b->ok_ids[b->nok] = Int64GetDatum(r->delivery_id);
		b->ok_tokens[b->nok] = Int64GetDatum(d->lease_token);
		b->ok_status[b->nok++] = Int32GetDatum((int32) r->status);
		return;
	}
	if (got_response && r->status == 410)
	{
		/* stays due; deactivating the webhook then holds it (its trigger) */
		state = "pending";
		outcome = "deactivated";
		next_at = b->now;
		b->gone[b->ngone++] = Int64GetDatum(r->webhook_id);
	}
	else if (r->attempt > wh_retry_count || d->precheck_error != NULL)
	{
		state = "dead";
		outcome = "dead";
		final = true;
	}
	else
	{
		state = "pending";
		outcome = "retry";
		next_at = TimestampTzPlusMilliseconds(b->now, retry_delay_ms(d));
		if (b->earliest_retry == 0 || next_at < b->earliest_retry)
			b->earliest_retry = next_at;
	}

#define SET(col, datum) (v[col] = (datum), isnull[col] = false)
	SET(R_DELIVERY_ID, Int64GetDatum(r->delivery_id));
	SET(R_LEASE_TOKEN, Int64GetDatum(d->lease_token));
	SET(R_STATE, CStringGetTextDatum(state));
	if (r->status > 0)
		SET(R_STATUS, Int32GetDatum((int32) r->status));
	if (next_at != 0)
		SET(R_NEXT_AT, TimestampTzGetDatum(next_at));
	if (final)
		SET(R_FINISHED_AT, TimestampTzGetDatum(b->now));
	if (outcome != NULL)
	{
		/* a failed attempt: its log row */
		SET(R_ERROR, CStringGetTextDatum(d->precheck_error ? d->precheck_error
										 : wh_request_error_content(r)));
		SET(R_LOG_OUTCOME, CStringGetTextDatum(outcome));
		if (strcmp(outcome, "retry") == 0)
			SET(R_LOG_NEXT_AT, TimestampTzGetDatum(next_at));
		SET(R_OCCURRED_AT, TimestampTzGetDatum(r->started ? r->started : b->now));
		SET(R_WEBHOOK_ID, Int64GetDatum(r->webhook_id));
		if (d->webhook_name)
			SET(R_WEBHOOK_NAME, CStringGetTextDatum(d->webhook_name));
		SET(R_MSG_ID, CStringGetTextDatum(d->msg_id));
		SET(R_ATTEMPT, Int32GetDatum(r->attempt));
		SET(R_DURATION_MS, Float8GetDatum(r->duration_ms));
		SET(R_PAYLOAD, CStringGetTextDatum(r->body));
	}
	else
		SET(R_WEBHOOK_ID, Int64GetDatum(r->webhook_id));
#undef SET
	b->rows[b->n++] = HeapTupleGetDatum(heap_form_tuple(plans.result_desc, v, isnull));
}

/* add the delivery ids the last statement returned to the set written */
static int
remember_written(HTAB *written)
{
	uint64		j;

	for (j = 0; j < SPI_processed; j++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[j], SPI_tuptable->tupdesc, 1, &isnull));

		hash_search(written, &id, HASH_ENTER, NULL);
	}
	return (int) SPI_processed;
}

/* a flush's ids that are still leased to us: their rows were locked */
static bool *
still_leased(int n, HTAB *written)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *tokens = palloc(sizeof(Datum) * n);
	/* read after the commit: not in SPI's memory, which the commit frees */
	bool	   *mine = MemoryContextAllocZero(wk.loop_cxt, sizeof(bool) * n);
	Datum		args[2];
	HTAB	   *leased;
	HASHCTL		ctl;
	uint64		j;
	int			i,
				m = 0;

	for (i = 0; i < n; i++)
		if (hash_search(written, &wk.finished[i]->req.delivery_id, HASH_FIND, NULL) == NULL)
		{
			ids[m] = Int64GetDatum(wk.finished[i]->req.delivery_id);
			tokens[m++] = Int64GetDatum(wk.finished[i]->lease_token);
		}
	args[0] = make_array(ids, NULL, m, INT8OID);
	args[1] = make_array(tokens, NULL, m, INT8OID);
	if (SPI_execute_plan(plans.still_leased, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the leases of unrecorded results");
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = ctl.entrysize = sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	leased = hash_create("webhooks leased", Max(SPI_processed, 16), &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (j = 0; j < SPI_processed; j++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[j], SPI_tuptable->tupdesc, 1, &isnull));

		hash_search(leased, &id, HASH_ENTER, NULL);
	}
	for (i = 0; i < n; i++)
		mine[i] = hash_search(leased, &wk.finished[i]->req.delivery_id, HASH_FIND, NULL) != NULL;
	return mine;
}

/*
 * Successes: their rows locked (skipping those another session holds),
 * then written under their lease.  Adds the ids written to "written".
 */
static int
write_successes(ResultBatch *b, HTAB *written)
{
	Datum		args[5];
	Datum	   *locked = palloc(sizeof(Datum) * (b->nok + 1));
	uint64		j;

	if (b->nok == 0)
		return 0;
	args[0] = make_array(b->ok_ids, NULL, b->nok, INT8OID);
	if (SPI_execute_plan(plans.lock_rows, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock delivered rows");
	for (j = 0; j < SPI_processed; j++)
	{
		bool		isnull;

		locked[j] = SPI_getbinval(SPI_tuptable->vals[j], SPI_tuptable->tupdesc, 1, &isnull);
	}
	args[1] = make_array(b->ok_tokens, NULL, b->nok, INT8OID);
	args[2] = make_array(b->ok_status, NULL, b->nok, INT4OID);
	args[3] = TimestampTzGetDatum(b->now);
	args[4] = make_array(locked, NULL, (int) SPI_processed, INT8OID);
	if (SPI_execute_plan(plans.record_delivered, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record delivered results");
	return remember_written(written);
}

/* the other outcomes, with their log rows: webhooks._record_results() */
static int
write_others(ResultBatch *b, HTAB *written)
{
	Datum		arg;

	if (b->n == 0)
		return 0;
	arg = PointerGetDatum(construct_array(b->rows, b->n, plans.result_typid, -1, false, TYPALIGN_DOUBLE));
	if (SPI_execute_plan(plans.record, &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not record delivery results");
	return remember_written(written);
}

/* 410 Gone: the receiver asked us to stop */
static void
deactivate_gone(ResultBatch *b)
{
	Datum		args[2];
	StringInfoData reason;

	if (b->ngone == 0)
		return;
	initStringInfo(&reason);
	appendStringInfoString(&reason, "the target answered 410 Gone at ");
	wh_format_event_date(&reason, b->now);
	args[0] = make_array(b->gone, NULL, b->ngone, INT8OID);
	args[1] = CStringGetTextDatum(reason.data);
	if (SPI_execute_plan(plans.deactivate, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not deactivate webhooks");
}

/*
 * After the commit: forget the results written, and those whose lease is
 * gone (taken over, or rows of a previous install: dropped, with a LOG
 * line); keep those whose rows another session held ("keep": still ours)
 * for a flush a second later, and claim no more for their webhooks until
 * then.
 */
static void
settle_results(HTAB *written, bool *keep)
{
	int			n = wk.nfinished;
	int			nkept_now = 0,
				ndropped = 0,
				i;
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;

	hash_seq_init(&seq, wk.slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		s->unrecorded = 0;
	for (i = 0; i < n; i++)
	{
		Delivery   *d = wk.finished[i];
		bool		done = hash_search(written, &d->req.delivery_id, HASH_FIND, NULL) != NULL;

		if (!done && keep != NULL && keep[i])
		{
			slot_for(d->req.webhook_id)->unrecorded++;
			wk.finished[nkept_now++] = d;
			continue;
		}
		if (!done)
			ndropped++;
		free_delivery(d);
	}
	if (ndropped > 0)
		ereport(LOG,
				(errmsg("webhooks worker: dropped %d delivery result(s) whose lease had ended or been taken over",
						ndropped)));
	wk.nfinished = wk.nkept = nkept_now;
	if (wk.nkept > 0)
		wk.kept_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LOCKED_RETRY_MS);
}

/*
 * Write the finished requests' outcomes in one transaction: delivered, a
 * log row and a retry time, dead, or (410 Gone) the webhook deactivated.
 * A result is written only under the lease that produced it (see
 * settle_results for the others).
 */
static void
flush_results(void)
{
	int			n = wk.nfinished;
	int			i;
	ResultBatch batch;
	HTAB	   *written;
	HASHCTL		ctl;
	bool	   *keep = NULL;
	int			nwritten;

	if (n == 0)
		return;
	begin_xact("recording delivery results");
	if (!check_extension())
	{
		/* dropped: the rows are gone with it */
		commit_xact();
		for (i = 0; i < n; i++)
			free_delivery(wk.finished[i]);
		wk.nfinished = wk.nkept = 0;
		return;
	}
	prepare_plans();

	result_batch_init(&batch, n);
	for (i = 0; i < n; i++)
		result_batch_add(&batch, wk.finished[i]);
	/*
	 * Read after the commit (settle_results): in the step's memory, not in
	 * SPI's, which commit_xact frees.
	 */
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = ctl.entrysize = sizeof(int64);
	ctl.hcxt = wk.loop_cxt;
	written = hash_create("webhooks written", Max(n, 16), &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	nwritten = write_successes(&batch, written) + write_others(&batch, written);
	if (nwritten < n)
		keep = still_leased(n, written);
	deactivate_gone(&batch);
	commit_xact();

	settle_results(written, keep);
	/* a retry may now be due before the last known next_due */
	if (batch.earliest_retry != 0 && (wk.next_due == 0 || batch.earliest_retry < wk.next_due))
		wk.next_due = batch.earliest_retry;
	if (batch.ngone > 0)
		wk.maybe_work = true;
}

/* ---------------------------------------------------------------------
 * maintenance
 * ---------------------------------------------------------------------
 */

/*
 * Save this database's counts of events that found no active webhook
 * (unrouted.c) in webhooks.unrouted_event_totals, so that a restart loses
 * at most the last minute's.  Folding again adds nothing.
 */
static void
fold_unrouted_events(void)
{
	begin_xact("saving counts of unrouted events");
	if (check_extension() &&
		SPI_execute("SELECT webhooks._fold_unrouted_events()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not save the counts of unrouted events");
	commit_xact();
}

/*
 * How often maintenance runs: every minute, or twice per history period
 * when the retention is short (webhooks._period_width: retention / 24, at
 * least 10 s), so that a partition goes soon after it expires.
 */
static long
maintenance_interval_ms(void)
{
	long		half_period_ms = (long) Max(wh_log_retention_s / 24, 10) * 500;

	return Min(MAINTENANCE_INTERVAL_MS, half_period_ms);
}

/*
 * Make the history's partitions ahead and drop those past
 * webhooks.log_retention (whole: no row is deleted one by one), in a
 * transaction of its own: it holds its partitions' locks only as long as
 * that takes.  A partition another session uses is left for the next pass
 * (lock_timeout in _maintain_history).  Notes when the oldest partition
 * left expires: the next pass comes then.
 */
static void
keep_partitions(void)
{
	bool		isnull;
	Datum		expiry;
	Datum		args[1];
	Oid			argtypes[1] = {INT4OID};

	args[0] = Int32GetDatum(wh_log_retention_s);
	begin_xact("keeping the history's partitions");
	if (check_extension())
	{
		if (SPI_execute_with_args("SELECT webhooks._maintain_history($1)", 1, argtypes, args,
								  NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not keep the history's partitions");
		expiry = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		wk.next_expiry = isnull ? 0 : DatumGetTimestampTz(expiry);
	}
	commit_xact();
}

/*
 * Queued events whose webhook no longer exists (an enqueue raced the
 * webhook's deletion) die with a log row (webhooks._sweep_orphans), but only
 * once they have stayed orphaned for a minute, while the worker delivers and
 * the webhooks table has rows: pg_restore loads the queue before the
 * webhooks (one table per transaction), and for a while a restored queue
 * looks orphaned.  With webhooks.enabled off (the way to restore) nothing is
 * swept; nor with the webhooks table empty (a restore that has not reached
 * it yet, however long it takes).  An orphan is found by one pass and swept
 * by the next, a minute later: so none in the first minute after the
 * extension appears or deliveries are switched on.
 */
static void
sweep_orphans(void)
{
	bool		isnull;

	if (!wh_enabled)
	{
		wk.orphans_seen = false;
		return;
	}
	if (wk.orphans_seen &&
		SPI_execute("SELECT webhooks._sweep_orphans() WHERE EXISTS (SELECT FROM webhooks.webhooks)",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not sweep orphaned deliveries");
	if (SPI_execute("SELECT EXISTS (SELECT FROM webhooks.deliveries d "
					"                WHERE NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = d.webhook_id)) "
					"    OR EXISTS (SELECT FROM webhooks.event_batches b "
					"                WHERE NOT EXISTS (SELECT FROM webhooks.webhooks w WHERE w.id = b.webhook_id))",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not look for orphaned deliveries");
	wk.orphans_seen = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The maintenance pass: the history's partitions, then once a minute save
 * the counts of unrouted events, end secrets past their grace period and
 * give queued events whose webhook vanished a log row.  Rows other
 * sessions hold are skipped, not waited for.
 */
static void
maintenance(void)
{
	TimestampTz now = GetCurrentTimestamp();

	keep_partitions();
	if (now < wk.next_minute_tasks || !wk.extension_present)
		return;
	wk.next_minute_tasks = TimestampTzPlusMilliseconds(now, MAINTENANCE_INTERVAL_MS);
	fold_unrouted_events();
	begin_xact("ending expired secrets and sweeping orphaned events");
	if (check_extension())
	{
		if (SPI_execute("UPDATE webhooks.webhooks w SET previous_secret = NULL, previous_secret_expires_at = NULL "
						" WHERE w.id IN (SELECT x.id FROM webhooks.webhooks x "
						"                 WHERE x.previous_secret_expires_at < pg_catalog.now() "
						"                   FOR UPDATE SKIP LOCKED)", false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not end expired secrets");
		sweep_orphans();
	}
	commit_xact();
}

/* ---------------------------------------------------------------------
 * main loop
 * ---------------------------------------------------------------------
 */

/*
 * Collect finished requests: their slots are free at once (their results
 * are recorded by the next flush).  A webhook whose last claim was cut
 * short by its cap asks for a claim when enough of its slots are free.
 */
static void
collect_finished(void)
{
	WhRequest  *req;

	while ((req = wh_engine_next_done(wk.engine)) != NULL)
	{
		WebhookSlot *s = slot_for(req->webhook_id);

		if (req->h2_early_close && !s->http1_only)
		{
			/*
			 * The receiver answers HTTP/2 requests before reading their body
			 * (allowed by RFC 9113), and libcurl lost the answer: talk
			 * HTTP/1.1 to this webhook until the worker restarts or reloads.
			 */
			s->http1_only = true;
			ereport(LOG,
					(errmsg("webhooks worker: webhook %lld answers HTTP/2 requests before their body is sent; "
							"using HTTP/1.1 for it", (long long) req->webhook_id)));
		}

		s->in_flight--;
		wk.in_flight--;
		uncount_delivery((Delivery *) req->arg);
		if (s->more_due && wants_refill(s))
		{
			s->more_due = false;
			wk.maybe_work = true;
			wk.refill_due = true;
		}
		add_finished((Delivery *) req->arg);
	}
}

/* milliseconds from now until t, 0 if past */
static long
ms_until(TimestampTz t, TimestampTz now)
{
	if (t <= now)
		return 0;
	return (long) Min((t - now) / 1000, (int64) INT_MAX);
}

/* the worker's state in pg_stat_activity, when it changed */
static void
report_activity(void)
{
	char		buf[128];
	if (!wk.extension_present && wk.installed_version[0] != '\0')
		snprintf(buf, sizeof(buf), "waiting for ALTER EXTENSION webhooks UPDATE (installed %s, needs %s)",
				 wk.installed_version, WEBHOOKS_VERSION);
	else if (!wk.extension_present)
		snprintf(buf, sizeof(buf), "waiting for CREATE EXTENSION webhooks");
	else if (!wh_enabled)
		snprintf(buf, sizeof(buf), "paused (webhooks.enabled = off), %d in flight", wk.in_flight);
	else if (wk.in_flight > 0)
		snprintf(buf, sizeof(buf), "delivering: %d requests in flight", wk.in_flight);
	else
		snprintf(buf, sizeof(buf), "idle");
	wk.slot->in_flight = wk.in_flight;
	if (strcmp(buf, wk.activity) == 0)
		return;
	strlcpy(wk.activity, buf, sizeof(wk.activity));
	pgstat_report_activity(STATE_IDLE, buf);
}

/*
 * Error recovery, in the manner of autovacuum and worker_spi: with
 * interrupts held, report the error, abort the transaction (SPI, locks,
 * snapshots go with it), then clear the error state.  Saved plans are
 * dropped (an error may come from a dropped object), claimed deliveries
 * that never reached the engine get their leases released by the next
 * step, and no SQL runs for ERROR_PAUSE_MS, while requests in flight keep
 * moving: an error never stops the loop.
 */
static void
recover_from_error(void)
{
	HOLD_INTERRUPTS();
	error_context_stack = NULL;
	MemoryContextSwitchTo(wk.loop_cxt);
	EmitErrorReport();
	AbortCurrentTransaction();
	FlushErrorState();
	forget_plans();
	forget_unstarted();
	uncount_claim_leftovers();
	MemoryContextReset(wk.loop_cxt);
	wk.maybe_work = true;
	wk.db_backoff_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ERROR_PAUSE_MS);
	RESUME_INTERRUPTS();
}

/* run one step of the loop; an error is recovered, the loop goes on */
static void
run_step(void (*step) (void))
{
	MemoryContext old = MemoryContextSwitchTo(wk.loop_cxt);

	PG_TRY();
	{
		step();
	}
	PG_CATCH();
	{
		recover_from_error();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(wk.loop_cxt);
}

/*
 * Split the oldest event batch into deliveries (one batch, at most 1,000
 * events, per short transaction, so requests in flight keep moving).
 */
static void
step_expand(void)
{
	int64		n = 0;
	bool		isnull;

	begin_xact("splitting event batches");
	if (check_extension())
	{
		if (SPI_execute("SELECT webhooks._expand_batches(1)", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not split event batches");
		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	commit_xact();
	wk.batches_pending = (n > 0);
	if (n > 0)
		wk.maybe_work = true;
}

/*
 * Claim when there may be due work and enough free slots: refilling in
 * batches keeps claims (transactions) few under load, while an idle worker
 * claims a single event at once.  A webhook refills when a quantum of its
 * share is free; a commit (which may have made an idle webhook due) claims
 * at once, for the webhooks worth a claim (saturated_webhooks).
 */
static bool
want_claim(void)
{
	int			free_slots = wh_max_concurrency - wk.in_flight;

	return wk.extension_present && wh_enabled && !wk.retiring && wk.maybe_work && free_slots > 0 &&
		wk.nto_release == 0 &&
		wk.nfinished + wh_max_concurrency < MAX_FINISHED / 2 &&
		(wk.in_flight == 0 || wk.announced || wk.refill_due ||
		 free_slots >= Max(1, wh_max_concurrency / 4));
}

/* claim as many due deliveries as there are free slots (up to webhooks.batch_size) */
static void
step_claim(void)
{
	int			room = Min(wh_max_concurrency - wk.in_flight, wh_batch_size);
	int			seen;

	wk.announced = wk.refill_due = false;
	/* a commit after this claim's snapshot wakes us (wh_announce_at_commit) */
	pg_atomic_exchange_u32(&wk.slot->wake_wanted, 1);
	seen = claim(room);
	wk.maybe_work = (seen >= room);	/* else: drained, or every webhook at its share */
	wk.slot->last_claim_at = GetCurrentTimestamp();
}

/* look for the extension (CREATE EXTENSION, or an update) */
static void
step_check_extension(void)
{
	begin_xact("checking for the extension");
	check_extension();
	commit_xact();
}

/* results not yet tried, or kept ones whose retry time has come */
static bool
want_flush(TimestampTz now)
{
	int			fresh = wk.nfinished - wk.nkept;

	if (fresh > 0)
		return fresh >= FLUSH_MAX_RESULTS || wh_engine_running(wk.engine) == 0 ||
			now >= TimestampTzPlusMilliseconds(wk.first_finished_at, FLUSH_DELAY_MS);
	return wk.nkept > 0 && now >= wk.kept_retry_at;
}

/* event batches wait, and no split ran in the last SPLIT_INTERVAL_MS of requests */
static bool
want_split(TimestampTz now)
{
	return wk.batches_pending && (wk.in_flight == 0 || now >= wk.next_split);
}

/* the maintenance pass, or a look for the extension while it is missing */
static void
step_maintain(void)
{
	if (!wk.extension_present)
		step_check_extension();
	if (wk.extension_present)
		maintenance();
}

/*
 * Let curl work on the sockets that are ready, without waiting: called
 * between the loop's SQL steps, so that a response that arrived during one
 * frees its connection (and a new connection's handshake moves on) before
 * the next step, not a whole turn of the loop later.
 */
static void
service_sockets(void)
{
	if (wh_engine_wait(wk.engine, 0, PG_WAIT_EXTENSION))
	{
		wk.maybe_work = true;
		wk.announced = true;
	}
	/* what finished is collected now: the loop's wait must see it */
	collect_finished();
}

/* how long the loop may sleep: until the first thing it has to do */
static long
sleep_time(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = ms_until(wk.next_maintenance, now);
	bool		serving = wk.extension_present && wh_enabled;

	if (wk.extension_present)
		timeout = Min(timeout, ms_until(wk.next_poll, now));
	if (wk.nfinished > wk.nkept)
		timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(wk.first_finished_at, FLUSH_DELAY_MS), now));
	if (wk.nkept > 0)
		timeout = Min(timeout, ms_until(wk.kept_retry_at, now));
	if (serving && !wk.maybe_work && wk.next_due != 0)
		timeout = Min(timeout, ms_until(wk.next_due, now));
	if (now < wk.db_backoff_until)
		return Max(Min(timeout, ms_until(wk.db_backoff_until, now)), 1);
	if (want_claim() || wk.nto_release > 0 || (serving && want_split(now)))
		return 0;
	if (serving && wk.batches_pending)
		timeout = Min(timeout, ms_until(wk.next_split, now));
	return timeout;
}

/* sleep until a socket, a timer, the latch (a commit) or the next job */
static void
sleep_until_work(void)
{
	if (wh_engine_wait(wk.engine, sleep_time(), PG_WAIT_EXTENSION))
	{
		wk.maybe_work = true;
		wk.announced = true;
		if (!wk.extension_present)
			wk.next_maintenance = 0;	/* CREATE EXTENSION wakes us: look now */
	}
	if (wk.next_due != 0 && GetCurrentTimestamp() >= wk.next_due)
	{
		wk.maybe_work = true;
		wk.next_due = 0;
	}
}

/* the settings file changed (SIGHUP) */
static void
reload_settings(void)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	wk.maybe_work = true;
	forget_http1_fallbacks();
	/* fewer workers wanted: this one finishes what it has in flight and leaves */
	wk.retiring = wk.index >= wh_workers_per_database;
}

/*
 * One turn of the loop: collect finished requests, then every step that
 * has work (release unsent leases, record results, split a batch, claim,
 * maintain), then sleep.  After an error no SQL runs for a second.
 */
static void
loop_once(void)
{
	TimestampTz now;
	bool		sql_ok;

	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
		reload_settings();

	collect_finished();
	now = GetCurrentTimestamp();
	if (wk.leave_at != 0 && now >= wk.leave_at && !wk.extension_present)
		leave_database();
	sql_ok = now >= wk.db_backoff_until;
	if (sql_ok && now >= wk.next_poll)
	{
		/* work that no commit announced: COMMIT PREPARED, rows by hand, skipped locks */
		wk.maybe_work = true;
		wk.batches_pending = true;
		wk.next_poll = TimestampTzPlusMilliseconds(now, POLL_INTERVAL_MS);
	}
	if (pg_atomic_exchange_u32(&wk.db->batches_pending, 0) != 0)
		wk.batches_pending = true;

	if (sql_ok && wk.nto_release > 0)
		run_step(step_release);
	if (sql_ok && want_flush(now))
	{
		run_step(flush_results);
		service_sockets();
	}
	if (sql_ok && wk.extension_present && wh_enabled && want_split(now))
	{
		run_step(step_expand);
		wk.next_split = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SPLIT_INTERVAL_MS);
		service_sockets();
	}
	if (sql_ok && want_claim())
		run_step(step_claim);
	now = GetCurrentTimestamp();
	if (wk.retiring && wk.in_flight == 0 && wk.nfinished == 0 && wk.nto_release == 0 && wk.nunstarted == 0)
	{
		ereport(LOG,
				(errmsg("webhooks worker %d of database \"%s\": webhooks.workers_per_database is %d; stopping",
						wk.index, wk.dbname, wh_workers_per_database)));
		proc_exit(0);
	}
	if (sql_ok && now >= wk.next_maintenance)
	{
		/* the first worker keeps the history, sweeps and saves counts for all */
		run_step(wk.index == 0 ? step_maintain : step_check_extension);
		/* after an error too: a failing pass is not retried every second */
		wk.next_maintenance = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  wk.extension_present ? maintenance_interval_ms() : IDLE_CHECK_MS);
		/* the oldest partition goes when it expires, not up to a pass later */
		if (wk.next_expiry != 0 && wk.next_expiry < wk.next_maintenance)
			wk.next_maintenance = Max(wk.next_expiry, GetCurrentTimestamp() + 1000 * (TimestampTz) 1000);
	}

	report_activity();
	sleep_until_work();
}

/* the worker's entry point (bgw_function_name) */
void
webhooks_worker_main(Datum main_arg)
{
	HASHCTL		ctl;
	sigjmp_buf	local_sigjmp_buf;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), InvalidOid, 0);
	pin_session();
	take_database_entry((unsigned char) MyBgworkerEntry->bgw_extra[1]);

	wk.worker_cxt = AllocSetContextCreate(TopMemoryContext, "webhooks worker", ALLOCSET_DEFAULT_SIZES);
	wk.loop_cxt = AllocSetContextCreate(wk.worker_cxt, "webhooks loop", ALLOCSET_DEFAULT_SIZES);
	wk.deliveries_cxt = AllocSetContextCreate(wk.worker_cxt, "webhooks deliveries", ALLOCSET_DEFAULT_SIZES);
	wk.engine = wh_engine_create(AllocSetContextCreate(wk.worker_cxt, "webhooks engine", ALLOCSET_DEFAULT_SIZES));
	wk.finished = MemoryContextAlloc(wk.worker_cxt, sizeof(Delivery *) * MAX_FINISHED);
	wk.unstarted = MemoryContextAlloc(wk.worker_cxt, sizeof(Delivery *) * 10000);
	wk.to_release = MemoryContextAlloc(wk.worker_cxt, sizeof(int64) * 10000);
	wk.to_release_tokens = MemoryContextAlloc(wk.worker_cxt, sizeof(int64) * 10000);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(WebhookSlot);
	ctl.hcxt = wk.worker_cxt;
	wk.slots = hash_create("webhooks slots", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	/* lease tokens: random per worker start, then one per claim */
	if (!pg_strong_random(&wk.lease_token_base, sizeof(wk.lease_token_base)))
		elog(ERROR, "could not generate random bytes");

	begin_xact("reading the database's name");
	strlcpy(wk.dbname, get_database_name(MyDatabaseId), sizeof(wk.dbname));
	commit_xact();
	ereport(LOG,
			(errmsg("webhooks worker started for database \"%s\"", wk.dbname)));
	run_step(step_check_extension);
	/* no extension: leave, or wait a little for CREATE EXTENSION's commit */
	if (!wk.extension_present && wk.installed_version[0] == '\0')
		wk.leave_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  MyBgworkerEntry->bgw_extra[0] ? EXTENSION_WAIT_MS : 0);

	/*
	 * An error outside a step (a cancel request arriving between steps)
	 * lands here instead of ending the worker: it is recovered like any
	 * step's error, and the loop goes on.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
		recover_from_error();
	PG_exception_stack = &local_sigjmp_buf;

	MemoryContextSwitchTo(wk.loop_cxt);
	for (;;)
		loop_once();
}
