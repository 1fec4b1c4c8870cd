/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background worker that delivers the queue (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_WORKER_H
#define WEBHOOKS_WORKER_H

#include "fmgr.h"

extern void wh_register_worker(void);
PGDLLEXPORT void webhooks_worker_main(Datum main_arg);

#endif							/* WEBHOOKS_WORKER_H */
