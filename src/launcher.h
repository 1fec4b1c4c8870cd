/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher that starts a delivery worker per database (launcher.c),
 *	  and what sessions tell it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_LAUNCHER_H
#define WEBHOOKS_LAUNCHER_H

#include "fmgr.h"
#include "nodes/nodes.h"

#include "webhooks.h"

extern void wh_register_launcher(void);
extern void wh_wake_launcher(void);
PGDLLEXPORT void webhooks_launcher_main(Datum main_arg);

extern WhDatabase *wh_database_entry(Oid dboid);
extern int	wh_running_workers(WhDatabase *db);
extern bool wh_database_allowed(const char *name);
extern void wh_request_worker(void);
extern void wh_start_worker_for_session(void);
extern void wh_hold_databases(Node *stmt);
extern void wh_database_created(const char *name);
extern void wh_databases_xact_end(bool commit);

#endif							/* WEBHOOKS_LAUNCHER_H */
