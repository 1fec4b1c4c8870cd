/*-------------------------------------------------------------------------
 *
 * unrouted.c
 *	  Counting the events that found no active webhook.
 *
 * An event enqueued while no webhook is active for its type is not
 * delivered (that is the specification), but it must not vanish without a
 * trace: webhooks.unrouted_events shows, per event type, how many there were
 * and when the last one was.
 *
 * Counting must not slow down or serialise the applications that produce
 * events, so it costs no SQL and no shared row:
 *
 *	1. While a transaction runs, emit() and the trigger add to counters in
 *	   backend-local memory, one set per subtransaction nesting level.  A
 *	   released savepoint hands its counts to its parent; a rolled-back one
 *	   drops them, and so does a rolled-back transaction: its events were
 *	   never events.
 *	2. At commit (webhooks.c's transaction callback) the counts are added
 *	   to shared memory: atomic counters per (database, event type), with
 *	   the time of the last commit that had any.  Slots for the first
 *	   WH_UNROUTED_DB_SLOTS databases; the others share one overflow slot,
 *	   which is reported in the server log and by the view, not attributed.
 *	3. Once a minute the worker's maintenance pass folds the shared counts
 *	   of its database into webhooks.unrouted_event_totals, a durable table
 *	   (webhooks._fold_unrouted_events()), so a restart loses at most the
 *	   last minute.  The shared counters only ever grow; the table remembers,
 *	   per event type, which shared-memory lifetime (counting_since, set when
 *	   shared memory is initialised) and which counter value it has folded.
 *	   The view adds the part not folded yet, so it is exact whenever the
 *	   worker folds, and folding twice adds nothing.
 *
 * A prepared transaction's counts are published at PREPARE TRANSACTION:
 * nothing of the backend survives until COMMIT PREPARED, which usually
 * follows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "compat.h"
#include "unrouted.h"

/* databases with a slot of their own; the rest share the overflow slot */
#define WH_UNROUTED_DB_SLOTS 64

typedef struct WhUnroutedSlot
{
	pg_atomic_uint32 dboid;		/* InvalidOid while free; set once */
	pg_atomic_uint64 events[WH_N_EVENT_TYPES];
	pg_atomic_uint64 last_at[WH_N_EVENT_TYPES]; /* TimestampTz; 0 = never */
} WhUnroutedSlot;

typedef struct WhUnroutedShared
{
	TimestampTz counting_since; /* when this shared memory was initialised */
	pg_atomic_uint32 overflow_logged;
	WhUnroutedSlot slots[WH_UNROUTED_DB_SLOTS + 1]; /* the last: overflow */
} WhUnroutedShared;

#define OVERFLOW_SLOT WH_UNROUTED_DB_SLOTS

static WhUnroutedShared *unrouted = NULL;

/* this backend's slot (a backend serves one database all its life) */
static WhUnroutedSlot *my_slot = NULL;

/* counts of the current transaction, one entry per nesting level in use */
typedef struct PendingLevel
{
	int			nestlevel;
	uint64		events[WH_N_EVENT_TYPES];
} PendingLevel;

static PendingLevel *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;

Size
wh_unrouted_shmem_size(void)
{
	return MAXALIGN(sizeof(WhUnroutedShared));
}

/* Called from the shared memory startup hook, under AddinShmemInitLock. */
void
wh_unrouted_shmem_init(void)
{
	bool		found;
	int			i,
				j;

	unrouted = ShmemInitStruct("webhooks unrouted events", sizeof(WhUnroutedShared), &found);
	if (found)
		return;
	unrouted->counting_since = GetCurrentTimestamp();
	pg_atomic_init_u32(&unrouted->overflow_logged, 0);
	for (i = 0; i <= WH_UNROUTED_DB_SLOTS; i++)
	{
		pg_atomic_init_u32(&unrouted->slots[i].dboid, InvalidOid);
		for (j = 0; j < WH_N_EVENT_TYPES; j++)
		{
			pg_atomic_init_u64(&unrouted->slots[i].events[j], 0);
			pg_atomic_init_u64(&unrouted->slots[i].last_at[j], 0);
		}
	}
}

/*
 * The slot of this database, or NULL when it has none.  With claim, a free
 * slot is taken (slots are taken in order and never given back, so two
 * backends of one database always agree on the same one), and when none is
 * left the overflow slot is returned.
 */
static WhUnroutedSlot *
database_slot(bool claim)
{
	int			i;

	for (i = 0; i < WH_UNROUTED_DB_SLOTS; i++)
	{
		WhUnroutedSlot *slot = &unrouted->slots[i];
		uint32		oid = pg_atomic_read_u32(&slot->dboid);

		if (oid == InvalidOid && claim &&
			pg_atomic_compare_exchange_u32(&slot->dboid, &oid, MyDatabaseId))
			return slot;
		/* on a lost race, oid now holds the winner's database */
		if (oid == MyDatabaseId)
			return slot;
		if (oid == InvalidOid)
			return NULL;
	}
	if (!claim)
		return NULL;
	if (pg_atomic_exchange_u32(&unrouted->overflow_logged, 1) == 0)
		ereport(LOG,
				(errmsg("webhooks: more than %d databases counted events that found no active webhook",
						WH_UNROUTED_DB_SLOTS),
				 errdetail("Those of database OID %u and of later databases are pooled and not shown by webhooks.unrouted_events.",
						   MyDatabaseId)));
	return &unrouted->slots[OVERFLOW_SLOT];
}

/*
 * Count n events of event type et that found no active webhook, for the
 * current (sub)transaction.  Backend-local: no SQL, no lock, no shared write.
 */
void
wh_count_unrouted(const WhEventType *et, int64 n)
{
	int			level = GetCurrentTransactionNestLevel();
	PendingLevel *top;

	if (unrouted == NULL || n <= 0)
		return;					/* not preloaded: there is nowhere to publish */
	if (npending == 0 || pending[npending - 1].nestlevel < level)
	{
		if (npending == maxpending)
		{
			int			newmax = Max(8, maxpending * 2);

			if (pending == NULL)
				pending = MemoryContextAlloc(TopMemoryContext, newmax * sizeof(PendingLevel));
			else
				pending = repalloc(pending, newmax * sizeof(PendingLevel));
			maxpending = newmax;
		}
		top = &pending[npending++];
		memset(top, 0, sizeof(PendingLevel));
		top->nestlevel = level;
	}
	top = &pending[npending - 1];
	Assert(top->nestlevel == level);
	top->events[wh_event_type_index(et)] += (uint64) n;
}

/* A subtransaction ends: a release hands its counts up, a rollback drops them. */
void
wh_unrouted_subxact_end(bool committed)
{
	int			level;
	PendingLevel *top;

	if (npending == 0)
		return;
	level = GetCurrentTransactionNestLevel();	/* the ending one's */
	top = &pending[npending - 1];
	if (top->nestlevel != level)
		return;					/* it counted nothing */
	if (!committed)
		npending--;
	else
	{
		if (npending >= 2 && pending[npending - 2].nestlevel == level - 1)
		{
			PendingLevel *parent = &pending[npending - 2];
			int			i;

			for (i = 0; i < WH_N_EVENT_TYPES; i++)
				parent->events[i] += top->events[i];
			npending--;
		}
		else
			top->nestlevel = level - 1;
	}
}

/*
 * The transaction ends.  On commit (or prepare) its counts go to shared
 * memory; otherwise they are forgotten.  Nothing here can fail: this runs
 * after the commit record.
 */
void
wh_unrouted_xact_end(bool committed)
{
	uint64		events[WH_N_EVENT_TYPES] = {0};
	uint64		now;
	bool		any = false;
	int			i,
				j;

	if (committed)
	{
		for (i = 0; i < npending; i++)
			for (j = 0; j < WH_N_EVENT_TYPES; j++)
			{
				events[j] += pending[i].events[j];
				any |= pending[i].events[j] > 0;
			}
	}
	npending = 0;
	if (!any)
		return;

	if (my_slot == NULL)
		my_slot = database_slot(true);
	now = (uint64) GetCurrentTimestamp();
	for (j = 0; j < WH_N_EVENT_TYPES; j++)
	{
		uint64		last;

		if (events[j] == 0)
			continue;
		/* the time first, then the count: whoever sees the count sees the time */
		last = pg_atomic_read_u64(&my_slot->last_at[j]);
		while ((int64) last < (int64) now &&
			   !pg_atomic_compare_exchange_u64(&my_slot->last_at[j], &last, now))
			;
		pg_atomic_fetch_add_u64(&my_slot->events[j], events[j]);
	}
}

/*
 * webhooks._unrouted_shared(): this database's shared counters, one row per
 * event type: event_type, events (since counting_since), last_dropped_at,
 * counting_since.  The view webhooks.unrouted_events reads it.
 */
PG_FUNCTION_INFO_V1(webhooks_unrouted_shared);
Datum
webhooks_unrouted_shared(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WhUnroutedSlot *slot = NULL;
	int			j;

	InitMaterializedSRF(fcinfo, 0);
	if (unrouted != NULL)
	{
		slot = my_slot ? my_slot : database_slot(false);
		if (slot == NULL && pg_atomic_read_u32(&unrouted->overflow_logged) != 0)
			ereport(WARNING,
					(errmsg("events that found no active webhook in this database may not be counted"),
					 errdetail("More than %d databases counted such events since the server started; the later ones share one pool.",
							   WH_UNROUTED_DB_SLOTS)));
	}
	for (j = 0; j < WH_N_EVENT_TYPES; j++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		uint64		events;
		uint64		last;

		/* the count before the time, the reverse of the writer's order */
		events = slot ? pg_atomic_read_u64(&slot->events[j]) : 0;
		last = slot ? pg_atomic_read_u64(&slot->last_at[j]) : 0;
		values[0] = CStringGetTextDatum(wh_event_type_at(j)->name);
		values[1] = Int64GetDatum((int64) events);
		values[2] = TimestampTzGetDatum((TimestampTz) last);
		nulls[2] = (last == 0);
		values[3] = TimestampTzGetDatum(unrouted ? unrouted->counting_since : 0);
		nulls[3] = (unrouted == NULL);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
