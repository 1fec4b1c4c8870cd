/*-------------------------------------------------------------------------
 *
 * webhooks.c
 *	  Module initialisation: settings, shared memory, and the commit-time
 *	  wake-up of the delivery worker.
 *
 * The library must be in shared_preload_libraries: only then can it reserve
 * shared memory (where the worker publishes its latch) and register the
 * background worker.  Every backend loads it at start, so each one installs
 * a transaction callback: a transaction that enqueued a delivery sets the
 * worker's latch when it commits, so an idle worker reacts within
 * milliseconds without polling.  Rolled-back transactions wake nobody.
 * The same callbacks publish, at commit, the counts of events that found no
 * active webhook (unrouted.c).
 *
 * The row trigger gathers its events in backend memory (payload.c).  Hooks
 * store them when their statement ends: ExecutorEnd, after ExecutorFinish
 * has fired the statement's AFTER ROW triggers, and ProcessUtility, for COPY
 * FROM and SET CONSTRAINTS, which fire triggers without an executor of their
 * own; ExecutorFinish and ProcessUtility count how deeply statements are
 * nested, so that each statement stores what it gathered.  The transaction
 * callbacks store what deferred triggers gather at commit (PRE_COMMIT,
 * PRE_PREPARE), hand a released savepoint's events to its parent, and
 * forget a rolled-back savepoint's or transaction's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/guc.h"

#include "compat.h"
#include "launcher.h"
#include "payload.h"
#include "unrouted.h"
#include "webhooks.h"
#include "worker.h"

WH_PG_MODULE_MAGIC;

/* PostgreSQL 15 declares no prototype for _PG_init */
void		_PG_init(void);

/* settings */
char	   *wh_database_name = NULL;
char	   *wh_databases = NULL;
int			wh_workers_per_database = 1;
bool		wh_enabled = true;
char	   *wh_ca_file = NULL;
char	   *wh_dns_overrides = NULL;
bool		wh_allow_private_targets = false;
bool		wh_http2 = true;
char	   *wh_retry_schedule = NULL;
int			wh_connect_timeout_ms = 10000;
int			wh_request_timeout_ms = 30000;
int			wh_response_body_limit = 4096;
int			wh_max_concurrency = 128;
int			wh_max_concurrency_per_webhook = 64;
int			wh_batch_size = 500;
int			wh_log_retention_s = 7 * 24 * 3600;
int			wh_max_payload_size = 65536;
int			wh_secret_grace_period_s = 24 * 3600;
int			wh_retry_after_max_s = 3600;

int			wh_retry_count = 0;
int		   *wh_retry_delays_ms = NULL;

bool		wh_loaded_at_preload = false;

WhSharedState *wh_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorFinish_hook_type prev_ExecutorFinish = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* set when this transaction enqueued something, or stored event batches */
static bool wake_at_commit = false;
static bool announce_at_commit = false;
static bool batches_at_commit = false;

#define WH_MAX_RETRIES 50

/* parsed form of webhooks.retry_schedule, kept as the GUC's "extra" */
typedef struct RetrySchedule
{
	int			count;
	int			delays_ms[FLEXIBLE_ARRAY_MEMBER];
} RetrySchedule;

/*
 * The next item of a comma-separated setting, without the blanks (spaces,
 * tabs) around it.  *rest is where the item starts; it moves past the
 * comma, or to NULL after the last item.  The string is cut in place.
 */
char *
wh_next_setting_item(char **rest)
{
	char	   *item = *rest;
	char	   *end;

	*rest = strchr(item, ',');
	if (*rest != NULL)
		*(*rest)++ = '\0';
	while (*item == ' ' || *item == '\t')
		item++;
	end = item + strlen(item);
	while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	return item;
}

/* GUC check hook of webhooks.retry_schedule: parses it into the "extra" */
static bool
check_retry_schedule(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	char	   *rest;
	RetrySchedule *sched;
	int			n = 0;

	sched = wh_guc_malloc(offsetof(RetrySchedule, delays_ms) + WH_MAX_RETRIES * sizeof(int));
	if (sched == NULL)
		return false;
	copy = pstrdup(*newval ? *newval : "");
	/* an empty schedule means no retries; otherwise no entry may be empty */
	if (copy[strspn(copy, " \t")] == '\0')
	{
		sched->count = 0;
		pfree(copy);
		*extra = sched;
		return true;
	}
	for (rest = copy; rest != NULL;)
	{
		int			ms;
		const char *hint = NULL;
		char	   *tok = wh_next_setting_item(&rest);

		if (*tok == '\0')
		{
			GUC_check_errdetail("The schedule has an empty entry.");
			goto fail;
		}
		if (strspn(tok, "0123456789") == strlen(tok))
		{
			GUC_check_errdetail("Delay \"%s\" has no unit.", tok);
			GUC_check_errhint("Write each delay with a unit: ms, s, min, h or d, e.g. '5s, 5min, 30min'.");
			goto fail;
		}
		if (!parse_int(tok, &ms, GUC_UNIT_MS, &hint) || ms < 0)
		{
			GUC_check_errdetail("\"%s\" is not a valid delay.", tok);
			GUC_check_errhint("Write each delay with a unit: ms, s, min, h or d, e.g. '5s, 5min, 30min'.");
			goto fail;
		}
		if (n >= WH_MAX_RETRIES)
		{
			GUC_check_errdetail("The schedule has more than %d entries.", WH_MAX_RETRIES);
			goto fail;
		}
		sched->delays_ms[n++] = ms;
	}
	sched->count = n;
	pfree(copy);
	*extra = sched;
	return true;

fail:
	pfree(copy);
	wh_guc_free(sched);
	return false;
}

static void
assign_retry_schedule(const char *newval, void *extra)
{
	RetrySchedule *sched = (RetrySchedule *) extra;

	wh_retry_count = sched->count;
	wh_retry_delays_ms = sched->delays_ms;
}

/* one entry per database the library may serve: as many as there can be workers */
static Size
shared_size(void)
{
	return MAXALIGN(add_size(offsetof(WhSharedState, databases),
							 mul_size(sizeof(WhDatabase), max_worker_processes)));
}

static void
wh_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("webhooks", 1);
	RequestAddinShmemSpace(wh_unrouted_shmem_size());
}

static void
wh_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wh_shared = ShmemInitStruct("webhooks", shared_size(), &found);
	if (!found)
	{
		wh_shared->lock = &(GetNamedLWLockTranche("webhooks"))->lock;
		wh_shared->launcher_pid = 0;
		wh_shared->launcher_procno = -1;
		wh_shared->ndatabases = max_worker_processes;
		for (int i = 0; i < max_worker_processes; i++)
		{
			WhDatabase *db = &wh_shared->databases[i];

			memset(db, 0, sizeof(*db));
			db->dboid = InvalidOid;
			pg_atomic_init_u32(&db->batches_pending, 1);
			for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
			{
				db->workers[k].procno = -1;
				pg_atomic_init_u32(&db->workers[k].wake_wanted, 1);
				pg_atomic_init_u64(&db->workers[k].commit_wakeups, 0);
			}
			for (int k = 0; k < WH_WEBHOOKS_PER_DATABASE; k++)
			{
				pg_atomic_init_u64(&db->webhooks[k].webhook_id, 0);
				pg_atomic_init_u32(&db->webhooks[k].in_flight, 0);
			}
		}
	}
	wh_unrouted_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/* set the latch of the process at pgprocno procno (-1: none) */
void
wh_wake_procno(int procno)
{
	if (procno >= 0 && procno < (int) ProcGlobal->allProcCount)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/*
 * Wake one of this database's workers now (one that waits for work if
 * any), or ask the launcher for one when none runs.  Used at commit, and by
 * functions that change what the workers should do (redelivery,
 * activation).
 */
void
wh_wake_worker_now(void)
{
	WhDatabase *db = wh_database_entry(MyDatabaseId);
	int			any = -1;

	if (db == NULL)
	{
		wh_request_worker();
		return;
	}
	for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
	{
		WhWorkerSlot *w = &db->workers[k];

		if (w->pid == 0)
			continue;
		if (pg_atomic_read_u32(&w->wake_wanted) != 0)
		{
			wh_wake_procno(w->procno);
			return;
		}
		if (any < 0)
			any = w->procno;
	}
	if (any >= 0)
		wh_wake_procno(any);
	else
		wh_request_worker();
}

/*
 * Remember to wake the worker when the current transaction commits: for
 * changes to what it should do (webhooks._wake_worker()).
 */
void
wh_wake_worker_at_commit(void)
{
	wake_at_commit = true;
}

/*
 * Remember to tell the worker, when the current transaction commits, that
 * events were queued.  Of the commits between two of its claims only the
 * first wakes it (wake_wanted, set by the worker before each claim): the
 * claim it then makes sees them all, and a paused worker (webhooks.enabled
 * off), which does not claim, is not woken by every commit.
 */
void
wh_announce_at_commit(void)
{
	announce_at_commit = true;
}

/* Tell the worker, at commit, that there are event batches to split. */
void
wh_batches_at_commit(void)
{
	batches_at_commit = true;
	announce_at_commit = true;
}

/*
 * The commit's wake-up: of the workers waiting for work (wake_wanted), the
 * first one; none when all are busy (their next claims see the commit).
 * With no worker at all, the launcher is asked for one.
 */
static void
announce_commit(void)
{
	WhDatabase *db = wh_database_entry(MyDatabaseId);
	bool		running = false;

	if (db != NULL)
		for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
		{
			WhWorkerSlot *w = &db->workers[k];

			if (w->pid == 0)
				continue;
			running = true;
			if (pg_atomic_read_u32(&w->wake_wanted) != 0 &&
				pg_atomic_exchange_u32(&w->wake_wanted, 0) != 0)
			{
				pg_atomic_fetch_add_u64(&w->commit_wakeups, 1);
				wh_wake_procno(w->procno);
				return;
			}
		}
	if (!running)
		wh_request_worker();
}

/*
 * ExecutorFinish fires the statement's AFTER triggers: what they gather
 * belongs to this statement, one level deeper than the statements around it.
 */
static void
wh_ExecutorFinish(QueryDesc *queryDesc)
{
	wh_exec_depth++;
	PG_TRY();
	{
		if (prev_ExecutorFinish)
			prev_ExecutorFinish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		wh_exec_depth--;
	}
	PG_END_TRY();
}

/*
 * A statement ends: store the events it (and statements inside it)
 * gathered.  Only a statement that can fire AFTER ROW triggers itself (not
 * a plain SELECT, such as one a trigger function runs for every row)
 * stores.
 */
static void
wh_ExecutorEnd(QueryDesc *queryDesc)
{
	bool		fires_triggers = queryDesc->operation != CMD_SELECT ||
		queryDesc->plannedstmt->hasModifyingCTE;

	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
	if (fires_triggers && wh_have_gathered())
		wh_store_gathered(wh_exec_depth);
}

/* whether a statement creates, drops or updates extension webhooks */
static bool
is_about_webhooks(Node *stmt, NodeTag tag)
{
	ListCell   *lc;

	if (nodeTag(stmt) != tag)
		return false;
	if (IsA(stmt, CreateExtensionStmt))
		return strcmp(((CreateExtensionStmt *) stmt)->extname, "webhooks") == 0;
	if (IsA(stmt, AlterExtensionStmt))
		return strcmp(((AlterExtensionStmt *) stmt)->extname, "webhooks") == 0;
	if (!IsA(stmt, DropStmt) || ((DropStmt *) stmt)->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, ((DropStmt *) stmt)->objects)
		if (strcmp(strVal(lfirst(lc)), "webhooks") == 0)
			return true;
	return false;
}

/*
 * A utility statement ends: COPY FROM and SET CONSTRAINTS fire triggers.
 * Database commands that need no other sessions hold the database from
 * the launcher while they run (launcher.c); CREATE DATABASE has the new
 * database looked at, CREATE EXTENSION webhooks starts the worker, and
 * DROP or ALTER EXTENSION wakes it at commit.
 */
static void
wh_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	wh_hold_databases(stmt);
	wh_exec_depth++;
	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		wh_exec_depth--;
	}
	PG_END_TRY();
	if (IsA(stmt, CreatedbStmt))
		wh_database_created(((CreatedbStmt *) stmt)->dbname);
	else if (is_about_webhooks(stmt, T_CreateExtensionStmt))
		wh_start_worker_for_session();
	else if (is_about_webhooks(stmt, T_DropStmt) || is_about_webhooks(stmt, T_AlterExtensionStmt))
		wh_wake_worker_at_commit();
	/* COMMIT, ROLLBACK (TO), RELEASE: the transaction callbacks decide */
	if (wh_have_gathered() && !IsA(pstmt->utilityStmt, TransactionStmt))
		wh_store_gathered(wh_exec_depth);
}

static void
wh_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			/* what deferred triggers gathered after the last statement */
			wh_store_gathered(-1);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (batches_at_commit)
			{
				WhDatabase *db = wh_database_entry(MyDatabaseId);

				if (db != NULL)
					pg_atomic_write_u32(&db->batches_pending, 1);
			}
			if (wake_at_commit)
				wh_wake_worker_now();
			else if (announce_at_commit)
				announce_commit();
			wake_at_commit = announce_at_commit = false;
			batches_at_commit = false;
			wh_unrouted_xact_end(true);
			wh_gathered_xact_end();
			wh_databases_xact_end(true);
			break;
		case XACT_EVENT_PREPARE:
			wake_at_commit = announce_at_commit = false;
			batches_at_commit = false;
			/* the backend forgets the transaction now: count it as committed */
			wh_unrouted_xact_end(true);
			wh_gathered_xact_end();
			wh_databases_xact_end(false);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = announce_at_commit = false;
			batches_at_commit = false;
			wh_unrouted_xact_end(false);
			wh_gathered_xact_end();
			wh_databases_xact_end(false);
			break;
		default:
			break;
	}
}

/*
 * A savepoint is released or rolled back (unrouted.c keeps counts per
 * level, payload.c the gathered events).
 */
static void
wh_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		wh_unrouted_subxact_end(true);
		wh_gathered_subxact_end(true);
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		wh_unrouted_subxact_end(false);
		wh_gathered_subxact_end(false);
	}
}

static void
define_settings(void)
{
	/*
	 * A PGC_POSTMASTER setting can only be defined while preloading (later
	 * it is FATAL); without preload CREATE EXTENSION reports the problem.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("webhooks.databases",
								   "Databases where delivery workers may run (comma-separated names).",
								   "Empty: every database that has the extension.",
								   &wh_databases,
								   "",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);
		DefineCustomStringVariable("webhooks.database_name",
								   "Deprecated: read as webhooks.databases when that is empty.",
								   NULL,
								   &wh_database_name,
								   "",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);
	}

	DefineCustomIntVariable("webhooks.workers_per_database",
							"Delivery workers in each database with the extension.",
							"They share the queue; webhooks.max_concurrency is per worker, "
							"webhooks.max_concurrency_per_webhook holds across them.",
							&wh_workers_per_database,
							1, 1, WH_MAX_WORKERS_PER_DATABASE,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("webhooks.enabled",
							 "Whether the worker delivers webhooks.",
							 "When off, events are still queued but nothing is sent.",
							 &wh_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("webhooks.ca_file",
							   "Extra CA bundle (PEM file) trusted for target servers.",
							   "Added to the system's trust store; empty means the system store only.",
							   &wh_ca_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("webhooks.dns_overrides",
							   "Host names pinned to addresses, as libcurl's host:port:address entries.",
							   "A comma-separated list, e.g. 'hooks.example.com:443:203.0.113.7'. "
							   "The address is still checked against the non-public ranges at connect time.",
							   &wh_dns_overrides,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("webhooks.allow_private_targets",
							 "Allow loopback, private and link-local target addresses.",
							 "Cloud metadata addresses stay blocked either way.",
							 &wh_allow_private_targets,
							 false,
							 PGC_SIGHUP,
							 GUC_SUPERUSER_ONLY,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("webhooks.http2",
							 "Speak HTTP/2 to receivers that offer it.",
							 "Off: HTTP/1.1 over parallel keep-alive connections, which costs "
							 "the worker less CPU per request with libcurl 7.88.",
							 &wh_http2,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("webhooks.retry_schedule",
							   "Delays between delivery attempts, e.g. '5s, 5min, 30min'.",
							   "Its length is the number of retries after the first attempt.",
							   &wh_retry_schedule,
							   "5s, 5min, 30min, 2h, 5h, 10h, 14h, 20h, 24h",
							   PGC_SIGHUP,
							   0,
							   check_retry_schedule, assign_retry_schedule, NULL);

	DefineCustomIntVariable("webhooks.connect_timeout",
							"Time allowed to connect to a target (TCP and TLS).",
							NULL,
							&wh_connect_timeout_ms,
							10000, 100, 300000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.timeout",
							"Total time allowed for one request.",
							NULL,
							&wh_request_timeout_ms,
							30000, 100, 600000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.response_body_limit",
							"Bytes of a response body kept in logs.",
							NULL,
							&wh_response_body_limit,
							4096, 0, 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.max_concurrency",
							"Requests the worker keeps in flight at once.",
							NULL,
							&wh_max_concurrency,
							128, 1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.max_concurrency_per_webhook",
							"Requests in flight at once to one webhook.",
							"Keeps one slow endpoint from taking every slot.",
							&wh_max_concurrency_per_webhook,
							64, 1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.batch_size",
							"Deliveries claimed per queue query.",
							NULL,
							&wh_batch_size,
							500, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.log_retention",
							"How long delivered and dead deliveries and log rows are kept.",
							NULL,
							&wh_log_retention_s,
							7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.max_payload_size",
							"Largest payload (JSON body) that can be enqueued.",
							NULL,
							&wh_max_payload_size,
							65536, 256, 10 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.secret_grace_period",
							"How long a rotated-out secret still signs deliveries.",
							NULL,
							&wh_secret_grace_period_s,
							24 * 3600, 0, 30 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("webhooks.retry_after_max",
							"Longest Retry-After delay honoured.",
							"Longer requests from a receiver are cut to this.",
							&wh_retry_after_max_s,
							3600, 1, 7 * 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("webhooks");
}

void
_PG_init(void)
{
	define_settings();

	if (!process_shared_preload_libraries_in_progress)
		return;

	wh_loaded_at_preload = true;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wh_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wh_shmem_startup;

	RegisterXactCallback(wh_xact_callback, NULL);
	RegisterSubXactCallback(wh_subxact_callback, NULL);

	prev_ExecutorFinish = ExecutorFinish_hook;
	ExecutorFinish_hook = wh_ExecutorFinish;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = wh_ExecutorEnd;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = wh_ProcessUtility;

	wh_register_launcher();
}

/*
 * Prepare a statement and keep its plan for the backend's lifetime: the
 * worker's statements, and the enqueue path's (payload.c).
 */
SPIPlanPtr
wh_keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep the plan of \"%s\"", sql);
	return plan;
}
