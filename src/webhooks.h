/*-------------------------------------------------------------------------
 *
 * webhooks.h
 *	  What webhooks.c gives the other modules: the settings (GUCs), the
 *	  shared-memory state the worker publishes, and the commit-time
 *	  wake-up of the worker.
 *
 * Each module has a header of its own with only what the others call:
 *	webhooks.h	module init, settings, shared memory, commit wake-up
 *	url.h		URL / address validation (no PostgreSQL dependency)
 *	signing.h	Standard Webhooks secrets, signatures, webhook-ids
 *	payload.h	event types and payload rendering
 *	unrouted.h	counts of the events that found no active webhook
 *	http.h		the libcurl engine and the requests it sends
 *	validate.h	the rules on what a webhook sends, for every entry point
 *	worker.h	the background worker
 *	compat.h	differences between PostgreSQL versions
 * Only http.h (and its users) and url.c include curl/curl.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_H
#define WEBHOOKS_H

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/lwlock.h"

/* the extension version (schema) this library is written for */
#define WEBHOOKS_VERSION "1.6"
#define WEBHOOKS_USER_AGENT "webhooks/" WEBHOOKS_VERSION " (PostgreSQL extension)"

/* ---- settings ---- */
extern char *wh_database_name;
extern char *wh_databases;
extern int	wh_workers_per_database;
extern bool wh_enabled;
extern char *wh_ca_file;
extern char *wh_dns_overrides;
extern bool wh_allow_private_targets;
extern bool wh_http2;
extern char *wh_retry_schedule;
extern int	wh_connect_timeout_ms;
extern int	wh_request_timeout_ms;
extern int	wh_response_body_limit;
extern int	wh_max_concurrency;
extern int	wh_max_concurrency_per_webhook;
extern int	wh_batch_size;
extern int	wh_log_retention_s;
extern int	wh_max_payload_size;
extern int	wh_secret_grace_period_s;
extern int	wh_retry_after_max_s;

/* parsed webhooks.retry_schedule: delays in ms between attempts */
extern int	wh_retry_count;
extern int *wh_retry_delays_ms;

extern bool wh_loaded_at_preload;

extern char *wh_next_setting_item(char **rest);

/* ---- shared memory and wake-up ---- */

/* most delivery workers in one database (webhooks.workers_per_database) */
#define WH_MAX_WORKERS_PER_DATABASE 16

/* one delivery worker of a database */
typedef struct WhWorkerSlot
{
	pid_t		pid;			/* 0 when no worker runs */
	int			procno;			/* its pgprocno, -1 if none */
	TimestampTz starting_until; /* registered, not yet running */
	pg_atomic_uint32 wake_wanted;	/* it claims again when woken */
	pg_atomic_uint64 commit_wakeups;	/* commits that woke it (webhooks.workers()) */
	/* what webhooks.workers() shows, written by the worker alone */
	int			in_flight;
	TimestampTz last_claim_at;
} WhWorkerSlot;

/* webhooks whose requests in flight a database's workers count together */
#define WH_WEBHOOKS_PER_DATABASE 64

/* requests in flight to one webhook, over all the workers of its database */
typedef struct WhWebhookCount
{
	pg_atomic_uint64 webhook_id;	/* 0: free */
	pg_atomic_uint32 in_flight;
} WhWebhookCount;

/* a database the library knows of (launcher.c) */
typedef struct WhDatabase
{
	Oid			dboid;			/* InvalidOid: a free entry */
	bool		wanted;			/* workers should serve it */
	bool		excluded;		/* not in webhooks.databases, or not servable */
	int			held;			/* commands that need it without sessions */
	TimestampTz start_after;	/* the launcher starts no worker before */
	bool		serving;		/* a worker found the extension: start the others */
	pg_atomic_uint32 batches_pending;	/* a commit stored event batches */
	WhWorkerSlot workers[WH_MAX_WORKERS_PER_DATABASE];
	WhWebhookCount webhooks[WH_WEBHOOKS_PER_DATABASE];	/* taken under the lock */
} WhDatabase;

typedef struct WhSharedState
{
	LWLock	   *lock;			/* taking and changing entries */
	pid_t		launcher_pid;	/* 0 when the launcher does not run */
	int			launcher_procno;
	int			ndatabases;		/* max_worker_processes */
	WhDatabase	databases[FLEXIBLE_ARRAY_MEMBER];
} WhSharedState;

extern WhSharedState *wh_shared;

extern void wh_wake_worker_at_commit(void);
extern void wh_announce_at_commit(void);
extern void wh_batches_at_commit(void);
extern void wh_wake_worker_now(void);
extern void wh_wake_procno(int procno);

/* ---- SPI ---- */
/* a prepared statement kept for the backend's lifetime (SPI_keepplan) */
extern struct _SPI_plan *wh_keep_plan(const char *sql, int nargs, Oid *argtypes);

#endif							/* WEBHOOKS_H */
