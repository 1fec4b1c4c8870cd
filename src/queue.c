/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The enqueue path's two table accesses without SQL: which webhook is
 *	  active for an event type, and the INSERT of one delivery row.
 *
 * A single-row INSERT into an application table with the row trigger used
 * to run two SPI statements per transaction (the active-webhook SELECT and
 * the queue INSERT); perf showed them at about a third of the backend's CPU
 * (executor start-up for a one-row plan, re-reading the queue's CHECK
 * constraints for every new executor state, the plan cache's checks, and
 * the search_path switch SPI needs).  The same two accesses done here the
 * way logical replication's apply worker writes rows
 * (ExecSimpleRelationInsert) cost a fraction of that and keep every rule
 * of the table: column defaults (the identity, the webhook-id), NOT NULL
 * and CHECK constraints (a constraint an administrator adds too), and the
 * indexes.  A table with triggers, which that routine would fire without
 * the surrounding trigger machinery, or with row-level security or
 * generated columns takes the SQL path instead (wh_queue_insert returns
 * false).
 *
 * No name is resolved through search_path: the schema and the relations
 * are looked up by name in schema webhooks, the defaults are the stored
 * expressions (object ids, not names).  Both run as whoever the caller
 * switched to (the function's owner), like the SQL they replace; they do
 * not check privileges, as an INSERT by the owner would not fail one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "queue.h"

/* the extension's schema, where its relations are looked up by name */
static Oid
webhooks_nsp(void)
{
	return get_namespace_oid("webhooks", false);
}

/* a column's number by name; an error if the table has no such column */
static AttrNumber
column_number(Relation rel, const char *name)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	elog(ERROR, "column \"%s\" of relation \"%s\" does not exist",
		 name, RelationGetRelationName(rel));
	return InvalidAttrNumber;	/* keep the compiler quiet */
}

/* the snapshot the statement reads with, as SPI's read-only SELECT did */
static Snapshot
reading_snapshot(void)
{
	return ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
}

/*
 * Routes kept across transactions.  A single-row INSERT per transaction
 * used to look the active webhook up for every transaction (the index scan
 * on webhooks.webhooks was about 3 % of such a transaction's CPU).  Since
 * 1.6 a statement trigger on webhooks.webhooks (webhooks_routes_changed,
 * ENABLE ALWAYS) sends a relcache invalidation of that table whenever a
 * statement writes to it, so a route read once stays valid in every backend
 * until its invalidation arrives, the way PostgreSQL's catalog caches stay
 * valid: the invalidation is processed at the start of the next transaction
 * (or the next lock taken), and locally at the end of the command that
 * changed the table, or at its rollback.  Such a route is read with a fresh
 * snapshot, as catalog lookups are (the latest committed webhooks, and this
 * transaction's own earlier changes).  Without that trigger (a database
 * still on 1.5, or the trigger disabled) nothing is kept across commands:
 * the statement's snapshot decides, as before.
 */
#define WH_ROUTES_MAX 32
#define WH_ROUTE_NAME_LEN 64

typedef struct Route
{
	char		event_type[WH_ROUTE_NAME_LEN];
	int64		webhook_id;		/* 0: no active webhook */
} Route;

static Route routes[WH_ROUTES_MAX];
static int	nroutes = 0;
static Oid	routes_relid = InvalidOid;	/* webhooks.webhooks, while routes are kept */
static uint64 routes_invalidations = 0;

static void insert_plan_forget(Oid relid);

/* an invalidation of webhooks.webhooks, of webhooks.deliveries, or of every relation */
static void
queue_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == routes_relid)
	{
		nroutes = 0;
		routes_relid = InvalidOid;
		routes_invalidations++;
	}
	insert_plan_forget(relid);
}

static void
register_relcache_callback(void)
{
	static bool registered = false;

	if (!registered)
	{
		CacheRegisterRelcacheCallback(queue_relcache_callback, (Datum) 0);
		registered = true;
	}
}

/* whether rel (webhooks.webhooks) has the enabled trigger that invalidates kept routes */
static bool
routes_can_be_kept(Relation rel)
{
	TriggerDesc *trigdesc = rel->trigdesc;

	if (trigdesc == NULL)
		return false;
	for (int i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (strcmp(t->tgname, "webhooks_routes_changed") == 0)
			return t->tgenabled == TRIGGER_FIRES_ALWAYS &&
				TRIGGER_FOR_INSERT(t->tgtype) && TRIGGER_FOR_UPDATE(t->tgtype) &&
				TRIGGER_FOR_DELETE(t->tgtype) && TRIGGER_FOR_TRUNCATE(t->tgtype);
	}
	return false;
}

/* the route kept for an event type, or NULL */
static Route *
kept_route(const char *event_type)
{
	for (int i = 0; i < nroutes; i++)
		if (strcmp(routes[i].event_type, event_type) == 0)
			return &routes[i];
	return NULL;
}

/* webhooks._route_kept(event_type): whether this backend keeps its route (tests) */
PG_FUNCTION_INFO_V1(webhooks_route_kept);
Datum
webhooks_route_kept(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(kept_route(text_to_cstring(PG_GETARG_TEXT_PP(0))) != NULL);
}

/*
 * The id of the active webhook for an event type, or 0: the row the
 * partial unique index webhooks_one_active_per_event_type holds (at most
 * one); a kept route when there is one (see above).
 */
int64
wh_queue_active_webhook(const char *event_type)
{
	Oid			nsp;
	Relation	rel;
	Oid			indexid;
	AttrNumber	att_id;
	AttrNumber	att_active;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int64		id = 0;
	bool		keep;
	uint64		invalidations;
	Snapshot	snapshot;
	Route	   *kept = kept_route(event_type);

	if (kept != NULL)
		return kept->webhook_id;

	register_relcache_callback();
	nsp = webhooks_nsp();
	/* (the lock makes this backend read the invalidations sent so far) */
	rel = table_open(get_relname_relid("webhooks", nsp), AccessShareLock);
	indexid = get_relname_relid("webhooks_one_active_per_event_type", nsp);
	att_id = column_number(rel, "id");
	att_active = column_number(rel, "is_active");
	keep = routes_can_be_kept(rel) && strlen(event_type) < WH_ROUTE_NAME_LEN;
	/* an invalidation read while scanning (the index's lock) voids the answer for keeping */
	invalidations = routes_invalidations;
	snapshot = keep ? RegisterSnapshot(GetLatestSnapshot()) : reading_snapshot();

	ScanKeyInit(&key, column_number(rel, "event_type"), BTEqualStrategyNumber,
				F_TEXTEQ, CStringGetTextDatum(event_type));
	scan = systable_beginscan(rel, indexid, OidIsValid(indexid), snapshot, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		active = heap_getattr(tup, att_active, RelationGetDescr(rel), &isnull);

		if (!isnull && DatumGetBool(active))
		{
			id = DatumGetInt64(heap_getattr(tup, att_id, RelationGetDescr(rel), &isnull));
			break;
		}
	}
	systable_endscan(scan);
	if (keep)
	{
		UnregisterSnapshot(snapshot);
		if (routes_relid != RelationGetRelid(rel))
			nroutes = 0;
		if (invalidations == routes_invalidations && nroutes < WH_ROUTES_MAX)
		{
			strlcpy(routes[nroutes].event_type, event_type, WH_ROUTE_NAME_LEN);
			routes[nroutes].webhook_id = id;
			nroutes++;
			routes_relid = RelationGetRelid(rel);
		}
	}
	table_close(rel, NoLock);
	return id;
}

/* webhooks._routes_changed(): the statement trigger on webhooks.webhooks (see above) */
PG_FUNCTION_INFO_V1(webhooks_routes_changed);
Datum
webhooks_routes_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhooks._routes_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * What an INSERT of a delivery row needs from the queue table's definition,
 * planned once per backend: the stored default of every column the caller
 * does not supply (the identity's NEXTVAL, the webhook-id, the times) and
 * the CHECK constraints.  A new executor state has ExecConstraints parse
 * the constraints again and a new default expression looks up the identity
 * sequence in pg_depend: per single-row transaction those cost more than
 * the insert itself.  Any change to the table (ALTER TABLE, a constraint
 * added) invalidates it through the relcache.
 */
typedef struct InsertPlan
{
	bool		valid;
	Oid			relid;
	MemoryContext cxt;
	AttrNumber	att_id;
	AttrNumber	att_webhook;
	AttrNumber	att_type;
	AttrNumber	att_body;
	Expr	  **defaults;		/* per column; NULL: supplied, or none */
	int			ncheck;
	Expr	  **checks;			/* per CHECK constraint; NULL: not enforced */
} InsertPlan;

static InsertPlan insert_plan;

static void
insert_plan_forget(Oid relid)
{
	if (relid == InvalidOid || relid == insert_plan.relid)
		insert_plan.valid = false;
}

/* plan the defaults and constraints of rel (webhooks.deliveries) */
static void
insert_plan_build(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleConstr *constr = desc->constr;
	MemoryContext old;

	if (insert_plan.cxt == NULL)
	{
		insert_plan.cxt = AllocSetContextCreate(CacheMemoryContext, "webhooks queue insert",
												ALLOCSET_SMALL_SIZES);
		register_relcache_callback();
	}
	MemoryContextReset(insert_plan.cxt);
	/* an invalidation arriving while this runs makes the next call plan again */
	insert_plan.valid = true;
	insert_plan.relid = RelationGetRelid(rel);
	insert_plan.att_id = column_number(rel, "id");
	insert_plan.att_webhook = column_number(rel, "webhook_id");
	insert_plan.att_type = column_number(rel, "event_type");
	insert_plan.att_body = column_number(rel, "body");

	old = MemoryContextSwitchTo(insert_plan.cxt);
	insert_plan.defaults = palloc0(sizeof(Expr *) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Node	   *def;

		if (att->attisdropped || att->attnum == insert_plan.att_webhook ||
			att->attnum == insert_plan.att_type || att->attnum == insert_plan.att_body)
			continue;
		def = build_column_default(rel, att->attnum);
		if (def != NULL)
			insert_plan.defaults[i] = expression_planner((Expr *) def);
	}
	insert_plan.ncheck = constr != NULL ? constr->num_check : 0;
	insert_plan.checks = palloc0(sizeof(Expr *) * Max(insert_plan.ncheck, 1));
	for (int i = 0; i < insert_plan.ncheck; i++)
		if (wh_check_enforced(&constr->check[i]))
			insert_plan.checks[i] = expression_planner((Expr *) stringToNode(constr->check[i].ccbin));
	MemoryContextSwitchTo(old);
}

/*
 * Insert one pending delivery of body to the webhook into
 * webhooks.deliveries; every other column takes its default.  Sets *id to
 * the delivery's id and returns true, or returns false without doing
 * anything when the table has triggers, row-level security or generated
 * columns (the caller then uses SQL).
 */
bool
wh_queue_insert(int64 webhook_id, const char *event_type, const char *body, int64 *id)
{
	Relation	rel = table_open(get_relname_relid("deliveries", webhooks_nsp()), RowExclusiveLock);
	TupleDesc	desc = RelationGetDescr(rel);
	EState	   *estate;
	ExprContext *econtext;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	MemoryContext old;

	/* what ExecSimpleRelationInsert would not honour: the SQL INSERT does */
	if (rel->trigdesc != NULL || rel->rd_rel->relrowsecurity ||
		(desc->constr != NULL && wh_has_generated(desc->constr)))
	{
		table_close(rel, NoLock);
		return false;
	}
	if (!insert_plan.valid || insert_plan.relid != RelationGetRelid(rel))
		insert_plan_build(rel);

	estate = CreateExecutorState();
	econtext = GetPerTupleExprContext(estate);
	rri = makeNode(ResultRelInfo);
	/* not in a range table: like a trigger's target relation */
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(slot);

	/* the row's values and expression states live as long as the executor state */
	old = MemoryContextSwitchTo(estate->es_query_cxt);
	for (int i = 0; i < desc->natts; i++)
	{
		AttrNumber	attnum = TupleDescAttr(desc, i)->attnum;

		slot->tts_isnull[i] = false;
		if (attnum == insert_plan.att_webhook)
			slot->tts_values[i] = Int64GetDatum(webhook_id);
		else if (attnum == insert_plan.att_type)
			slot->tts_values[i] = CStringGetTextDatum(event_type);
		else if (attnum == insert_plan.att_body)
			slot->tts_values[i] = CStringGetTextDatum(body);
		else if (insert_plan.defaults[i] != NULL && IsA(insert_plan.defaults[i], Const))
		{
			/* 'pending', 0: no expression to run (the value lives in the plan's context) */
			slot->tts_values[i] = ((Const *) insert_plan.defaults[i])->constvalue;
			slot->tts_isnull[i] = ((Const *) insert_plan.defaults[i])->constisnull;
		}
		else if (insert_plan.defaults[i] != NULL)
			slot->tts_values[i] = ExecEvalExprSwitchContext(ExecInitExpr(insert_plan.defaults[i], NULL),
															econtext, &slot->tts_isnull[i]);
		else
			slot->tts_isnull[i] = true;
	}
	if (insert_plan.ncheck > 0)
	{
		ExprState **checks = palloc0(sizeof(ExprState *) * insert_plan.ncheck);

		for (int i = 0; i < insert_plan.ncheck; i++)
			if (insert_plan.checks[i] != NULL)
				checks[i] = ExecInitExpr(insert_plan.checks[i], NULL);
		WH_RRI_CHECK_EXPRS(rri) = checks;
	}
	MemoryContextSwitchTo(old);

	ExecStoreVirtualTuple(slot);
	ExecSimpleRelationInsert(rri, estate, slot);
	*id = DatumGetInt64(slot->tts_values[insert_plan.att_id - 1]);

	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	return true;
}
