/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background worker that delivers a database's queue (worker.c),
 *	  started by the launcher (launcher.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_WORKER_H
#define WEBHOOKS_WORKER_H

#include "fmgr.h"

PGDLLEXPORT void webhooks_worker_main(Datum main_arg);

#endif							/* WEBHOOKS_WORKER_H */
