/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  One delivery worker per database that has the extension, started by
 *	  a launcher, with no configuration.
 *
 * The launcher is the library's one static background worker.  It connects
 * to no database: at start it reads pg_database and asks for a worker in
 * every database that allows connections and is not a template (and is in
 * webhooks.databases, when that is set).  A worker (worker.c, a dynamic
 * background worker) connects to its database, and leaves at once when
 * the extension is not there: so at steady state only databases with the
 * extension have a worker, and no other database has a session of ours.
 *
 * Afterwards the databases ask: CREATE EXTENSION webhooks starts its
 * database's worker from the session (which warns when
 * max_worker_processes leaves no room); a commit that queued events in a
 * database without a worker asks the launcher for one; CREATE DATABASE
 * asks for a look at the new database (a copy of a template with the
 * extension gets its own worker).  A worker that stops while its database
 * still wants one (killed, crashed) is started again by the launcher, a
 * second later.
 *
 * Commands that need a database without other sessions (DROP DATABASE,
 * ALTER DATABASE ... RENAME and SET TABLESPACE, CREATE DATABASE ...
 * TEMPLATE) hold the database while they run: its worker is stopped and
 * none starts until the command is over (wh_hold_databases).
 *
 * Shared memory has one entry per database the library knows of
 * (WhDatabase, webhooks.h), as many as max_worker_processes: a database
 * without a worker slot cannot be served anyway.  Entries are taken and
 * changed under WhShared->lock; the commit wake-up reads them without it
 * (a stale read costs a spurious wake-up, never a lost one: see worker.c's
 * exit).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "funcapi.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "launcher.h"
#include "webhooks.h"

/* a stopped worker whose database still wants one is started again after */
#define RESTART_DELAY_MS 1000
/* how long a command waits for the worker of a database it holds */
#define HOLD_WAIT_MS 10000
/* a registered worker takes its entry within this, or is taken for failed */
#define START_WAIT_MS 5000

/* in a session: the databases this transaction holds, and the one it created */
static Oid	held_databases[8];
static int	nheld = 0;
static Oid	created_database = InvalidOid;

/* the launcher's handles of the workers it started, by entry and worker */
static BackgroundWorkerHandle **handles = NULL;
#define HANDLE(i, k) handles[(i) * WH_MAX_WORKERS_PER_DATABASE + (k)]
/* the launcher logged that this entry's database got no worker slot */
static bool *no_slot_logged = NULL;

/* ---------------------------------------------------------------------
 * entries
 * ---------------------------------------------------------------------
 */

/* the entry of a database, or NULL; without the lock, a hint only */
WhDatabase *
wh_database_entry(Oid dboid)
{
	if (wh_shared == NULL || !OidIsValid(dboid))
		return NULL;
	for (int i = 0; i < wh_shared->ndatabases; i++)
		if (wh_shared->databases[i].dboid == dboid)
			return &wh_shared->databases[i];
	return NULL;
}

/* the entry of a database, made when missing (NULL: all are taken); under the lock */
static WhDatabase *
entry_for(Oid dboid)
{
	WhDatabase *free_entry = NULL;

	for (int i = 0; i < wh_shared->ndatabases; i++)
	{
		WhDatabase *db = &wh_shared->databases[i];

		if (db->dboid == dboid)
			return db;
		if (free_entry == NULL && !OidIsValid(db->dboid))
			free_entry = db;
	}
	if (free_entry != NULL)
	{
		free_entry->wanted = false;
		free_entry->excluded = false;
		free_entry->held = 0;
		free_entry->start_after = 0;
		free_entry->serving = false;
		pg_atomic_write_u32(&free_entry->batches_pending, 1);
		for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
		{
			WhWorkerSlot *w = &free_entry->workers[k];

			w->pid = 0;
			w->procno = -1;
			w->starting_until = 0;
			w->in_flight = 0;
			w->last_claim_at = 0;
			pg_atomic_write_u32(&w->wake_wanted, 1);
			pg_atomic_write_u64(&w->commit_wakeups, 0);
		}
		for (int k = 0; k < WH_WEBHOOKS_PER_DATABASE; k++)
		{
			pg_atomic_write_u64(&free_entry->webhooks[k].webhook_id, 0);
			pg_atomic_write_u32(&free_entry->webhooks[k].in_flight, 0);
		}
		free_entry->dboid = dboid;
	}
	return free_entry;
}

/* how many workers serve the database (its entry may be read without the lock) */
int
wh_running_workers(WhDatabase *db)
{
	int			n = 0;

	for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
		if (db->workers[k].pid != 0)
			n++;
	return n;
}

void
wh_wake_launcher(void)
{
	if (wh_shared != NULL)
		wh_wake_procno(wh_shared->launcher_procno);
}

/*
 * Ask the launcher for a worker in this database (a commit queued events
 * and none serves it).  Once asked, or once the launcher has ruled the
 * database out (webhooks.databases), commits do not ask again.
 */
void
wh_request_worker(void)
{
	WhDatabase *db = wh_database_entry(MyDatabaseId);

	if (db != NULL && (db->wanted || db->excluded))
		return;
	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	db = entry_for(MyDatabaseId);
	if (db != NULL && !db->excluded)
		db->wanted = true;
	LWLockRelease(wh_shared->lock);
	wh_wake_launcher();
}

/* ---------------------------------------------------------------------
 * webhooks.databases
 * ---------------------------------------------------------------------
 */

/*
 * Whether webhooks.databases lets a worker serve the database (an empty
 * list: every database).  webhooks.database_name, from versions that
 * served one database, is a list of one when webhooks.databases is empty.
 */
bool
wh_database_allowed(const char *name)
{
	const char *setting = (wh_databases && wh_databases[0] != '\0') ? wh_databases : wh_database_name;
	char	   *copy;
	char	   *rest;
	bool		found = false;

	if (setting == NULL || setting[strspn(setting, " \t")] == '\0')
		return true;
	copy = pstrdup(setting);
	for (rest = copy; rest != NULL && !found;)
		found = strcmp(wh_next_setting_item(&rest), name) == 0;
	pfree(copy);
	return found;
}

/* ---------------------------------------------------------------------
 * starting workers
 * ---------------------------------------------------------------------
 */

/*
 * Register a worker for a database.  One started by CREATE EXTENSION waits
 * a while for the extension (the session has not committed yet); one the
 * launcher starts leaves at once when the database has none.
 */
static bool
register_worker(Oid dboid, int index, pid_t notify_pid, BackgroundWorkerHandle **handle,
				bool wait_for_extension)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "webhooks");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "webhooks_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "webhooks worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "webhooks worker");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = notify_pid;
	worker.bgw_extra[0] = wait_for_extension ? 1 : 0;
	worker.bgw_extra[1] = (char) index;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* a database a worker can connect to and stay in: open to connections, not a template */
static bool
connectable(Form_pg_database d)
{
	return d->datallowconn && !d->datistemplate;
}

/*
 * Whether a worker may serve a database, from pg_database (needs a
 * transaction): it exists, is connectable, and is in webhooks.databases.
 * *exists says whether it exists at all.
 */
static bool
database_servable(Oid dboid, bool *exists)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	Form_pg_database d;
	bool		ok;

	*exists = HeapTupleIsValid(tup);
	if (!*exists)
		return false;
	d = (Form_pg_database) GETSTRUCT(tup);
	ok = connectable(d) && wh_database_allowed(NameStr(d->datname));
	ReleaseSysCache(tup);
	return ok;
}

/*
 * CREATE EXTENSION webhooks ran in this session: start this database's
 * worker now (it waits for the commit), or warn that no background worker
 * slot is free.  The launcher tries again when one is.
 */
void
wh_start_worker_for_session(void)
{
	WhDatabase *db;
	bool		running;
	bool		excluded;
	bool		exists;
	char	   *name = get_database_name(MyDatabaseId);
	bool		allowed = wh_database_allowed(name);

	if (wh_shared == NULL)
		return;
	/* a template (or a database closed to connections) gets no worker */
	if (allowed && !database_servable(MyDatabaseId, &exists))
		return;
	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	db = entry_for(MyDatabaseId);
	if (db == NULL)
	{
		LWLockRelease(wh_shared->lock);
		ereport(WARNING,
				(errmsg("no delivery worker can serve database \"%s\"", name),
				 errdetail("The webhooks library serves at most max_worker_processes (%d) databases.",
						   max_worker_processes)));
		return;
	}
	excluded = db->excluded = !allowed;
	db->wanted = allowed;
	running = db->workers[0].pid != 0 || db->workers[0].starting_until > GetCurrentTimestamp();
	/* the launcher leaves this start to us for a while, and starts the others */
	if (allowed && !running)
		db->workers[0].starting_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), START_WAIT_MS);
	LWLockRelease(wh_shared->lock);

	if (excluded)
		ereport(NOTICE,
				(errmsg("no delivery worker serves database \"%s\": it is not in webhooks.databases", name),
				 errhint("Add it to webhooks.databases and restart the server for its events to be delivered.")));
	else if (!running && !register_worker(MyDatabaseId, 0, 0, NULL, true))
		ereport(WARNING,
				(errmsg("no delivery worker could be started for database \"%s\"", name),
				 errdetail("All max_worker_processes (%d) background worker slots are in use.",
						   max_worker_processes),
				 errhint("Events are queued and delivered once a worker starts: raise max_worker_processes "
						 "(a restart), or stop other background workers.")));
	wh_wake_launcher();
}

/* ---------------------------------------------------------------------
 * commands that need a database to themselves
 * ---------------------------------------------------------------------
 */

/*
 * Whether the current user may run the command at all: only then does it
 * stop the database's workers (a role that is refused must not be able to
 * interrupt deliveries by trying).  Dropping, renaming or moving a database
 * takes its owner (or a superuser); copying one takes CREATEDB and, unless
 * it is a template, its owner.
 */
static bool
may_hold(Oid dboid, bool copy)
{
	HeapTuple	tup;
	Form_pg_database d;
	bool		ok;

	if (superuser())
		return true;
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tup))
		return false;
	d = (Form_pg_database) GETSTRUCT(tup);
	ok = has_privs_of_role(GetUserId(), d->datdba) || (copy && d->datistemplate);
	ReleaseSysCache(tup);
	if (ok && copy)
	{
		tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
		ok = HeapTupleIsValid(tup) && ((Form_pg_authid) GETSTRUCT(tup))->rolcreatedb;
		if (HeapTupleIsValid(tup))
			ReleaseSysCache(tup);
	}
	return ok;
}

/* the database a statement must hold while it runs (0 or 1 of them) */
static int
databases_to_hold(Node *stmt, Oid *oids)
{
	int			n = 0;
	ListCell   *lc;

	if (IsA(stmt, DropdbStmt))
		oids[n++] = get_database_oid(((DropdbStmt *) stmt)->dbname, true);
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		oids[n++] = get_database_oid(((RenameStmt *) stmt)->subname, true);
	else if (IsA(stmt, AlterDatabaseStmt))
	{
		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
				oids[n++] = get_database_oid(((AlterDatabaseStmt *) stmt)->dbname, true);
	}
	else if (IsA(stmt, CreatedbStmt))
	{
		const char *template = "template1";

		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *d = (DefElem *) lfirst(lc);

			if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
				template = defGetString(d);
		}
		oids[n++] = get_database_oid(template, true);
	}
	if (n == 1 && (!OidIsValid(oids[0]) || !may_hold(oids[0], IsA(stmt, CreatedbStmt))))
		n = 0;
	return n;
}

/*
 * Stop the worker of the database the statement needs to itself, and keep
 * the launcher from starting one until the transaction ends
 * (wh_databases_xact_end): a worker started sooner would wait for the
 * command's lock on the database, or connect to a database being dropped.
 */
void
wh_hold_databases(Node *stmt)
{
	Oid			oids[2];
	WhDatabase *db;
	pid_t		pids[WH_MAX_WORKERS_PER_DATABASE] = {0};
	TimestampTz deadline;

	if (wh_shared == NULL || databases_to_hold(stmt, oids) == 0 || nheld >= lengthof(held_databases))
		return;
	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	db = wh_database_entry(oids[0]);
	if (db != NULL)
	{
		db->held++;
		held_databases[nheld++] = oids[0];
		for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
			pids[k] = db->workers[k].pid;
	}
	LWLockRelease(wh_shared->lock);
	if (db == NULL)
		return;
	for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
		if (pids[k] != 0)
			kill(pids[k], SIGTERM);
	/* each worker's exit clears its pid; the command then finds no session of ours */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HOLD_WAIT_MS);
	while (wh_running_workers(db) > 0 && GetCurrentTimestamp() < deadline)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* CREATE DATABASE ran: at commit, the launcher looks at the new database */
void
wh_database_created(const char *name)
{
	created_database = get_database_oid(name, true);
}

/*
 * The transaction ends (webhooks.c): the databases it held may have
 * workers again, and the launcher looks at the database it created.
 */
void
wh_databases_xact_end(bool commit)
{
	WhDatabase *db;

	if (wh_shared == NULL || (nheld == 0 && !OidIsValid(created_database)))
		return;
	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nheld; i++)
	{
		db = wh_database_entry(held_databases[i]);
		if (db != NULL && db->held > 0)
			db->held--;
	}
	if (commit && OidIsValid(created_database) && (db = entry_for(created_database)) != NULL)
		db->wanted = true;
	LWLockRelease(wh_shared->lock);
	nheld = 0;
	created_database = InvalidOid;
	wh_wake_launcher();
}

/* ---------------------------------------------------------------------
 * the launcher
 * ---------------------------------------------------------------------
 */

/* at start: every database a worker may serve wants a look */
static void
scan_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);
		WhDatabase *db;

		if (!connectable(d))
			continue;
		db = entry_for(d->oid);
		if (db == NULL)
		{
			ereport(LOG,
					(errmsg("webhooks launcher: no entry left for database \"%s\"", NameStr(d->datname)),
					 errdetail("The library serves at most max_worker_processes (%d) databases.",
							   max_worker_processes)));
			continue;
		}
		db->excluded = !wh_database_allowed(NameStr(d->datname));
		db->wanted = !db->excluded;
	}
	LWLockRelease(wh_shared->lock);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
}

/*
 * Start worker k of entry i: a database gone is forgotten, one that may not
 * be served is ruled out, else the worker is registered (or, with no slot
 * free, the database is logged once and tried again a second later).
 */
static void
start_worker(int i, int k)
{
	WhDatabase *db = &wh_shared->databases[i];
	Oid			dboid = db->dboid;
	bool		exists;
	bool		ok;
	char	   *name;

	StartTransactionCommand();
	ok = database_servable(dboid, &exists);
	name = exists ? get_database_name(dboid) : NULL;
	name = name ? MemoryContextStrdup(TopMemoryContext, name) : NULL;
	CommitTransactionCommand();

	LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
	if (db->dboid != dboid || db->workers[k].pid != 0 || db->held > 0)
		ok = false;
	else if (!exists)
		db->dboid = InvalidOid;
	else if (!ok)
	{
		db->excluded = true;
		db->wanted = false;
	}
	LWLockRelease(wh_shared->lock);

	if (ok)
	{
		if (register_worker(dboid, k, MyProcPid, &HANDLE(i, k), false))
		{
			no_slot_logged[i] = false;
			LWLockAcquire(wh_shared->lock, LW_EXCLUSIVE);
			if (db->dboid == dboid && db->workers[k].pid == 0)
				db->workers[k].starting_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), START_WAIT_MS);
			LWLockRelease(wh_shared->lock);
		}
		else
		{
			HANDLE(i, k) = NULL;
			if (!no_slot_logged[i])
				ereport(LOG,
						(errmsg("webhooks launcher: no delivery worker for database \"%s\": "
								"all max_worker_processes (%d) background worker slots are in use",
								name, max_worker_processes),
						 errhint("Its events are queued; a worker starts when a slot is free.")));
			no_slot_logged[i] = true;
			db->start_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RESTART_DELAY_MS);
		}
	}
	if (name)
		pfree(name);
}

/*
 * One pass over the entries: start the workers missing (the first of a
 * database that wants them; the others, up to webhooks.workers_per_database,
 * once the first serves the extension); the time of the next pass.
 */
static long
launch_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = 60 * 1000L;

	for (int i = 0; i < wh_shared->ndatabases; i++)
	{
		WhDatabase *db = &wh_shared->databases[i];

		for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
		{
			WhWorkerSlot *w = &db->workers[k];
			pid_t		pid;

			if (HANDLE(i, k) != NULL)
			{
				BgwHandleStatus st = GetBackgroundWorkerPid(HANDLE(i, k), &pid);

				if (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED)
					continue;
				pfree(HANDLE(i, k));
				HANDLE(i, k) = NULL;
				/* stopped: not again at once */
				db->start_after = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
			}
			if (k >= wh_workers_per_database || (k > 0 && !db->serving))
				continue;
			if (!OidIsValid(db->dboid) || !db->wanted || db->excluded || db->held > 0 || w->pid != 0)
				continue;
			/* a start under way (or just failed): look again when it is due */
			if (now < Max(db->start_after, w->starting_until))
			{
				timeout = Min(timeout, (long) ((Max(db->start_after, w->starting_until) - now) / 1000) + 1);
				continue;
			}
			start_worker(i, k);
			if (HANDLE(i, k) == NULL && db->wanted && !db->excluded)
				timeout = Min(timeout, RESTART_DELAY_MS);
		}
	}
	return timeout;
}

static void
launcher_shmem_exit(int code, Datum arg)
{
	if (wh_shared && wh_shared->launcher_pid == MyProcPid)
	{
		wh_shared->launcher_procno = -1;
		wh_shared->launcher_pid = 0;
	}
}

/* the launcher, registered by _PG_init when the library is preloaded */
void
wh_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "webhooks");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "webhooks_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "webhooks launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "webhooks launcher");
	RegisterBackgroundWorker(&worker);
}

/* the launcher's entry point (bgw_function_name) */
void
webhooks_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(*handles) * wh_shared->ndatabases * WH_MAX_WORKERS_PER_DATABASE);
	no_slot_logged = MemoryContextAllocZero(TopMemoryContext, sizeof(bool) * wh_shared->ndatabases);
	wh_shared->launcher_pid = MyProcPid;
	wh_shared->launcher_procno = wh_my_procno();
	before_shmem_exit(launcher_shmem_exit, (Datum) 0);

	ereport(LOG, (errmsg("webhooks launcher started")));
	scan_databases();
	for (;;)
	{
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		timeout = launch_pass();
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ---------------------------------------------------------------------
 * webhooks.workers()
 * ---------------------------------------------------------------------
 */

/*
 * The delivery workers of every database, from shared memory: database,
 * the worker's number in it, pid, requests in flight, last claim, and how
 * many commits woke it.
 */
PG_FUNCTION_INFO_V1(webhooks_workers);
Datum
webhooks_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	typedef struct
	{
		Oid			dboid;
		int			worker;
		pid_t		pid;
		int			in_flight;
		TimestampTz last_claim_at;
		int64		commit_wakeups;
	} Row;
	Row		   *rows;
	int			n = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (wh_shared == NULL)
		PG_RETURN_VOID();
	rows = palloc(sizeof(Row) * wh_shared->ndatabases * WH_MAX_WORKERS_PER_DATABASE);
	LWLockAcquire(wh_shared->lock, LW_SHARED);
	for (int i = 0; i < wh_shared->ndatabases; i++)
	{
		WhDatabase *db = &wh_shared->databases[i];

		if (!OidIsValid(db->dboid))
			continue;
		for (int k = 0; k < WH_MAX_WORKERS_PER_DATABASE; k++)
			if (db->workers[k].pid != 0)
			{
				rows[n].dboid = db->dboid;
				rows[n].worker = k;
				rows[n].pid = db->workers[k].pid;
				rows[n].in_flight = db->workers[k].in_flight;
				rows[n].last_claim_at = db->workers[k].last_claim_at;
				rows[n].commit_wakeups = (int64) pg_atomic_read_u64(&db->workers[k].commit_wakeups);
				n++;
			}
	}
	LWLockRelease(wh_shared->lock);

	for (int i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false};
		char	   *name = get_database_name(rows[i].dboid);
		NameData	dbname;

		if (name == NULL)
			continue;			/* dropped meanwhile */
		namestrcpy(&dbname, name);
		values[0] = NameGetDatum(&dbname);
		values[1] = Int32GetDatum(rows[i].worker);
		values[2] = Int32GetDatum((int32) rows[i].pid);
		values[3] = Int32GetDatum(rows[i].in_flight);
		values[4] = TimestampTzGetDatum(rows[i].last_claim_at);
		nulls[4] = rows[i].last_claim_at == 0;
		values[5] = Int64GetDatum(rows[i].commit_wakeups);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
