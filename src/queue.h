/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  The enqueue path's table accesses without SQL (queue.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_QUEUE_H
#define WEBHOOKS_QUEUE_H

extern int64 wh_queue_active_webhook(const char *event_type);
extern bool wh_queue_insert(int64 webhook_id, const char *event_type, const char *body, int64 *id);

#endif							/* WEBHOOKS_QUEUE_H */
