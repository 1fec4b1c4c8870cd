/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Differences between the supported PostgreSQL versions, in one place.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_COMPAT_H
#define WEBHOOKS_COMPAT_H

#include "postgres.h"

#include "utils/guc.h"
#include "utils/guc_tables.h"

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

#endif							/* WEBHOOKS_COMPAT_H */
