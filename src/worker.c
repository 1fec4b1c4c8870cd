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
 *	   in the curl multi engine (http.c), signed now, so every attempt has a
 *	   fresh webhook-timestamp and the delivery's stable webhook-id.
 *	3. record (short transaction): finished requests are collected and
 *	   written together: delivered, or a log row and a retry time, or dead,
 *	   or (410 Gone) the webhook deactivated.  Commit.
 *
 * Steps 1 and 3 interleave with step 2: requests complete one by one, and
 * a request's slot is free as soon as it completes.  Slots are refilled in
 * chunks, to keep claims few and large: when a quarter of
 * webhooks.max_concurrency is free, or, for a webhook held back by its own
 * cap, when a quarter of that cap is free (an idle worker claims at once).  One
 * slow endpoint never holds back the others: it can only fill its own cap.
 * Results are written in batches (when enough have finished, when nothing
 * else is in flight, or a few milliseconds after the first one finished).
 *
 * The lease makes delivery at-least-once: if the worker dies mid-flight,
 * the leased rows become due again when the lease ends; a restarted worker
 * (there is only one) releases every lease at start, so a crash repeats the
 * requests that were in flight, with the same webhook-id, and loses none.
 *
 * Sleeping: the worker waits in the engine's WaitEventSet on its latch,
 * curl's sockets and timers and postmaster death.  A committing
 * transaction that enqueued something sets the latch (webhooks.c); the
 * next scheduled retry bounds the sleep; a maintenance pass (pruning after
 * webhooks.log_retention, expired secrets) runs every minute.
 *
 * Signals follow worker_spi: SIGHUP reloads the settings, SIGTERM (die)
 * ends the worker at its next CHECK_FOR_INTERRUPTS, which the latch makes
 * immediate.  Errors in a transaction are reported, rolled back, and the
 * loop goes on after a pause: HTTP failures are data, never errors.
 *
 *-------------------------------------------------------------------------
 */
#include "webhooks.h"

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
#include "url.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define FLUSH_MAX_RESULTS 512
/* finished but unrecorded results held at most (claims pause above half) */
#define MAX_FINISHED (2 * 1024 + 10000)
#define FLUSH_DELAY_MS 2
#define MAINTENANCE_INTERVAL_MS (60 * 1000)
#define IDLE_CHECK_MS (5 * 1000)
#define PRUNE_BATCH 1000
#define PRUNE_MAX_BATCHES 20
#define ERROR_PAUSE_MS 1000

/* one claimed delivery, in its own memory context */
typedef struct Delivery
{
	WhRequest	req;			/* first: the engine hands us req pointers */
	MemoryContext cxt;
	char	   *webhook_name;
	char	   *msg_id;
	const char *precheck_error; /* set when the row fails the send-time checks */
} Delivery;

typedef struct WebhookSlot
{
	int64		webhook_id;		/* hash key */
	int			in_flight;
	bool		more_due;		/* its last claim was cut short by its cap */
	bool		http1_only;		/* its receiver's HTTP/2 answers were lost */
	char	   *valid_url;		/* the target URL last found valid, or NULL */
	bool		valid_url_private;	/* webhooks.allow_private_targets then */
} WebhookSlot;

static MemoryContext worker_cxt;
static MemoryContext loop_cxt;
static MemoryContext deliveries_cxt;
static WhEngine *engine;
static HTAB *slots;
static int	in_flight = 0;

static Delivery **finished;
static int	nfinished = 0;
static TimestampTz first_finished_at = 0;

static bool extension_present = false;
static bool maybe_work = true;
static TimestampTz next_due = 0;
static TimestampTz next_maintenance = 0;
static bool leases_released = false;
static bool batches_pending = true;	/* event batches may wait to be split */

static SPIPlanPtr plan_candidates;
static SPIPlanPtr plan_claim;
static SPIPlanPtr plan_hold;
static SPIPlanPtr plan_next_due;
static SPIPlanPtr plan_record;
static SPIPlanPtr plan_log;

void
wh_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "webhooks");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "webhooks_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "webhooks worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "webhooks worker");
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

static void
worker_shmem_exit(int code, Datum arg)
{
	if (wh_shared && wh_shared->worker_pid == MyProcPid)
	{
		wh_shared->worker_procno = -1;
		wh_shared->worker_pid = 0;
	}
}

/* ---------------------------------------------------------------------
 * transactions
 * ---------------------------------------------------------------------
 */

/* the activity string last reported while idle or delivering */
static char idle_activity[128];

static void
begin_xact(const char *activity)
{
	pgstat_report_activity(STATE_RUNNING, activity);
	idle_activity[0] = '\0';
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
commit_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

static void
prepare_plans(void)
{
	Oid			t_cand[2] = {INT4OID, INT8ARRAYOID};
	Oid			t_claim[2] = {INT8ARRAYOID, INT4OID};
	Oid			t_hold[1] = {INT8ARRAYOID};
	Oid			t_record[6] = {INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
	Oid			t_log[11] = {TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT4ARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT4ARRAYOID, FLOAT8ARRAYOID,
	TEXTARRAYOID, TIMESTAMPTZARRAYOID};

	if (plan_candidates != NULL)
		return;

	/*
	 * Due rows per webhook (at most one active per event type, so few):
	 * each webhook's rows come from its own range of deliveries_due, so a
	 * saturated webhook's backlog is never scanned to find another's rows.
	 */
	plan_candidates = keep_plan(
								"SELECT c.id, w.id, w.is_active "
								"  FROM webhooks.webhooks w "
								" CROSS JOIN LATERAL ("
								"       SELECT d.id FROM webhooks.deliveries d "
								"        WHERE d.webhook_id = w.id AND d.state = 'pending' "
								"          AND d.next_attempt_at <= pg_catalog.now() "
								"        ORDER BY d.next_attempt_at "
								"        LIMIT $1 "
								"          FOR UPDATE SKIP LOCKED) c "
								" WHERE w.id <> ALL ($2)",
								2, t_cand);
	plan_claim = keep_plan(
						   "UPDATE webhooks.deliveries d "
						   "   SET next_attempt_at = pg_catalog.now() + $2 * interval '1 second', "
						   "       lease_until = pg_catalog.now() + $2 * interval '1 second', "
						   "       attempts = d.attempts + 1, last_attempt_at = pg_catalog.now() "
						   "  FROM webhooks.webhooks w "
						   " WHERE d.id = ANY ($1) AND w.id = d.webhook_id AND w.is_active "
						   "RETURNING d.id, d.attempts, d.body, w.id, w.name, w.target_url, w.secret, "
						   "          CASE WHEN w.previous_secret_expires_at > pg_catalog.now() "
						   "               THEN w.previous_secret END, "
						   "          w.auth_token, w.headers",
						   2, t_claim);
	/* due rows of an inactive webhook (a race with its deactivation) are held */
	plan_hold = keep_plan(
						  "UPDATE webhooks.deliveries SET state = 'held' "
						  " WHERE id = ANY ($1) AND state = 'pending'",
						  1, t_hold);
	/* webhooks with every slot taken are skipped: their completions wake us */
	plan_next_due = keep_plan(
							  "SELECT min(x.t) FROM webhooks.webhooks w "
							  " CROSS JOIN LATERAL ("
							  "       SELECT d.next_attempt_at AS t FROM webhooks.deliveries d "
							  "        WHERE d.webhook_id = w.id AND d.state = 'pending' "
							  "        ORDER BY d.next_attempt_at LIMIT 1) x "
							  " WHERE w.id <> ALL ($1)",
							  1, t_cand + 1);
	plan_record = keep_plan(
							"UPDATE webhooks.deliveries d SET "
							"       state = CASE WHEN r.state = 'pending' AND NOT EXISTS ("
							"                     SELECT FROM webhooks.webhooks w "
							"                      WHERE w.id = d.webhook_id AND w.is_active) "
							"                    THEN 'held' ELSE r.state END, "
							"       next_attempt_at = coalesce(r.next_at, d.next_attempt_at), "
							"       lease_until = NULL, finished_at = r.finished_at, "
							"       last_status = r.status, last_error = r.error "
							"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
							"                 pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6)) "
							"       AS r(id, state, status, error, next_at, finished_at) "
							" WHERE d.id = r.id",
							6, t_record);
	plan_log = keep_plan(
						 "INSERT INTO webhooks.webhook_logs (occurrence_date, webhook_name, webhook_id, "
						 "       status, error_content, webhook_payload, delivery_id, attempt, duration_ms, "
						 "       outcome, next_attempt_at) "
						 "SELECT o, n, w, s, e, webhooks._json_or_null(p), d, a, ms, oc, na "
						 "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
						 "                 pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), "
						 "                 pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9), "
						 "                 pg_catalog.unnest($10), pg_catalog.unnest($11)) "
						 "       AS r(o, n, w, s, e, p, d, a, ms, oc, na)",
						 11, t_log);
}

static void
forget_plans(void)
{
	/* after DROP EXTENSION the saved plans point at dropped tables */
	plan_candidates = plan_claim = plan_hold = plan_next_due = plan_record = plan_log = NULL;
}

static bool
check_extension(void)
{
	bool		present = OidIsValid(get_extension_oid("webhooks", true));

	if (!present && extension_present)
	{
		elog(LOG, "webhooks worker: extension dropped; waiting for CREATE EXTENSION webhooks");
		forget_plans();
		leases_released = false;
	}
	else if (present && !extension_present)
		elog(LOG, "webhooks worker: serving database \"%s\"", wh_database_name);
	extension_present = present;
	return present;
}

/* ---------------------------------------------------------------------
 * arrays for SPI parameters
 * ---------------------------------------------------------------------
 */

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

static WebhookSlot *
slot_for(int64 webhook_id)
{
	bool		found;
	WebhookSlot *s = hash_search(slots, &webhook_id, HASH_ENTER, &found);

	if (!found)
	{
		s->in_flight = 0;
		s->more_due = false;
		s->valid_url = NULL;
		s->http1_only = false;
	}
	return s;
}

/* a reload gives HTTP/2 another chance with every webhook */
static void
forget_http1_fallbacks(void)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;

	hash_seq_init(&seq, slots);
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

/* webhooks with no free slot, to leave out of the next claim */
static Datum
saturated_webhooks(void)
{
	HASH_SEQ_STATUS seq;
	WebhookSlot *s;
	Datum	   *ids = palloc(sizeof(Datum) * (hash_get_num_entries(slots) + 1));
	int			n = 0;

	hash_seq_init(&seq, slots);
	while ((s = hash_seq_search(&seq)) != NULL)
		if (s->in_flight >= wh_max_concurrency_per_webhook)
		{
			/* left out, so it may have due rows: its completions will tell */
			s->more_due = true;
			ids[n++] = Int64GetDatum(s->webhook_id);
		}
	return make_array(ids, NULL, n, INT8OID);
}

/* ---------------------------------------------------------------------
 * send-time checks: rows written by hand get the same checks as the API
 * ---------------------------------------------------------------------
 */

static const char *
precheck(Delivery *d, const char *secret, const char *previous_secret,
		 const char *auth_token, Jsonb *headers)
{
	char		reason[512];
	JsonLexContext *lex;
	char	   *problem;
	WebhookSlot *slot = slot_for(d->req.webhook_id);

	/* the same URL as the webhook's last delivery: already checked */
	if (slot->valid_url == NULL || strcmp(slot->valid_url, d->req.url) != 0 ||
		slot->valid_url_private != wh_allow_private_targets)
	{
		if (slot->valid_url != NULL)
			pfree(slot->valid_url);
		slot->valid_url = NULL;
		if (wh_url_check(d->req.url, wh_allow_private_targets, NULL, reason, sizeof(reason)) != WH_URL_OK)
			return psprintf("rejected before sending: invalid target URL: %s", reason);
		slot->valid_url = MemoryContextStrdup(worker_cxt, d->req.url);
		slot->valid_url_private = wh_allow_private_targets;
	}
	lex = wh_make_json_lex(d->req.body, strlen(d->req.body), GetDatabaseEncoding(), false);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return "rejected before sending: the payload is not valid JSON";
	if ((int) strlen(d->req.body) > wh_max_payload_size)
		return psprintf("rejected before sending: the payload has %d bytes, more than webhooks.max_payload_size",
						(int) strlen(d->req.body));
	if (!wh_secret_valid(secret, NULL) ||
		(previous_secret != NULL && !wh_secret_valid(previous_secret, NULL)))
		return "rejected before sending: the webhook's secret is not a valid whsec_ secret";
	if (auth_token != NULL && strpbrk(auth_token, "\r\n") != NULL)
		return "rejected before sending: the auth token contains a line break";
	problem = wh_extra_headers_problem(headers, auth_token != NULL);
	if (problem != NULL)
		return psprintf("rejected before sending: %s", problem);
	return NULL;
}

/* ---------------------------------------------------------------------
 * claim
 * ---------------------------------------------------------------------
 */

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
	finished[nfinished++] = d;
	if (nfinished == 1)
		first_finished_at = GetCurrentTimestamp();
}

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
		add_finished(d);
		return;
	}
	s = slot_for(d->req.webhook_id);
	s->in_flight++;
	in_flight++;
	d->req.http1_only = s->http1_only;
	wh_engine_add(engine, &d->req);
}

/*
 * Claim up to "room" due deliveries and start them.  Returns how many were
 * claimed (equal to room when more may be waiting).
 */
static int
claim(int room)
{
	Datum		args[2];
	int			ncand;
	Datum	   *pick;
	Datum	   *held;
	int			npick = 0,
				nheld = 0;
	int			i;
	int			lease_s;
	/* not in SPI's memory: it must outlive SPI_finish() */
	Delivery  **claimed = palloc(sizeof(Delivery *) * (room + 1));
	int			nclaimed = 0;
	HTAB	   *room_left;
	HASHCTL		ctl;
	Datum		saturated;

	begin_xact("claiming deliveries");
	if (!check_extension())
	{
		commit_xact();
		return 0;
	}
	if (!leases_released)
	{
		/* the only worker just started: nothing is really in flight */
		SPI_execute("UPDATE webhooks.deliveries SET next_attempt_at = pg_catalog.now(), lease_until = NULL "
					" WHERE state = 'pending' AND lease_until IS NOT NULL", false, 0);
		if (SPI_processed > 0)
			elog(LOG, "webhooks worker: released %llu deliveries leased by a previous worker",
				 (unsigned long long) SPI_processed);
		leases_released = true;
	}
	prepare_plans();

	saturated = saturated_webhooks();
	args[0] = Int32GetDatum(room);
	args[1] = saturated;
	if (SPI_execute_plan(plan_candidates, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not select due deliveries");
	ncand = (int) SPI_processed;

	pick = palloc(sizeof(Datum) * (ncand + 1));
	held = palloc(sizeof(Datum) * (ncand + 1));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(WebhookSlot);
	ctl.hcxt = CurrentMemoryContext;
	room_left = hash_create("webhooks claim", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	for (i = 0; i < ncand; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		id = SPI_getbinval(tup, desc, 1, &isnull);
		int64		webhook_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		Datum		active = SPI_getbinval(tup, desc, 3, &isnull);

		if (!DatumGetBool(active))
			held[nheld++] = id;
		else
		{
			bool		found;
			WebhookSlot *r = hash_search(room_left, &webhook_id, HASH_ENTER, &found);

			if (!found)
			{
				WebhookSlot *s = hash_search(slots, &webhook_id, HASH_FIND, NULL);

				r->in_flight = wh_max_concurrency_per_webhook - (s ? s->in_flight : 0);
			}
			if (r->in_flight > 0 && npick < room)
			{
				r->in_flight--;
				pick[npick++] = id;
			}
		}
	}

	/* a webhook that filled its cap may have more due: its completions tell */
	{
		HASH_SEQ_STATUS seq;
		WebhookSlot *r;

		hash_seq_init(&seq, room_left);
		while ((r = hash_seq_search(&seq)) != NULL)
			if (r->in_flight <= 0)
				slot_for(r->webhook_id)->more_due = true;
	}

	if (nheld > 0)
	{
		args[0] = make_array(held, NULL, nheld, INT8OID);
		if (SPI_execute_plan(plan_hold, args, NULL, false, 0) < 0)
			elog(ERROR, "could not hold deliveries of inactive webhooks");
	}

	if (npick > 0)
	{
		MemoryContext old;

		/* the lease outlives any request: total timeout, twice, plus a margin */
		lease_s = (2 * wh_request_timeout_ms) / 1000 + 60;
		args[0] = make_array(pick, NULL, npick, INT8OID);
		args[1] = Int32GetDatum(lease_s);
		if (SPI_execute_plan(plan_claim, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not claim deliveries");

		for (i = 0; i < (int) SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			MemoryContext dcxt = AllocSetContextCreate(deliveries_cxt, "webhooks delivery",
													   ALLOCSET_SMALL_SIZES);
			Delivery   *d = MemoryContextAllocZero(dcxt, sizeof(Delivery));
			char	   *secret;
			char	   *previous_secret;
			char	   *auth_token;
			Jsonb	   *headers = NULL;
			Datum		hd;

			old = MemoryContextSwitchTo(dcxt);
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
			d->msg_id = psprintf("msg_" INT64_FORMAT, d->req.delivery_id);
			d->req.arg = d;
			d->precheck_error = precheck(d, secret, previous_secret, auth_token, headers);
			if (d->precheck_error == NULL)
				d->req.headers = wh_build_headers(d->msg_id, d->req.body, secret, previous_secret,
												  auth_token, headers);
			MemoryContextSwitchTo(old);
			claimed[nclaimed++] = d;
		}
	}

	/* when the queue ran dry, sleep until its next due row */
	if (npick < room)
	{
		bool		isnull;
		Datum		due;

		if (SPI_execute_plan(plan_next_due, &saturated, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the next due time");
		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		next_due = isnull ? 0 : DatumGetTimestampTz(due);
	}
	commit_xact();

	/* only now, with the leases committed, does anything touch the network */
	for (i = 0; i < nclaimed; i++)
		start_delivery(claimed[i]);
	return npick;
}

/* ---------------------------------------------------------------------
 * record
 * ---------------------------------------------------------------------
 */

static int64
retry_delay_ms(Delivery *d)
{
	int64		delay;
	int			n = d->req.attempt;	/* attempts made so far, >= 1 */

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

static void
free_delivery(Delivery *d)
{
	MemoryContextDelete(d->cxt);
}

static void
flush_results(void)
{
	int			n = nfinished;
	Datum	   *ids,
			   *states,
			   *statuses,
			   *errors,
			   *next_at,
			   *finished_at;
	bool	   *status_nulls,
			   *error_nulls,
			   *next_nulls,
			   *finished_nulls;
	Datum	   *l_occ,
			   *l_name,
			   *l_wid,
			   *l_status,
			   *l_error,
			   *l_payload,
			   *l_did,
			   *l_attempt,
			   *l_ms,
			   *l_outcome,
			   *l_next;
	bool	   *l_status_nulls,
			   *l_next_nulls,
			   *l_name_nulls;
	int			nlogs = 0;
	Datum	   *gone;
	int			ngone = 0;
	int			i;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz earliest_retry = 0;
	Datum		args[11];

	if (n == 0)
		return;

#define ALLOC_D(p) (p = palloc0(sizeof(Datum) * n))
#define ALLOC_B(p) (p = palloc0(sizeof(bool) * n))
	ALLOC_D(ids);
	ALLOC_D(states);
	ALLOC_D(statuses);
	ALLOC_D(errors);
	ALLOC_D(next_at);
	ALLOC_D(finished_at);
	ALLOC_B(status_nulls);
	ALLOC_B(error_nulls);
	ALLOC_B(next_nulls);
	ALLOC_B(finished_nulls);
	ALLOC_D(l_occ);
	ALLOC_D(l_name);
	ALLOC_D(l_wid);
	ALLOC_D(l_status);
	ALLOC_D(l_error);
	ALLOC_D(l_payload);
	ALLOC_D(l_did);
	ALLOC_D(l_attempt);
	ALLOC_D(l_ms);
	ALLOC_D(l_outcome);
	ALLOC_D(l_next);
	ALLOC_B(l_status_nulls);
	ALLOC_B(l_next_nulls);
	ALLOC_B(l_name_nulls);
	ALLOC_D(gone);

	for (i = 0; i < n; i++)
	{
		Delivery   *d = finished[i];
		WhRequest  *r = &d->req;
		bool		got_response = r->status > 0 && (r->result == CURLE_OK || r->response_truncated) &&
			!r->headers_too_large && r->blocked_reason == NULL && d->precheck_error == NULL;
		bool		ok = got_response && r->status >= 200 && r->status < 300;
		const char *outcome;

		ids[i] = Int64GetDatum(r->delivery_id);
		if (r->status > 0)
			statuses[i] = Int32GetDatum((int32) r->status);
		else
			status_nulls[i] = true;

		if (ok)
		{
			states[i] = CStringGetTextDatum("delivered");
			error_nulls[i] = true;
			next_nulls[i] = true;
			finished_at[i] = TimestampTzGetDatum(now);
			continue;
		}

		/* a failed attempt: log it and decide what follows */
		errors[i] = CStringGetTextDatum(d->precheck_error ? d->precheck_error
										: wh_request_error_content(r));
		if (got_response && r->status == 410)
		{
			outcome = "deactivated";
			states[i] = CStringGetTextDatum("held");
			next_at[i] = TimestampTzGetDatum(now);
			finished_nulls[i] = true;
			gone[ngone++] = Int64GetDatum(r->webhook_id);
			l_next_nulls[nlogs] = true;
		}
		else if (r->attempt > wh_retry_count || d->precheck_error != NULL)
		{
			outcome = "dead";
			states[i] = CStringGetTextDatum("dead");
			next_nulls[i] = true;
			finished_at[i] = TimestampTzGetDatum(now);
			l_next_nulls[nlogs] = true;
		}
		else
		{
			TimestampTz at = TimestampTzPlusMilliseconds(now, retry_delay_ms(d));

			outcome = "retry";
			if (earliest_retry == 0 || at < earliest_retry)
				earliest_retry = at;
			states[i] = CStringGetTextDatum("pending");
			next_at[i] = TimestampTzGetDatum(at);
			finished_nulls[i] = true;
			l_next[nlogs] = TimestampTzGetDatum(at);
		}

		l_occ[nlogs] = TimestampTzGetDatum(r->started ? r->started : now);
		if (d->webhook_name)
			l_name[nlogs] = CStringGetTextDatum(d->webhook_name);
		else
			l_name_nulls[nlogs] = true;
		l_wid[nlogs] = Int64GetDatum(r->webhook_id);
		if (r->status > 0)
			l_status[nlogs] = Int32GetDatum((int32) r->status);
		else
			l_status_nulls[nlogs] = true;
		l_error[nlogs] = errors[i];
		l_payload[nlogs] = CStringGetTextDatum(r->body);
		l_did[nlogs] = Int64GetDatum(r->delivery_id);
		l_attempt[nlogs] = Int32GetDatum(r->attempt);
		l_ms[nlogs] = Float8GetDatum(r->duration_ms);
		l_outcome[nlogs] = CStringGetTextDatum(outcome);
		nlogs++;
	}

	begin_xact("recording delivery results");
	if (!check_extension())
	{
		/* dropped: the rows are gone with it */
		commit_xact();
		goto done;
	}
	prepare_plans();

	args[0] = make_array(ids, NULL, n, INT8OID);
	args[1] = make_array(states, NULL, n, TEXTOID);
	args[2] = make_array(statuses, status_nulls, n, INT4OID);
	args[3] = make_array(errors, error_nulls, n, TEXTOID);
	args[4] = make_array(next_at, next_nulls, n, TIMESTAMPTZOID);
	args[5] = make_array(finished_at, finished_nulls, n, TIMESTAMPTZOID);
	if (SPI_execute_plan(plan_record, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record delivery results");

	if (nlogs > 0)
	{
		args[0] = make_array(l_occ, NULL, nlogs, TIMESTAMPTZOID);
		args[1] = make_array(l_name, l_name_nulls, nlogs, TEXTOID);
		args[2] = make_array(l_wid, NULL, nlogs, INT8OID);
		args[3] = make_array(l_status, l_status_nulls, nlogs, INT4OID);
		args[4] = make_array(l_error, NULL, nlogs, TEXTOID);
		args[5] = make_array(l_payload, NULL, nlogs, TEXTOID);
		args[6] = make_array(l_did, NULL, nlogs, INT8OID);
		args[7] = make_array(l_attempt, NULL, nlogs, INT4OID);
		args[8] = make_array(l_ms, NULL, nlogs, FLOAT8OID);
		args[9] = make_array(l_outcome, NULL, nlogs, TEXTOID);
		args[10] = make_array(l_next, l_next_nulls, nlogs, TIMESTAMPTZOID);
		if (SPI_execute_plan(plan_log, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write webhook_logs");
	}

	if (ngone > 0)
	{
		Oid			argtype = INT8ARRAYOID;
		Datum		arg = make_array(gone, NULL, ngone, INT8OID);

		/* 410 Gone: the receiver asks us to stop; its queue is held */
		if (SPI_execute_with_args("UPDATE webhooks.webhooks SET is_active = false, "
								  "       deactivated_reason = 'the target answered 410 Gone at ' || pg_catalog.now() "
								  " WHERE id = ANY ($1) AND is_active",
								  1, &argtype, &arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not deactivate webhooks");
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("webhooks worker: deactivated %llu webhook(s) whose target answered 410 Gone",
							(unsigned long long) SPI_processed)));
	}
	commit_xact();

done:
	for (i = 0; i < n; i++)
		free_delivery(finished[i]);
	nfinished = 0;
	/* a retry may now be due before the last known next_due */
	if (earliest_retry != 0 && (next_due == 0 || earliest_retry < next_due))
		next_due = earliest_retry;
}

/* ---------------------------------------------------------------------
 * maintenance
 * ---------------------------------------------------------------------
 */

static void
maintenance(void)
{
	int			i;
	Oid			argtype = INT4OID;
	Datum		arg = Int32GetDatum(wh_log_retention_s);
	uint64		pruned = 0;

	for (i = 0; i < PRUNE_MAX_BATCHES; i++)
	{
		uint64		n = 0;

		begin_xact("pruning old deliveries and logs");
		if (!check_extension())
		{
			commit_xact();
			return;
		}
		SPI_execute_with_args("DELETE FROM webhooks.deliveries WHERE id IN ("
							  " SELECT id FROM webhooks.deliveries "
							  "  WHERE finished_at < pg_catalog.now() - $1 * interval '1 second' "
							  "  LIMIT " CppAsString2(PRUNE_BATCH) ")",
							  1, &argtype, &arg, NULL, false, 0);
		n += SPI_processed;
		SPI_execute_with_args("DELETE FROM webhooks.webhook_logs WHERE id IN ("
							  " SELECT id FROM webhooks.webhook_logs "
							  "  WHERE occurrence_date < pg_catalog.now() - $1 * interval '1 second' "
							  "  LIMIT " CppAsString2(PRUNE_BATCH) ")",
							  1, &argtype, &arg, NULL, false, 0);
		n += SPI_processed;
		if (i == 0)
		{
			SPI_execute("UPDATE webhooks.webhooks SET previous_secret = NULL, previous_secret_expires_at = NULL "
						" WHERE previous_secret_expires_at < pg_catalog.now()", false, 0);
			/* deliveries whose webhook vanished (a race with its deletion) die, logged */
			SPI_execute("WITH o AS (UPDATE webhooks.deliveries d SET state = 'dead', "
						"       finished_at = pg_catalog.now(), lease_until = NULL, "
						"       last_error = 'webhook no longer exists' "
						" WHERE d.state = 'pending' AND NOT EXISTS ("
						"       SELECT FROM webhooks.webhooks w WHERE w.id = d.webhook_id) RETURNING d.*) "
						"INSERT INTO webhooks.webhook_logs (webhook_id, error_content, webhook_payload, "
						"       delivery_id, attempt, outcome) "
						"SELECT o.webhook_id, 'webhook no longer exists', webhooks._json_or_null(o.body), "
						"       o.id, o.attempts, 'dead' FROM o", false, 0);
		}
		commit_xact();
		pruned += n;
		if (n < PRUNE_BATCH)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	if (pruned > 0)
		elog(DEBUG1, "webhooks worker: pruned " UINT64_FORMAT " rows older than webhooks.log_retention", pruned);
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

	while ((req = wh_engine_next_done(engine)) != NULL)
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
		in_flight--;
		if (s->more_due &&
			wh_max_concurrency_per_webhook - s->in_flight >= refill_quantum(wh_max_concurrency_per_webhook))
		{
			s->more_due = false;
			maybe_work = true;
		}
		add_finished((Delivery *) req->arg);
	}
}

static long
ms_until(TimestampTz t, TimestampTz now)
{
	if (t <= now)
		return 0;
	return (long) Min((t - now) / 1000, (int64) INT_MAX);
}

static void
report_activity(void)
{
	char		buf[128];
	if (!extension_present)
		snprintf(buf, sizeof(buf), "waiting for CREATE EXTENSION webhooks");
	else if (!wh_enabled)
		snprintf(buf, sizeof(buf), "paused (webhooks.enabled = off), %d in flight", in_flight);
	else if (in_flight > 0)
		snprintf(buf, sizeof(buf), "delivering: %d requests in flight", in_flight);
	else
		snprintf(buf, sizeof(buf), "idle");
	if (strcmp(buf, idle_activity) == 0)
		return;
	strlcpy(idle_activity, buf, sizeof(idle_activity));
	pgstat_report_activity(STATE_IDLE, buf);
}

static void
run_step(void (*step) (void))
{
	MemoryContext old = MemoryContextSwitchTo(loop_cxt);

	PG_TRY();
	{
		step();
	}
	PG_CATCH();
	{
		/* report, roll back, pause, go on: the loop must survive */
		MemoryContextSwitchTo(loop_cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		forget_plans();
		maybe_work = true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ERROR_PAUSE_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(loop_cxt);
}

/*
 * Split the oldest event batch into deliveries (one batch, at most 10,000
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
	batches_pending = (n > 0);
	if (n > 0)
		maybe_work = true;
}

/*
 * Claim when there may be due work and enough free slots: refilling in
 * batches keeps claims (transactions) few under load, while an idle worker
 * claims a single event at once.
 */
static bool
want_claim(void)
{
	int			free_slots = wh_max_concurrency - in_flight;

	return extension_present && wh_enabled && maybe_work && free_slots > 0 &&
		nfinished + wh_max_concurrency < MAX_FINISHED / 2 &&
		(in_flight == 0 || free_slots >= Max(1, wh_max_concurrency / 4));
}

static void
step_claim(void)
{
	int			room = Min(wh_max_concurrency - in_flight, wh_batch_size);
	int			seen;

	seen = claim(room);
	maybe_work = (seen >= room);	/* else: drained, or every webhook at its cap */
}

static void
step_check_extension(void)
{
	begin_xact("checking for the extension");
	check_extension();
	commit_xact();
}

void
webhooks_worker_main(Datum main_arg)
{
	HASHCTL		ctl;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(wh_database_name, NULL, 0);

	/*
	 * The worker's own commits (leases, results) need not wait for the WAL
	 * flush: a crash can only lose the newest of them, and a lost lease or
	 * result means the delivery is sent again with the same webhook-id,
	 * which at-least-once delivery allows.  What applications enqueue is
	 * committed by their own transactions, under their own settings.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/* short statements run thousands of times a second: never worth JIT */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	wh_shared->worker_pid = MyProcPid;
	wh_shared->worker_procno = wh_my_procno();
	before_shmem_exit(worker_shmem_exit, (Datum) 0);

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "webhooks worker", ALLOCSET_DEFAULT_SIZES);
	loop_cxt = AllocSetContextCreate(worker_cxt, "webhooks loop", ALLOCSET_DEFAULT_SIZES);
	deliveries_cxt = AllocSetContextCreate(worker_cxt, "webhooks deliveries", ALLOCSET_DEFAULT_SIZES);
	engine = wh_engine_create(AllocSetContextCreate(worker_cxt, "webhooks engine", ALLOCSET_DEFAULT_SIZES));
	finished = MemoryContextAlloc(worker_cxt, sizeof(Delivery *) * MAX_FINISHED);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(WebhookSlot);
	ctl.hcxt = worker_cxt;
	slots = hash_create("webhooks slots", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	elog(LOG, "webhooks worker started for database \"%s\"", wh_database_name);
	run_step(step_check_extension);

	for (;;)
	{
		TimestampTz now;
		long		timeout;
		bool		latch;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			maybe_work = true;
			forget_http1_fallbacks();
		}

		collect_finished();
		now = GetCurrentTimestamp();
		if (nfinished > 0 &&
			(nfinished >= FLUSH_MAX_RESULTS || wh_engine_running(engine) == 0 ||
			 now >= TimestampTzPlusMilliseconds(first_finished_at, FLUSH_DELAY_MS)))
			run_step(flush_results);

		if (pg_atomic_exchange_u32(&wh_shared->batches_pending, 0) != 0)
			batches_pending = true;
		if (extension_present && wh_enabled && batches_pending)
			run_step(step_expand);

		if (want_claim())
			run_step(step_claim);

		now = GetCurrentTimestamp();
		if (now >= next_maintenance)
		{
			if (!extension_present)
				run_step(step_check_extension);
			if (extension_present)
				run_step(maintenance);
			next_maintenance = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   extension_present ? MAINTENANCE_INTERVAL_MS : IDLE_CHECK_MS);
		}

		report_activity();

		/* how long may we sleep? */
		now = GetCurrentTimestamp();
		timeout = ms_until(next_maintenance, now);
		if (nfinished > 0)
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(first_finished_at, FLUSH_DELAY_MS), now));
		if (extension_present && wh_enabled && !maybe_work && next_due != 0)
			timeout = Min(timeout, ms_until(next_due, now));
		if (want_claim() || (extension_present && wh_enabled && batches_pending))
			timeout = 0;

		latch = wh_engine_wait(engine, timeout, PG_WAIT_EXTENSION);
		if (latch)
		{
			maybe_work = true;
			if (!extension_present)
				next_maintenance = 0;	/* CREATE EXTENSION wakes us: look now */
		}
		if (next_due != 0 && GetCurrentTimestamp() >= next_due)
		{
			maybe_work = true;
			next_due = 0;
		}
	}
}
