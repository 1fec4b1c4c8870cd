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
#include "executor/executor.h"
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
 * The id of the active webhook for an event type, or 0: the row the
 * partial unique index webhooks_one_active_per_event_type holds (at most
 * one), seen with the statement's snapshot.
 */
int64
wh_queue_active_webhook(const char *event_type)
{
	Oid			nsp = webhooks_nsp();
	Relation	rel = table_open(get_relname_relid("webhooks", nsp), AccessShareLock);
	Oid			indexid = get_relname_relid("webhooks_one_active_per_event_type", nsp);
	AttrNumber	att_id = column_number(rel, "id");
	AttrNumber	att_active = column_number(rel, "is_active");
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int64		id = 0;

	ScanKeyInit(&key, column_number(rel, "event_type"), BTEqualStrategyNumber,
				F_TEXTEQ, CStringGetTextDatum(event_type));
	scan = systable_beginscan(rel, indexid, OidIsValid(indexid), reading_snapshot(), 1, &key);
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
	table_close(rel, NoLock);
	return id;
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
insert_plan_invalidate(Datum arg, Oid relid)
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
		CacheRegisterRelcacheCallback(insert_plan_invalidate, (Datum) 0);
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
