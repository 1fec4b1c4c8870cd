/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The HTTP module: the libcurl engine shared by the delivery worker and
 *	  the connection test (http_engine.c), and the signed requests it sends
 *	  (http_request.c).
 *
 * The only header that includes curl/curl.h: a file that does not include
 * it does not compile against libcurl.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_HTTP_H
#define WEBHOOKS_HTTP_H

#include <curl/curl.h>

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"

/* one request: what to send, and what came back */
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

/* response headers beyond this many bytes fail the attempt */
#define WH_MAX_RESPONSE_HEADER_BYTES (64 * 1024)

/* ---- http_engine.c ---- */
typedef struct WhEngine WhEngine;

extern void wh_curl_global_init(void);
extern WhEngine *wh_engine_create(MemoryContext cxt);
extern void wh_engine_destroy(WhEngine *engine);
extern void wh_engine_add(WhEngine *engine, WhRequest *req);
extern int	wh_engine_running(WhEngine *engine);
extern bool wh_engine_wait(WhEngine *engine, long timeout_ms, uint32 wait_event_info);
extern WhRequest *wh_engine_next_done(WhEngine *engine);

/* ---- http_request.c ---- */
extern struct curl_slist *wh_curl_slist_append(struct curl_slist *list, const char *line);
extern struct curl_slist *wh_build_headers(const char *msg_id, const char *body,
										   const char *secret,
										   const char *previous_secret,
										   const char *auth_token,
										   Jsonb *extra_headers);
extern char *wh_request_error_content(WhRequest *req);

#endif							/* WEBHOOKS_HTTP_H */
