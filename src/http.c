/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The libcurl engine shared by the delivery worker and the connection
 *	  test, and the construction of signed requests.
 *
 * One engine is one curl multi handle: many requests in flight, connections
 * kept alive and reused (HTTP/2 multiplexed when the receiver offers it).
 * Instead of letting curl poll, the engine learns curl's sockets and timer
 * through CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION and waits for
 * them in a PostgreSQL WaitEventSet together with the process latch and
 * postmaster death.  So the worker sleeps until a socket is ready, a timer
 * fires, or a committing transaction sets its latch; and a backend running
 * the connection test reacts at once to a cancel or statement_timeout.
 *
 * Every request is locked down the same way: https only, TLS 1.2 or newer,
 * peer and host always verified, no redirects, no proxy from the
 * environment, connect/total timeouts, an idle (low-speed) limit, response
 * body and headers capped, and every address checked just before connect
 * (open-socket callback) against the non-public ranges.
 *
 * libcurl callbacks never call palloc or ereport: buffers are allocated
 * before the transfer starts, so no error can longjmp through libcurl.
 *
 *-------------------------------------------------------------------------
 */
#include "webhooks.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "url.h"
#include "utils/memutils.h"

#define WH_MAX_RESPONSE_HEADER_BYTES (64 * 1024)
#define WH_LOW_SPEED_TIME_S 10
#define WH_DEFAULT_CAPATH "/etc/ssl/certs"
#define WH_POOL_SIZE 1024

typedef struct EngineSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	int			pos;			/* position in the wait event set, -1 if none */
	bool		corked;			/* TCP_CORK set by engine_cork() */
} EngineSocket;

struct WhEngine
{
	CURLM	   *multi;
	MemoryContext cxt;
	WaitEventSet *wes;
	bool		wes_dirty;
	EngineSocket *socks;
	int			nsocks;
	int			maxsocks;
	WaitEvent  *events;
	int			maxevents;
	bool		timer_set;
	TimestampTz timer_deadline;
	int			running;
	int			active;			/* requests added and not yet returned */
	dlist_head	requests;		/* those requests */
	CURL	  **pool;			/* idle easy handles for reuse, a FIFO ring */
	int			pool_head;		/* oldest idle handle */
	int			npool;
	/* the settings the pooled handles were set up with (pool_ca_file NULL: none yet) */
	char	   *pool_ca_file;
	int			pool_connect_timeout_ms;
	int			pool_timeout_ms;
	char	   *applied_overrides;	/* webhooks.dns_overrides as last given to curl */
	MemoryContextCallback cleanup;
};

static bool curl_initialised = false;

static struct curl_slist *slist_append_checked(struct curl_slist *list, const char *line);
static struct curl_slist *dns_overrides(WhEngine *engine);

void
wh_curl_global_init(void)
{
	if (curl_initialised)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialise libcurl")));
	curl_initialised = true;
}

/* ---------------------------------------------------------------------
 * curl callbacks (no palloc, no ereport in here)
 * ---------------------------------------------------------------------
 */

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	WhEngine   *engine = (WhEngine *) userp;
	int			i;

	for (i = 0; i < engine->nsocks; i++)
		if (engine->socks[i].fd == fd)
			break;

	if (what == CURL_POLL_REMOVE)
	{
		if (i < engine->nsocks)
		{
			if (engine->socks[i].corked)
			{
#ifdef TCP_CORK
				/* never leave data held back in a socket we stop watching */
				int			off = 0;

				(void) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof(off));
#endif
			}
			engine->socks[i] = engine->socks[engine->nsocks - 1];
			engine->nsocks--;
			engine->wes_dirty = true;
		}
		return 0;
	}

	if (i == engine->nsocks)
	{
		if (engine->nsocks == engine->maxsocks)
		{
			/* grown with malloc: no palloc inside a libcurl callback */
			int			newmax = engine->maxsocks * 2;
			EngineSocket *n = realloc(engine->socks, newmax * sizeof(EngineSocket));

			if (n == NULL)
				return -1;
			engine->socks = n;
			engine->maxsocks = newmax;
		}
		engine->socks[i].fd = fd;
		engine->socks[i].what = what;
		engine->socks[i].pos = -1;
		engine->socks[i].corked = false;
		engine->nsocks++;
		engine->wes_dirty = true;
	}
	else if (engine->socks[i].what != what)
	{
		engine->socks[i].what = what;
		if (engine->socks[i].pos < 0)
			engine->wes_dirty = true;
		/* else modified in place before the next wait */
	}
	return 0;
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	WhEngine   *engine = (WhEngine *) userp;

	if (timeout_ms < 0)
		engine->timer_set = false;
	else
	{
		engine->timer_set = true;
		engine->timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	}
	return 0;
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	WhRequest  *req = (WhRequest *) userdata;
	size_t		n = size * nmemb;
	size_t		room = req->response.maxlen - 1 - req->response.len;
	size_t		take = Min(n, room);

	if (take > 0)
	{
		memcpy(req->response.data + req->response.len, ptr, take);
		req->response.len += take;
		req->response.data[req->response.len] = '\0';
	}
	if (take < n)
	{
		/* more than we keep: stop reading, the status is already known */
		req->response_truncated = true;
		return 0;
	}
	return n;
}

static size_t
header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	WhRequest  *req = (WhRequest *) userdata;
	size_t		n = size * nitems;
	static const char name[] = "retry-after:";

	req->header_bytes += n;
	if (req->header_bytes > WH_MAX_RESPONSE_HEADER_BYTES)
	{
		req->headers_too_large = true;
		return 0;
	}
	/* a new status line (e.g. after 100 Continue) resets what we learnt */
	if (n >= 5 && strncmp(buffer, "HTTP/", 5) == 0)
		req->retry_after_s = -1;
	else if (n > sizeof(name) - 1 && pg_strncasecmp(buffer, name, sizeof(name) - 1) == 0)
	{
		char		val[128];
		size_t		len = Min(n - (sizeof(name) - 1), sizeof(val) - 1);
		char	   *p = val;
		char	   *end;

		memcpy(val, buffer + sizeof(name) - 1, len);
		val[len] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		end = p + strlen(p);
		while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
			*--end = '\0';
		if (*p != '\0' && strspn(p, "0123456789") == strlen(p))
		{
			if (strlen(p) > 9)
				req->retry_after_s = 999999999;
			else
				req->retry_after_s = atol(p);
		}
		else if (*p != '\0')
		{
			time_t		t = curl_getdate(p, NULL);

			if (t != -1)
			{
				time_t		now = time(NULL);

				req->retry_after_s = t > now ? (int64) (t - now) : 0;
			}
		}
	}
	return n;
}

/*
 * Judge the address libcurl is about to connect to: this is where DNS
 * rebinding and names that resolve to private addresses are stopped.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	WhRequest  *req = (WhRequest *) clientp;
	const char *blocked;

	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKET_BAD;
	blocked = wh_addr_blocked(&address->addr, wh_allow_private_targets);
	if (blocked != NULL)
	{
		req->blocked_reason = blocked;
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

/* ---------------------------------------------------------------------
 * engine
 * ---------------------------------------------------------------------
 */

/* the malloc'd lists a request owns once it is added */
static void
free_request_lists(WhRequest *req)
{
	if (req->headers)
		curl_slist_free_all(req->headers);
	req->headers = NULL;
	if (req->resolve)
		curl_slist_free_all(req->resolve);
	req->resolve = NULL;
}

/*
 * Idle easy handles.  A handle keeps its options between requests, so a
 * reused one only needs the request's own options (see easy_setup); the
 * pool is emptied when a setting the options depend on changes.  It is a
 * FIFO: the handle reused is the one idle longest, never one whose HTTP/2
 * stream was closed a moment ago.
 */
static void
pool_clear(WhEngine *engine)
{
	while (engine->npool > 0)
	{
		curl_easy_cleanup(engine->pool[engine->pool_head]);
		engine->pool_head = (engine->pool_head + 1) % WH_POOL_SIZE;
		engine->npool--;
	}
	engine->pool_head = 0;
}

static CURL *
pool_get(WhEngine *engine)
{
	CURL	   *easy;

	if (engine->npool == 0)
		return NULL;
	easy = engine->pool[engine->pool_head];
	engine->pool_head = (engine->pool_head + 1) % WH_POOL_SIZE;
	engine->npool--;
	return easy;
}

static void
pool_put(WhEngine *engine, CURL *easy)
{
	if (engine->npool == WH_POOL_SIZE)
	{
		curl_easy_cleanup(easy);
		return;
	}
	engine->pool[(engine->pool_head + engine->npool) % WH_POOL_SIZE] = easy;
	engine->npool++;
}

/*
 * Do the pooled handles carry the current settings?  If not, empty the pool
 * and remember the settings the next handles will be set up with.
 */
static void
pool_check_settings(WhEngine *engine)
{
	const char *ca_file = wh_ca_file ? wh_ca_file : "";

	if (engine->pool_ca_file != NULL && strcmp(engine->pool_ca_file, ca_file) == 0 &&
		engine->pool_connect_timeout_ms == wh_connect_timeout_ms &&
		engine->pool_timeout_ms == wh_request_timeout_ms)
		return;
	/* a reload changed what the pooled handles were set up with */
	pool_clear(engine);
	if (engine->pool_ca_file)
		pfree(engine->pool_ca_file);
	engine->pool_ca_file = MemoryContextStrdup(engine->cxt, ca_file);
	engine->pool_connect_timeout_ms = wh_connect_timeout_ms;
	engine->pool_timeout_ms = wh_request_timeout_ms;
}

static void
engine_cleanup(void *arg)
{
	WhEngine   *engine = (WhEngine *) arg;

	if (engine->multi == NULL)
		return;
	/* requests still in flight: detach their easy handles and free them */
	while (!dlist_is_empty(&engine->requests))
	{
		WhRequest  *req = dlist_container(WhRequest, node,
										  dlist_pop_head_node(&engine->requests));

		if (req->easy)
		{
			curl_multi_remove_handle(engine->multi, req->easy);
			curl_easy_cleanup(req->easy);
			req->easy = NULL;
		}
		free_request_lists(req);
	}
	engine->active = 0;
	pool_clear(engine);
	curl_multi_cleanup(engine->multi);
	engine->multi = NULL;
	if (engine->wes)
		FreeWaitEventSet(engine->wes);
	engine->wes = NULL;
	free(engine->socks);
	engine->socks = NULL;
}

/*
 * Create an engine in cxt.  Its curl handles are released when cxt is reset
 * or deleted (also on error), or by wh_engine_destroy().
 */
WhEngine *
wh_engine_create(MemoryContext cxt)
{
	WhEngine   *engine;

	wh_curl_global_init();
	engine = MemoryContextAllocZero(cxt, sizeof(WhEngine));
	engine->cxt = cxt;
	engine->maxsocks = 16;
	engine->socks = malloc(engine->maxsocks * sizeof(EngineSocket));
	if (engine->socks == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	engine->pool = MemoryContextAllocZero(cxt, WH_POOL_SIZE * sizeof(CURL *));
	engine->multi = curl_multi_init();
	if (engine->multi == NULL)
	{
		free(engine->socks);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not create a libcurl multi handle")));
	}
	engine->cleanup.func = engine_cleanup;
	engine->cleanup.arg = engine;
	MemoryContextRegisterResetCallback(cxt, &engine->cleanup);

	curl_multi_setopt(engine->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(engine->multi, CURLMOPT_SOCKETDATA, engine);
	curl_multi_setopt(engine->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(engine->multi, CURLMOPT_TIMERDATA, engine);
	curl_multi_setopt(engine->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(engine->multi, CURLMOPT_MAXCONNECTS, (long) 1024);
	engine->wes_dirty = true;
	dlist_init(&engine->requests);
	return engine;
}

void
wh_engine_destroy(WhEngine *engine)
{
	engine_cleanup(engine);
}

int
wh_engine_running(WhEngine *engine)
{
	return engine->active;
}

/* the options of one request, set on every use of a handle */
static void
easy_setup_request(CURL *easy, WhRequest *req)
{
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) strlen(req->body));
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(easy, CURLOPT_RESOLVE, req->resolve);
	if (wh_http2 && !req->http1_only)
	{
		curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
	}
	else
	{
		curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 0L);
	}
}

/* the options every request shares, set once per handle */
static void
easy_setup_constant(CURL *easy)
{
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, WEBHOOKS_USER_AGENT);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);

	/* https only, verified, no redirects, no proxies */
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 0L);
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
	if (wh_ca_file != NULL && wh_ca_file[0] != '\0')
	{
		/* the extra CA file, plus the system's directory of trusted CAs */
		curl_easy_setopt(easy, CURLOPT_CAINFO, wh_ca_file);
		curl_easy_setopt(easy, CURLOPT_CAPATH, WH_DEFAULT_CAPATH);
	}
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) wh_connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) wh_request_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, (long) WH_LOW_SPEED_TIME_S);
}

/*
 * Start a request.  req must be palloc'd (or the first member of a palloc'd
 * struct): its response buffer is allocated in the same memory context.
 * req->url, req->body and req->headers must stay valid
 * until the request is returned by wh_engine_next_done(); the engine frees
 * req->headers then.
 */
void
wh_engine_add(WhEngine *engine, WhRequest *req)
{
	CURL	   *easy;

	req->done = false;
	req->result = CURLE_OK;
	req->status = 0;
	req->errbuf[0] = '\0';
	req->blocked_reason = NULL;
	req->retry_after_s = -1;
	req->response_truncated = false;
	req->headers_too_large = false;
	req->header_bytes = 0;
	req->duration_ms = 0;
	req->h2_early_close = false;
	/*
	 * Allocated now, because write_cb must not palloc, and in the request's
	 * own memory context (it lives and dies with the request).
	 */
	if (req->response.data == NULL)
	{
		req->response.maxlen = wh_response_body_limit + 1;
		req->response.data = MemoryContextAlloc(GetMemoryChunkContext(req),
												req->response.maxlen);
	}
	req->response.len = 0;
	req->response.data[0] = '\0';

	pool_check_settings(engine);
	easy = pool_get(engine);
	if (easy == NULL)
	{
		easy = curl_easy_init();
		if (easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
		easy_setup_constant(easy);
	}
	req->easy = easy;
	req->resolve = dns_overrides(engine);
	easy_setup_request(easy, req);
	req->started = GetCurrentTimestamp();
	if (curl_multi_add_handle(engine->multi, easy) != CURLM_OK)
	{
		curl_easy_cleanup(easy);
		req->easy = NULL;
		elog(ERROR, "could not add a request to the libcurl multi handle");
	}
	dlist_push_tail(&engine->requests, &req->node);
	engine->active++;
}

/*
 * Append the entries of a webhooks.dns_overrides value to list; with
 * remove, the libcurl entries that remove them ("-host:port") instead.
 */
static struct curl_slist *
append_overrides(struct curl_slist *list, const char *value, bool remove)
{
	char	   *copy = pstrdup(value);
	char	   *tok;
	char	   *next;

	for (tok = copy; tok != NULL; tok = next)
	{
		next = strchr(tok, ',');
		if (next)
			*next++ = '\0';
		while (*tok == ' ')
			tok++;
		if (*tok == '\0')
			continue;
		if (!remove)
			list = slist_append_checked(list, tok);
		else if (*tok != '-' && *tok != '+')
		{
			/* host:port, the host perhaps an IPv6 address in brackets */
			char	   *host_end = (*tok == '[' && strchr(tok, ']')) ? strchr(tok, ']') : tok;
			char	   *colon = strchr(host_end, ':');
			char	   *port_end = colon ? strchr(colon + 1, ':') : NULL;

			if (port_end != NULL)
			{
				char	   *line = psprintf("-%.*s", (int) (port_end - tok), tok);

				list = slist_append_checked(list, line);
				pfree(line);
			}
		}
	}
	pfree(copy);
	return list;
}

/*
 * webhooks.dns_overrides as a fresh list for one request (a reload cannot
 * free it under a transfer that has not started yet).  libcurl keeps these
 * entries in the multi handle's DNS cache for good, so when the setting has
 * changed since the last request, the list first removes the old entries:
 * an override taken out of the setting stops applying at once.
 */
static struct curl_slist *
dns_overrides(WhEngine *engine)
{
	const char *value = wh_dns_overrides ? wh_dns_overrides : "";
	struct curl_slist *list = NULL;

	if (engine->applied_overrides != NULL && strcmp(engine->applied_overrides, value) != 0)
	{
		list = append_overrides(list, engine->applied_overrides, true);
		pfree(engine->applied_overrides);
		engine->applied_overrides = NULL;
	}
	if (engine->applied_overrides == NULL)
		engine->applied_overrides = MemoryContextStrdup(engine->cxt, value);
	return append_overrides(list, value, false);
}

static void
rebuild_wait_set(WhEngine *engine)
{
	int			i;

	if (engine->wes)
		FreeWaitEventSet(engine->wes);
	engine->wes = wh_create_wait_event_set(engine->cxt, engine->nsocks + 2);
	AddWaitEventToSet(engine->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(engine->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < engine->nsocks; i++)
	{
		uint32		ev = 0;

		if (engine->socks[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (engine->socks[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		engine->socks[i].pos = AddWaitEventToSet(engine->wes, ev, engine->socks[i].fd,
												 NULL, (void *) (intptr_t) engine->socks[i].fd);
	}
	if (engine->maxevents < engine->nsocks + 2)
	{
		engine->maxevents = engine->nsocks + 2;
		if (engine->events)
			pfree(engine->events);
		engine->events = MemoryContextAlloc(engine->cxt, engine->maxevents * sizeof(WaitEvent));
	}
	engine->wes_dirty = false;
}

/*
 * Cork (or uncork: push out) the connections while curl works on them.
 * Over HTTP/2 libcurl writes every frame with its own send(): a request's
 * HEADERS, then its DATA, each one a trip through the TCP stack.  Corked
 * while one wake-up's events are handled, the frames of all the requests
 * started or answered in it leave together when the engine uncorks, at the
 * end of the same wake-up.  Only a few connections are corked (HTTP/2
 * multiplexes on few; HTTP/1.1 writes one request in a single send and
 * has a connection per request, where this would only add system calls).
 */
#define WH_CORK_MAX_SOCKETS 8

static void
engine_cork(WhEngine *engine, bool on)
{
	int			i;
	int			val = on ? 1 : 0;

	if (on && (!wh_http2 || engine->nsocks > WH_CORK_MAX_SOCKETS))
		return;
	for (i = 0; i < engine->nsocks; i++)
	{
		if (engine->socks[i].corked == on)
			continue;
		/* a failure only costs the batching: the data still goes out */
#ifdef TCP_CORK
		(void) setsockopt(engine->socks[i].fd, IPPROTO_TCP, TCP_CORK, &val, sizeof(val));
#else
		(void) val;				/* not Linux: no corking */
#endif
		engine->socks[i].corked = on;
	}
}

/* let curl work on a socket (or its timers), corked from the first call on */
static void
engine_socket_action(WhEngine *engine, curl_socket_t fd, int mask, bool *corked)
{
	if (!*corked)
	{
		engine_cork(engine, true);
		*corked = true;
	}
	curl_multi_socket_action(engine->multi, fd, mask, &engine->running);
}

/*
 * Wait up to timeout_ms (-1: no limit other than curl's timers) for the
 * latch, a socket or a curl timer, and let curl progress.  Returns true when
 * the latch was set (it is reset here).
 */
bool
wh_engine_wait(WhEngine *engine, long timeout_ms, uint32 wait_event_info)
{
	int			nev;
	int			i;
	bool		latch = false;
	bool		corked = false;
	long		wait_ms = timeout_ms;

	if (engine->wes_dirty || engine->wes == NULL)
		rebuild_wait_set(engine);
	else
	{
		/* interest changes of known sockets are cheap modifications */
		for (i = 0; i < engine->nsocks; i++)
		{
			uint32		ev = 0;

			if (engine->socks[i].what & CURL_POLL_IN)
				ev |= WL_SOCKET_READABLE;
			if (engine->socks[i].what & CURL_POLL_OUT)
				ev |= WL_SOCKET_WRITEABLE;
			ModifyWaitEvent(engine->wes, engine->socks[i].pos, ev, NULL);
		}
	}

	if (engine->timer_set)
	{
		long		secs;
		int			usecs;
		long		until;

		TimestampDifference(GetCurrentTimestamp(), engine->timer_deadline, &secs, &usecs);
		until = secs * 1000 + (usecs + 999) / 1000;
		if (wait_ms < 0 || until < wait_ms)
			wait_ms = until;
	}

	nev = WaitEventSetWait(engine->wes, wait_ms, engine->events, engine->maxevents,
						   wait_event_info);
	for (i = 0; i < nev; i++)
	{
		WaitEvent  *ev = &engine->events[i];

		if (ev->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch = true;
		}
		else if (ev->events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			mask = 0;

			if (ev->events & WL_SOCKET_READABLE)
				mask |= CURL_CSELECT_IN;
			if (ev->events & WL_SOCKET_WRITEABLE)
				mask |= CURL_CSELECT_OUT;
			engine_socket_action(engine, ev->fd, mask, &corked);
		}
	}
	if (engine->timer_set && GetCurrentTimestamp() >= engine->timer_deadline)
	{
		engine->timer_set = false;
		engine_socket_action(engine, CURL_SOCKET_TIMEOUT, 0, &corked);
	}
	if (corked)
		engine_cork(engine, false);
	return latch;
}

/*
 * Return the next finished request (or NULL).  Its easy handle goes back to
 * the pool and its header list is freed.
 */
WhRequest *
wh_engine_next_done(WhEngine *engine)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(engine->multi, &left)) != NULL)
	{
		WhRequest  *req = NULL;
		CURL	   *easy = msg->easy_handle;
		curl_off_t	total_us = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status);

		/*
		 * An HTTP/2 receiver may send its complete response before it has
		 * read the request body, then close the stream (RST_STREAM with
		 * NO_ERROR); RFC 9113 section 8.1 says a client must not discard
		 * that response.  libcurl 7.88 reports the body it could not finish
		 * sending as CURLE_HTTP2_STREAM, with no message (a stream reset
		 * with an error code comes with one).  A 2xx answered that way is
		 * the receiver's acceptance: a success, not a retry.
		 */
		if (req->result == CURLE_HTTP2_STREAM && req->errbuf[0] == '\0')
		{
			if (req->status >= 200 && req->status < 300)
				req->result = CURLE_OK;
			else
				req->h2_early_close = true; /* the response was lost */
		}
		if (curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us) == CURLE_OK && total_us > 0)
			req->duration_ms = total_us / 1000.0;
		else
			req->duration_ms = (GetCurrentTimestamp() - req->started) / 1000.0;
		curl_multi_remove_handle(engine->multi, easy);
		/* nothing of this request may be used by the handle's next one */
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(easy, CURLOPT_RESOLVE, NULL);
		pool_put(engine, easy);
		req->easy = NULL;
		free_request_lists(req);
		req->done = true;
		dlist_delete(&req->node);
		engine->active--;
		return req;
	}
	return NULL;
}

/* ---------------------------------------------------------------------
 * requests
 * ---------------------------------------------------------------------
 */

static struct curl_slist *
slist_append_checked(struct curl_slist *list, const char *line)
{
	struct curl_slist *n = curl_slist_append(list, line);

	if (n == NULL)
	{
		if (list)
			curl_slist_free_all(list);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	return n;
}

/* headers the extension sets itself, which extra headers cannot override */
static bool
reserved_header(const char *name, bool has_auth_token)
{
	static const char *const reserved[] = {
		"host", "content-length", "transfer-encoding", "content-type",
		"connection", "expect", "te", "upgrade", "user-agent", "keep-alive",
		"proxy-authorization", "trailer"
	};
	int			i;

	if (pg_strncasecmp(name, "webhook-", 8) == 0)
		return true;
	if (has_auth_token && pg_strcasecmp(name, "authorization") == 0)
		return true;
	for (i = 0; i < lengthof(reserved); i++)
		if (pg_strcasecmp(name, reserved[i]) == 0)
			return true;
	return false;
}

static bool
is_token_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * What is wrong with extra headers, or NULL: a JSON object of string values,
 * names that are HTTP tokens and not reserved, values without CR, LF, NUL or
 * other control characters.  Does not throw, so the worker can check rows at
 * send time.
 */
char *
wh_extra_headers_problem(Jsonb *headers, bool has_auth_token)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;
	int			count = 0;

	if (headers == NULL)
		return NULL;
	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		return pstrdup("headers must be a JSON object of header names to string values");

	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int			i;

		if (tok == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			if (++count > 32)
				return pstrdup("too many extra headers (at most 32)");
			if (v.val.string.len == 0 || v.val.string.len > 256)
				return psprintf("invalid header name \"%s\" (1 to 256 characters)", name);
			for (i = 0; i < v.val.string.len; i++)
				if (!is_token_char((unsigned char) v.val.string.val[i]))
					return psprintf("invalid header name \"%s\" (only letters, digits and !#$%%&'*+-.^_`|~)", name);
			if (reserved_header(name, has_auth_token))
				return psprintf("header \"%s\" is set by the extension and cannot be overridden", name);
		}
		else if (tok == WJB_VALUE)
		{
			if (v.type != jbvString)
				return psprintf("value of header \"%s\" must be a string", name);
			if (v.val.string.len > 8192)
				return psprintf("value of header \"%s\" is longer than 8192 bytes", name);
			for (i = 0; i < v.val.string.len; i++)
			{
				unsigned char c = (unsigned char) v.val.string.val[i];

				if ((c < 0x20 && c != '\t') || c == 0x7f)
					return psprintf("value of header \"%s\" contains a control character (CR, LF, NUL, ...)", name);
			}
		}
	}
	return NULL;
}

void
wh_check_extra_headers(Jsonb *headers, bool has_auth_token)
{
	char	   *problem = wh_extra_headers_problem(headers, has_auth_token);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid extra headers: %s", problem),
				 errhint("Headers are a JSON object such as '{\"X-Source\": \"crm\"}'; "
						 "Host, Content-Type, Content-Length, Transfer-Encoding, User-Agent, "
						 "webhook-* and, with an auth token, Authorization are set by the extension.")));
}

/*
 * The headers of one signed attempt.  Signed now, with the current time:
 * every retry gets a fresh webhook-timestamp and signature, with the same
 * webhook-id.  During a rotation both secrets sign (space separated).
 */
struct curl_slist *
wh_build_headers(const char *msg_id, const char *body, const char *secret,
				 const char *previous_secret, const char *auth_token,
				 Jsonb *extra_headers)
{
	struct curl_slist *list = NULL;
	int64		ts = (int64) time(NULL);
	char	   *sig;
	StringInfoData line;

	initStringInfo(&line);
	sig = wh_sign(secret, msg_id, ts, body, strlen(body));
	if (previous_secret != NULL)
	{
		char	   *sig2 = wh_sign(previous_secret, msg_id, ts, body, strlen(body));

		sig = psprintf("%s %s", sig, sig2);
	}

	/* extra headers first, so ours come last and are never shadowed */
	if (extra_headers != NULL && !JB_ROOT_IS_SCALAR(extra_headers))
	{
		JsonbIterator *it = JsonbIteratorInit(&extra_headers->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				resetStringInfo(&line);
				appendBinaryStringInfo(&line, v.val.string.val, v.val.string.len);
				appendStringInfoString(&line, ": ");
			}
			else if (tok == WJB_VALUE && v.type == jbvString)
			{
				appendBinaryStringInfo(&line, v.val.string.val, v.val.string.len);
				list = slist_append_checked(list, line.data);
			}
		}
	}

	list = slist_append_checked(list, "Content-Type: application/json");
	list = slist_append_checked(list, "Expect:");
	resetStringInfo(&line);
	appendStringInfo(&line, "webhook-id: %s", msg_id);
	list = slist_append_checked(list, line.data);
	resetStringInfo(&line);
	appendStringInfo(&line, "webhook-timestamp: " INT64_FORMAT, ts);
	list = slist_append_checked(list, line.data);
	resetStringInfo(&line);
	appendStringInfo(&line, "webhook-signature: %s", sig);
	list = slist_append_checked(list, line.data);
	if (auth_token != NULL && auth_token[0] != '\0')
	{
		resetStringInfo(&line);
		appendStringInfo(&line, "Authorization: Bearer %s", auth_token);
		list = slist_append_checked(list, line.data);
	}
	pfree(line.data);
	return list;
}

/* Make bytes from the network safe to store as text in this database. */
static char *
sanitize_text(const char *s, int len)
{
	StringInfoData out;
	int			enc = GetDatabaseEncoding();

	initStringInfo(&out);
	while (len > 0)
	{
		int			ok = pg_encoding_verifymbstr(enc, s, len);

		appendBinaryStringInfo(&out, s, ok);
		s += ok;
		len -= ok;
		if (len > 0)
		{
			/* an invalid byte or NUL */
			appendStringInfoChar(&out, '?');
			s++;
			len--;
		}
	}
	return out.data;
}

/*
 * What a log row says about a failed attempt: the response body when a
 * response arrived, else the transport error.
 */
char *
wh_request_error_content(WhRequest *req)
{
	if (req->blocked_reason != NULL)
		return psprintf("connection blocked: the target resolved to a %s", req->blocked_reason);
	if (req->headers_too_large)
		return psprintf("response headers exceed %d bytes", WH_MAX_RESPONSE_HEADER_BYTES);
	if (req->status > 0 && (req->result == CURLE_OK || req->response_truncated))
	{
		char	   *body = sanitize_text(req->response.data, req->response.len);

		if (req->response_truncated)
			return psprintf("%s...[truncated]", body);
		return body;
	}
	if (req->h2_early_close)
		return pstrdup("the receiver closed the HTTP/2 stream before the request body was sent "
					   "(an early response, which libcurl " LIBCURL_VERSION " cannot read); "
					   "the webhook's next attempts use HTTP/1.1");
	if (req->errbuf[0] != '\0')
		return psprintf("%s: %s", curl_easy_strerror(req->result),
						sanitize_text(req->errbuf, strlen(req->errbuf)));
	return pstrdup(curl_easy_strerror(req->result));
}
