/*-------------------------------------------------------------------------
 *
 * unrouted.h
 *	  Counts of the events that found no active webhook (unrouted.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_UNROUTED_H
#define WEBHOOKS_UNROUTED_H

#include "payload.h"

extern Size wh_unrouted_shmem_size(void);
extern void wh_unrouted_shmem_init(void);
extern void wh_count_unrouted(const WhEventType *et, int64 n);
extern void wh_unrouted_subxact_end(bool committed);
extern void wh_unrouted_xact_end(bool committed);

#endif							/* WEBHOOKS_UNROUTED_H */
