/*-------------------------------------------------------------------------
 *
 * webhooks.h
 *	  Declarations shared by the C files of the webhooks extension.
 *
 * The extension is split by responsibility:
 *	webhooks.c	module init, settings (GUCs), shared memory, commit wake-up
 *	url.c		pure URL / address validation (no server dependency, fuzzed)
 *	signing.c	Standard Webhooks signatures and secrets
 *	http.c		libcurl engine shared by the worker and the connection test
 *	payload.c	event types, payload validation, emit() and the trigger
 *	unrouted.c	counts of the events that found no active webhook
 *	functions.c	other SQL-callable functions (connection test, helpers)
 *	worker.c	the background worker that delivers the queue
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_H
#define WEBHOOKS_H

#include "postgres.h"

#include <curl/curl.h>

#include "lib/ilist.h"
#include "port/atomics.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "compat.h"

/* the extension version (schema) this library is written for */
#define WEBHOOKS_VERSION "1.2"
#define WEBHOOKS_USER_AGENT "webhooks/" WEBHOOKS_VERSION " (PostgreSQL extension)"

/* SQLSTATE of a failed connection test (class WH: webhooks) */
#define ERRCODE_WEBHOOKS_CONNECTION_TEST_FAILED MAKE_SQLSTATE('W','H','0','0','1')

/* ---- settings (webhooks.c) ---- */
extern char *wh_database_name;
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

/* ---- shared memory and wake-up (webhooks.c) ---- */
typedef struct WhSharedState
{
	pid_t		worker_pid;		/* 0 when no worker runs */
	int			worker_procno;	/* pgprocno of the worker, -1 if none */
	pg_atomic_uint64 wakeups;	/* commits that woke the worker */
	pg_atomic_uint32 batches_pending;	/* a commit stored event batches */
} WhSharedState;

extern WhSharedState *wh_shared;

extern void wh_wake_worker_at_commit(void);
extern void wh_batches_at_commit(void);
extern void wh_wake_worker_now(void);

/* ---- signing.c ---- */
#define WH_SECRET_BYTES 32
extern char *wh_generate_secret(void);
extern bool wh_secret_valid(const char *secret, char **why);
extern char *wh_sign(const char *secret, const char *msg_id, int64 timestamp,
					 const char *body, size_t body_len);
/* "msg_" + 32 hex digits of a UUIDv7 */
#define WH_MSG_ID_LEN 36
extern void wh_new_msg_id(char *out);
extern bool wh_msg_id_offset(const char *base, int64 offset, char *out);
extern const char *wh_msg_id_problem(const char *msg_id);

/* ---- payload.c ---- */
typedef enum WhFieldType
{
	WH_FIELD_INTEGER,
	WH_FIELD_STRING
} WhFieldType;

typedef struct WhField
{
	const char *name;			/* JSON key, e.g. messageId */
	const char *column;			/* table column, e.g. message_id */
	WhFieldType type;
} WhField;

#define WH_MAX_FIELDS 4

typedef struct WhEventType
{
	const char *name;			/* EmailOpens */
	const char *label;			/* Email — Open */
	const char *description;
	int			nfields;
	WhField		fields[WH_MAX_FIELDS];
	int64		example[WH_MAX_FIELDS]; /* example integer values (spec) */
} WhEventType;

/* the specification's event types, in a fixed order (payload.c) */
#define WH_N_EVENT_TYPES 9

extern const WhEventType *wh_find_event_type(const char *name);
extern const WhEventType *wh_event_type_at(int index);
extern int	wh_event_type_index(const WhEventType *et);
extern void wh_check_event_type(const char *name);
extern char *wh_build_body(const WhEventType *et, Jsonb *payload);
extern char *wh_dummy_body(const WhEventType *et);
extern void wh_format_event_date(StringInfo buf, TimestampTz ts);

/* ---- unrouted.c: events that found no active webhook ---- */
extern Size wh_unrouted_shmem_size(void);
extern void wh_unrouted_shmem_init(void);
extern void wh_count_unrouted(const WhEventType *et, int64 n);
extern void wh_unrouted_subxact_end(bool committed);
extern void wh_unrouted_xact_end(bool committed);

/* ---- http.c ---- */
typedef struct WhRequest
{
	/* input */
	int64		delivery_id;
	int64		webhook_id;
	int			attempt;
	char	   *url;
	char	   *body;
	struct curl_slist *headers;
	bool		http1_only;		/* HTTP/1.1 even when webhooks.http2 is on */
	void	   *arg;			/* caller's */

	/* output */
	bool		done;
	CURLcode	result;
	long		status;			/* HTTP status, 0 if no response */
	StringInfoData response;	/* capped body */
	bool		response_truncated;
	bool		headers_too_large;
	size_t		header_bytes;
	char		errbuf[CURL_ERROR_SIZE];
	const char *blocked_reason; /* set by the open-socket check */
	int64		retry_after_s;	/* -1 when absent */
	double		duration_ms;
	bool		h2_early_close; /* HTTP/2 stream closed before the body was sent */

	/* private */
	CURL	   *easy;
	TimestampTz started;
	dlist_node	node;			/* in the engine's list of active requests */
} WhRequest;

typedef struct WhEngine WhEngine;

extern void wh_curl_global_init(void);
extern WhEngine *wh_engine_create(MemoryContext cxt);
extern void wh_engine_destroy(WhEngine *engine);
extern void wh_engine_add(WhEngine *engine, WhRequest *req);
extern int	wh_engine_running(WhEngine *engine);
extern bool wh_engine_wait(WhEngine *engine, long timeout_ms, uint32 wait_event_info);
extern WhRequest *wh_engine_next_done(WhEngine *engine);
extern struct curl_slist *wh_build_headers(const char *msg_id, const char *body,
										   const char *secret,
										   const char *previous_secret,
										   const char *auth_token,
										   Jsonb *extra_headers);
extern char *wh_request_error_content(WhRequest *req);
extern const char *wh_auth_token_problem(const char *token);
extern void wh_check_extra_headers(Jsonb *headers, bool has_auth_token);
extern char *wh_extra_headers_problem(Jsonb *headers, bool has_auth_token);

/* ---- functions.c ---- */
/* JSON nested deeper than this is refused without recursing into it */
#define WH_JSON_MAX_DEPTH 64
extern bool wh_json_valid(const char *s, size_t len);

/* ---- worker.c ---- */
extern void wh_register_worker(void);
PGDLLEXPORT void webhooks_worker_main(Datum main_arg);

#endif							/* WEBHOOKS_H */
