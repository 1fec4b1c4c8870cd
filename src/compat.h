/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between the PostgreSQL versions the extension
 *	  supports (15, 16, 17 and 18), in one place.
 *
 * This is the only file that tests PG_VERSION_NUM.  Each difference is a
 * small inline function or macro with one name for every version; the .c
 * files call that name.  When a version stops being supported, delete its
 * branches here and nothing else changes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_COMPAT_H
#define WEBHOOKS_COMPAT_H

#include "postgres.h"

#include "common/base64.h"
#include "common/jsonapi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"

#if PG_VERSION_NUM < 150000
#error "webhooks needs PostgreSQL 15 or later"
#endif

/*
 * The module magic block.  18 can also record the library's name and
 * version (shown by pg_get_loaded_modules()).
 */
#if PG_VERSION_NUM >= 180000
#define WH_PG_MODULE_MAGIC \
	PG_MODULE_MAGIC_EXT(.name = "webhooks", .version = WEBHOOKS_VERSION)
#else
#define WH_PG_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/*
 * A wait event set.  Up to 16 it is allocated in a memory context; since 17
 * it takes a resource owner instead and lives in TopMemoryContext.  Either
 * way the caller frees it with FreeWaitEventSet(), so it is not tied to a
 * resource owner (NULL).
 */
static inline WaitEventSet *
wh_create_wait_event_set(MemoryContext cxt, int nevents)
{
#if PG_VERSION_NUM >= 170000
	(void) cxt;
	return CreateWaitEventSet(NULL, nevents);
#else
	return CreateWaitEventSet(cxt, nevents);
#endif
}

/* This backend's local transaction id: PGPROC.lxid moved into vxid in 17. */
static inline LocalTransactionId
wh_my_lxid(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProc->vxid.lxid;
#else
	return MyProc->lxid;
#endif
}

/*
 * This backend's index in ProcGlobal->allProcs: PGPROC.pgprocno is gone in
 * 17, where it is MyProcNumber.
 */
static inline int
wh_my_procno(void)
{
#if PG_VERSION_NUM >= 170000
	return (int) MyProcNumber;
#else
	return MyProc->pgprocno;
#endif
}

/*
 * A JSON lexer over a string of known length: since 17 the first argument
 * is a context to initialise (NULL: allocate one).
 */
static inline JsonLexContext *
wh_make_json_lex(const char *json, size_t len, int encoding, bool need_escapes)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, json, len, encoding, need_escapes);
#else
	return makeJsonLexContextCstringLen(unconstify(char *, json), (int) len,
										encoding, need_escapes);
#endif
}

/*
 * The "extra" of a GUC check hook: up to 15 PostgreSQL releases it with
 * free(); since 16 with guc_free(), which is pfree() in GUC's own memory
 * context, so there it must come from guc_malloc().  NULL when out of
 * memory (the check hook then fails).
 */
static inline void *
wh_guc_malloc(size_t size)
{
#if PG_VERSION_NUM >= 160000
	return guc_malloc(LOG, size);
#else
	return malloc(size);
#endif
}

static inline void
wh_guc_free(void *ptr)
{
#if PG_VERSION_NUM >= 160000
	guc_free(ptr);
#else
	free(ptr);
#endif
}

/* base64: 18 takes the binary side as uint8 rather than char */
static inline int
wh_b64_encode(const void *src, int len, char *dst, int dstlen)
{
#if PG_VERSION_NUM >= 180000
	return pg_b64_encode((const uint8 *) src, len, dst, dstlen);
#else
	return pg_b64_encode((const char *) src, len, dst, dstlen);
#endif
}

static inline int
wh_b64_decode(const char *src, int len, void *dst, int dstlen)
{
#if PG_VERSION_NUM >= 180000
	return pg_b64_decode(src, len, (uint8 *) dst, dstlen);
#else
	return pg_b64_decode(src, len, (char *) dst, dstlen);
#endif
}

/*
 * A set-returning function's tuplestore: InitMaterializedSRF() is the
 * name since 15.2 (15.0 and 15.1 call it SetSingleFuncCall()).
 */
#if PG_VERSION_NUM < 150002
#define InitMaterializedSRF(fcinfo, flags) SetSingleFuncCall(fcinfo, flags)
#endif

/* every setting, to walk them (16 returns the count with the array) */
static inline struct config_generic **
wh_guc_variables(int *count)
{
#if PG_VERSION_NUM >= 160000
	return get_guc_variables(count);
#else
	*count = GetNumConfigOptions();
	return get_guc_variables();
#endif
}

/*
 * A result relation's CHECK constraint expressions, which ExecConstraints
 * builds on first use unless they are there already (queue.c fills them
 * from its cache, as TimescaleDB does for chunks); 18 renamed the field and
 * added constraints that are not enforced (NULL entries) and virtual
 * generated columns.
 */
#if PG_VERSION_NUM >= 180000
#define WH_RRI_CHECK_EXPRS(rri) ((rri)->ri_CheckConstraintExprs)
#define wh_check_enforced(check) ((check)->ccenforced)
#define wh_has_generated(constr) ((constr)->has_generated_stored || (constr)->has_generated_virtual)
#else
#define WH_RRI_CHECK_EXPRS(rri) ((rri)->ri_ConstraintExprs)
#define wh_check_enforced(check) ((void) (check), true)
#define wh_has_generated(constr) ((constr)->has_generated_stored)
#endif

#endif							/* WEBHOOKS_COMPAT_H */
