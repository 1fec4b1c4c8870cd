/*-------------------------------------------------------------------------
 *
 * http_engine.c
 *	  The libcurl engine shared by the delivery worker and the connection
 *	  test: curl's multi interface driven from a PostgreSQL WaitEventSet.
 *
 * It owns curl's sockets and timers, the corking of connections, the
 * generations of libcurl state that follow the settings (multi handle,
 * trust store, dns_overrides), and the pool of idle easy handles.  What a
 * request says (headers, signature, body) and what a failed one means as
 * text is http_request.c's.
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
 * Connections follow the settings.  The address check runs when a
 * connection is opened, and the trust store when it is set up, so a
 * connection kept alive would outlive a reload that forbids it.  The
 * engine therefore runs a generation of libcurl state (a multi handle, with
 * its connection cache and DNS cache, the trust store and the
 * dns_overrides list) per value of the settings connections depend on:
 * webhooks.allow_private_targets, webhooks.ca_file (its name and the file
 * itself) and webhooks.dns_overrides.  When a reload changes one of them, new
 * requests go to a new generation; the old one only finishes the requests
 * it has in flight and is then cleaned up, which closes its connections.
 * The settings are compared only after a reload (PgReloadTime moved), so
 * this costs a request nothing.
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
#include "postgres.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "http.h"
#include "url.h"
#include "webhooks.h"

#define WH_LOW_SPEED_TIME_S 10
#define WH_POOL_SIZE 1024

typedef struct EngineMulti EngineMulti;

typedef struct EngineSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	int			pos;			/* position in the wait event set, -1 if none */
	bool		corked;			/* TCP_CORK set by engine_cork() */
	EngineMulti *owner;			/* the generation whose multi handle uses it */
} EngineSocket;

/*
 * One generation: a multi handle and what its connections were made with.
 * Everything here is allocated outside PostgreSQL's memory contexts (curl,
 * OpenSSL) except the struct itself and trust_error, in the engine's context.
 */
struct EngineMulti
{
	WhEngine   *engine;
	CURLM	   *multi;
	bool		timer_set;
	TimestampTz timer_deadline;
	int			active;			/* requests added to it and not yet returned */
	X509_STORE *trust;			/* certificates trusted; NULL: see trust_error */
	char	   *trust_error;	/* why there is no trust store */
	struct curl_slist *resolve; /* webhooks.dns_overrides in libcurl's form */
	dlist_node	node;			/* in engine->retiring */
};

struct WhEngine
{
	MemoryContext cxt;
	EngineMulti *current;		/* new requests go here */
	dlist_head	retiring;		/* older generations finishing their requests */
	bool		destroyed;
	WaitEventSet *wes;
	bool		wes_dirty;
	EngineSocket *socks;
	int			nsocks;
	int			maxsocks;
	WaitEvent  *events;
	int			maxevents;
	int			active;			/* requests added and not yet returned */
	dlist_head	requests;		/* those requests */
	CURL	  **pool;			/* idle easy handles for reuse, a FIFO ring */
	int			pool_head;		/* oldest idle handle */
	int			npool;
	/* the settings the current generation and the pooled handles follow */
	TimestampTz settings_read;	/* PgReloadTime when they were last compared */
	bool		allow_private;
	char	   *ca_file;
	struct stat ca_stat;		/* of ca_file when it was read */
	bool		ca_stat_ok;
	char	   *dns_overrides;
	int			connect_timeout_ms;
	int			timeout_ms;
	MemoryContextCallback cleanup;
};

static bool curl_initialised = false;

/* libcurl's built-in CA bundle and directory (NULL: none) */
static char *curl_default_cainfo = NULL;
static char *curl_default_capath = NULL;

/*
 * The engine gives libcurl's OpenSSL connections a trust store of its own
 * (see trust_build), so libcurl must use the OpenSSL this file is built
 * with: same library, same major version.
 */
void
wh_curl_global_init(void)
{
	const curl_version_info_data *info;
	const char *ssl;

	if (curl_initialised)
		return;
	info = curl_version_info(CURLVERSION_NOW);
	ssl = info->ssl_version ? info->ssl_version : "";
	if (strncmp(ssl, "OpenSSL/", 8) != 0 ||
		strtol(ssl + 8, NULL, 10) != (long) (OpenSSL_version_num() >> 28))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("libcurl uses %s, not the OpenSSL library the webhooks extension was built with (%s)",
						ssl[0] ? ssl : "no TLS library", OpenSSL_version(OPENSSL_VERSION)),
				 errhint("Build the extension against the OpenSSL flavour of libcurl.")));
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

/* curl tells which sockets it wants watched, for what (CURLMOPT_SOCKETFUNCTION) */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	EngineMulti *m = (EngineMulti *) userp;
	WhEngine   *engine = m->engine;
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
		engine->socks[i].owner = m;
		engine->nsocks++;
		engine->wes_dirty = true;
	}
	else if (engine->socks[i].owner != m)
	{
		/* a descriptor number reused by another generation */
		engine->socks[i].what = what;
		engine->socks[i].owner = m;
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

/* curl tells when it next wants to act on its own (CURLMOPT_TIMERFUNCTION) */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	EngineMulti *m = (EngineMulti *) userp;

	if (timeout_ms < 0)
		m->timer_set = false;
	else
	{
		m->timer_set = true;
		m->timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	}
	return 0;
}

/* keep the response body, up to the buffer allocated before the transfer */
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

/* cap the response headers and read Retry-After (seconds or an HTTP date) */
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
 * rebinding and names that resolve to private addresses are stopped.  A
 * refusal is remembered, but libcurl goes on with the name's next address:
 * wh_engine_next_done() keeps the refusal only when no address could be
 * connected to.
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

/*
 * The TLS context of a new connection: its trust store is the generation's
 * (shared, reference counted).  libcurl 7.88 calls this before it sets up a
 * store of its own, and then only adds the CAINFO / CAPATH it was given,
 * which are none (see easy_setup_constant).
 */
static CURLcode
sslctx_cb(CURL *easy, void *ssl_ctx, void *userp)
{
	EngineMulti *m = (EngineMulti *) userp;

	if (m->trust == NULL)
		return CURLE_SSL_CACERT_BADFILE;
	SSL_CTX_set1_cert_store((SSL_CTX *) ssl_ctx, m->trust);
	return CURLE_OK;
}

/* ---------------------------------------------------------------------
 * trust store
 * ---------------------------------------------------------------------
 */

/* do two paths name the same file (or directory)? */
static bool
same_file(const char *a, const char *b)
{
	struct stat sa;
	struct stat sb;

	return a != NULL && b != NULL && stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
		sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* libcurl's built-in CA bundle and directory, learnt once */
static void
learn_curl_defaults(void)
{
	static bool learnt = false;
	CURL	   *easy;
	char	   *s = NULL;

	if (learnt)
		return;
	easy = curl_easy_init();
	if (easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	if (curl_easy_getinfo(easy, CURLINFO_CAINFO, &s) == CURLE_OK && s != NULL)
		curl_default_cainfo = MemoryContextStrdup(TopMemoryContext, s);
	s = NULL;
	if (curl_easy_getinfo(easy, CURLINFO_CAPATH, &s) == CURLE_OK && s != NULL)
		curl_default_capath = MemoryContextStrdup(TopMemoryContext, s);
	curl_easy_cleanup(easy);
	learnt = true;
}

/*
 * The certificates a generation trusts: the system's, as libcurl and
 * OpenSSL know them, plus webhooks.ca_file.
 *
 * Why a store of our own, given to each connection by the SSL_CTX callback:
 * libcurl has one CA file (CURLOPT_CAINFO) and one directory (CAPATH), and
 * setting CAINFO to webhooks.ca_file replaces libcurl's bundle (a
 * distribution without a CA directory then trusts nothing else), while
 * CURLOPT_CAINFO_BLOB also overrides CAINFO.  OpenSSL's defaults (its
 * OPENSSLDIR, or SSL_CERT_FILE / SSL_CERT_DIR) are not used by libcurl at all
 * unless it was built with --with-ca-fallback.  So the store is built here
 * from all of them:
 *	- OpenSSL's default locations (X509_STORE_set_default_paths, which honours
 *	  SSL_CERT_FILE and SSL_CERT_DIR),
 *	- libcurl's built-in bundle and directory (CURLINFO_CAINFO / CAPATH),
 *	  unless they are the same files (on Debian they are),
 *	- webhooks.ca_file, added: a file that cannot be read fails the requests
 *	  (it was meant to be trusted), it is never silently left out.
 * Built once per generation and at each reload, and shared by every
 * connection: a new connection no longer parses the CA bundle (libcurl 7.88
 * parses it per connection when a CA directory is set).
 *
 * Returns NULL with *error set when ca_file cannot be loaded.
 */
static X509_STORE *
trust_build(const char *ca_file, char **error)
{
	X509_STORE *store;
	const char *ossl_file;
	const char *ossl_dir;

	*error = NULL;
	learn_curl_defaults();
	store = X509_STORE_new();
	if (store == NULL)
	{
		*error = pstrdup("out of memory building the trust store");
		return NULL;
	}
	/* missing default locations are not an error: there may be none */
	(void) X509_STORE_set_default_paths(store);
	ossl_file = getenv(X509_get_default_cert_file_env());
	if (ossl_file == NULL)
		ossl_file = X509_get_default_cert_file();
	ossl_dir = getenv(X509_get_default_cert_dir_env());
	if (ossl_dir == NULL)
		ossl_dir = X509_get_default_cert_dir();
	if (curl_default_cainfo != NULL && !same_file(curl_default_cainfo, ossl_file))
		(void) X509_STORE_load_locations(store, curl_default_cainfo, NULL);
	if (curl_default_capath != NULL && !same_file(curl_default_capath, ossl_dir))
		(void) X509_STORE_load_locations(store, NULL, curl_default_capath);
	ERR_clear_error();

	if (ca_file[0] != '\0' && X509_STORE_load_locations(store, ca_file, NULL) != 1)
	{
		unsigned long e = ERR_peek_last_error();
		const char *why = e ? ERR_reason_error_string(e) : NULL;

		*error = psprintf("webhooks.ca_file \"%s\" could not be loaded: %s",
						  ca_file, why ? why : "no certificate found");
		ERR_clear_error();
		X509_STORE_free(store);
		return NULL;
	}

	/*
	 * As libcurl sets them on its own stores: trusted certificates first,
	 * and an intermediate in the store is a trust anchor.
	 */
	X509_STORE_set_flags(store, X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_PARTIAL_CHAIN);
	return store;
}

/* ---------------------------------------------------------------------
 * dns_overrides
 * ---------------------------------------------------------------------
 */

/*
 * An item of the comma-separated setting that is only an address (an IPv4
 * address, or an IPv6 address in brackets) continues the entry before it:
 * libcurl's syntax for a name with several addresses is host:port:a1,a2.
 */
static bool
is_address_item(const char *item)
{
	size_t		len = strlen(item);

	if (item[0] == '[')
		return len > 2 && item[len - 1] == ']';
	return strchr(item, ':') == NULL;
}

/*
 * webhooks.dns_overrides as libcurl's CURLOPT_RESOLVE list, one entry per
 * host:port, its addresses in the order given (libcurl tries them in turn).
 */
static struct curl_slist *
overrides_list(const char *value)
{
	char	   *copy = pstrdup(value);
	char	   *rest = copy;
	StringInfoData entry;
	struct curl_slist *list = NULL;

	initStringInfo(&entry);
	while (rest != NULL)
	{
		char	   *item = wh_next_setting_item(&rest);

		if (*item == '\0')
			continue;
		if (entry.len > 0 && is_address_item(item))
		{
			appendStringInfoChar(&entry, ',');
			appendStringInfoString(&entry, item);
			continue;
		}
		if (entry.len > 0)
			list = wh_curl_slist_append(list, entry.data);
		resetStringInfo(&entry);
		appendStringInfoString(&entry, item);
	}
	if (entry.len > 0)
		list = wh_curl_slist_append(list, entry.data);
	pfree(entry.data);
	pfree(copy);
	return list;
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
}

/*
 * Idle easy handles.  A handle keeps its options between requests, so a
 * reused one only needs the request's own options (see easy_setup_request);
 * the pool is emptied when a setting the options depend on changes, and
 * holds only handles of the current generation.  It is a FIFO: the handle
 * reused is the one idle longest, never one whose HTTP/2 stream was closed
 * a moment ago.
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

/* take the handle idle longest, or NULL when the pool is empty */
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

/* give a handle back to the pool (cleaned up when the pool is full) */
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

/* free what curl and OpenSSL allocated for a generation */
static void
multi_release(EngineMulti *m)
{
	if (m->multi)
		curl_multi_cleanup(m->multi);	/* closes its connections */
	m->multi = NULL;
	if (m->trust)
		X509_STORE_free(m->trust);
	m->trust = NULL;
	if (m->resolve)
		curl_slist_free_all(m->resolve);
	m->resolve = NULL;
}

/* a generation with no request left: close its connections, forget it */
static void
multi_destroy(WhEngine *engine, EngineMulti *m)
{
	int			i;

	multi_release(m);
	/* sockets curl closed without telling (it may not, in cleanup) */
	for (i = engine->nsocks - 1; i >= 0; i--)
	{
		if (engine->socks[i].owner != m)
			continue;
		engine->socks[i] = engine->socks[engine->nsocks - 1];
		engine->nsocks--;
	}
	engine->wes_dirty = true;
	if (m->trust_error)
		pfree(m->trust_error);
	pfree(m);
}

/* a new generation, following the settings as they are now */
static EngineMulti *
multi_create(WhEngine *engine, const char *ca_file, const char *overrides)
{
	EngineMulti *m = MemoryContextAllocZero(engine->cxt, sizeof(EngineMulti));
	MemoryContext old = MemoryContextSwitchTo(engine->cxt);

	m->engine = engine;
	m->resolve = overrides_list(overrides);
	m->trust = trust_build(ca_file, &m->trust_error);
	MemoryContextSwitchTo(old);
	m->multi = curl_multi_init();
	if (m->multi == NULL)
	{
		multi_release(m);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not create a libcurl multi handle")));
	}
	curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
	curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
	curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long) 1024);
	return m;
}

/* is ca_file (as stat'ed now) the file the current generation read? */
static bool
same_ca_file(WhEngine *engine, bool ok, const struct stat *st)
{
	if (ok != engine->ca_stat_ok)
		return false;
	if (!ok)
		return true;
	return st->st_dev == engine->ca_stat.st_dev && st->st_ino == engine->ca_stat.st_ino &&
		st->st_size == engine->ca_stat.st_size && st->st_mtime == engine->ca_stat.st_mtime &&
		st->st_ctime == engine->ca_stat.st_ctime;
}

/*
 * Follow the settings (see the file header).  Only after a reload, or for
 * the first request: the worker's settings change only by reloading, and
 * the connection test makes an engine per call.
 *
 * A change of allow_private_targets, ca_file (the name, or the file: a new
 * inode, size or time) or dns_overrides starts a new generation: the
 * connections the old settings allowed are not used again, and are closed
 * once their requests are done.  Any other reload re-reads the trust store
 * of the current generation (the system's certificates may have been
 * updated) for its connections to come.  The connect and total timeouts
 * only empty the pool of idle handles.
 */
static void
engine_follow_settings(WhEngine *engine)
{
	const char *ca_file = wh_ca_file ? wh_ca_file : "";
	const char *overrides = wh_dns_overrides ? wh_dns_overrides : "";
	struct stat st;
	bool		st_ok;
	EngineMulti *old = engine->current;
	EngineMulti *m;

	if (old != NULL && engine->settings_read == PgReloadTime)
		return;
	engine->settings_read = PgReloadTime;

	if (engine->connect_timeout_ms != wh_connect_timeout_ms ||
		engine->timeout_ms != wh_request_timeout_ms)
	{
		pool_clear(engine);
		engine->connect_timeout_ms = wh_connect_timeout_ms;
		engine->timeout_ms = wh_request_timeout_ms;
	}

	st_ok = ca_file[0] != '\0' && stat(ca_file, &st) == 0;
	if (old != NULL && engine->allow_private == wh_allow_private_targets &&
		strcmp(engine->ca_file, ca_file) == 0 && same_ca_file(engine, st_ok, &st) &&
		strcmp(engine->dns_overrides, overrides) == 0)
	{
		char	   *error;
		X509_STORE *trust;
		MemoryContext oldcxt = MemoryContextSwitchTo(engine->cxt);

		trust = trust_build(ca_file, &error);
		MemoryContextSwitchTo(oldcxt);
		if (old->trust)
			X509_STORE_free(old->trust);
		if (old->trust_error)
			pfree(old->trust_error);
		old->trust = trust;
		old->trust_error = error;
		return;
	}

	m = multi_create(engine, ca_file, overrides);
	/* the pooled handles point at the old generation */
	pool_clear(engine);
	engine->current = m;
	if (old != NULL)
	{
		if (old->active == 0)
			multi_destroy(engine, old);
		else
			dlist_push_tail(&engine->retiring, &old->node);
	}
	engine->allow_private = wh_allow_private_targets;
	if (engine->ca_file)
		pfree(engine->ca_file);
	engine->ca_file = MemoryContextStrdup(engine->cxt, ca_file);
	engine->ca_stat_ok = st_ok;
	if (st_ok)
		engine->ca_stat = st;
	if (engine->dns_overrides)
		pfree(engine->dns_overrides);
	engine->dns_overrides = MemoryContextStrdup(engine->cxt, overrides);
}

/* free every curl handle of the engine (reset callback of its memory context) */
static void
engine_cleanup(void *arg)
{
	WhEngine   *engine = (WhEngine *) arg;
	dlist_mutable_iter iter;

	if (engine->destroyed)
		return;
	engine->destroyed = true;
	/* requests still in flight: detach their easy handles and free them */
	while (!dlist_is_empty(&engine->requests))
	{
		WhRequest  *req = dlist_container(WhRequest, node,
										  dlist_pop_head_node(&engine->requests));

		if (req->easy)
		{
			/* from whichever multi handle has it (the others refuse) */
			if (engine->current)
				curl_multi_remove_handle(engine->current->multi, req->easy);
			dlist_foreach_modify(iter, &engine->retiring)
				curl_multi_remove_handle(dlist_container(EngineMulti, node, iter.cur)->multi,
										 req->easy);
			curl_easy_cleanup(req->easy);
			req->easy = NULL;
		}
		free_request_lists(req);
	}
	engine->active = 0;
	pool_clear(engine);
	/* no pfree here: this may run while the engine's context is reset */
	if (engine->current)
		multi_release(engine->current);
	engine->current = NULL;
	dlist_foreach_modify(iter, &engine->retiring)
		multi_release(dlist_container(EngineMulti, node, iter.cur));
	dlist_init(&engine->retiring);
	if (engine->wes)
		FreeWaitEventSet(engine->wes);
	engine->wes = NULL;
	free(engine->socks);
	engine->socks = NULL;
	engine->nsocks = 0;
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
	dlist_init(&engine->requests);
	dlist_init(&engine->retiring);
	engine->wes_dirty = true;
	engine->cleanup.func = engine_cleanup;
	engine->cleanup.arg = engine;
	MemoryContextRegisterResetCallback(cxt, &engine->cleanup);

	/* the first generation, now: errors belong to the caller, not a request */
	engine_follow_settings(engine);
	return engine;
}

/* free the engine's curl handles now, rather than with its memory context */
void
wh_engine_destroy(WhEngine *engine)
{
	engine_cleanup(engine);
}

/* the number of requests added and not yet returned by wh_engine_next_done() */
int
wh_engine_running(WhEngine *engine)
{
	return engine->active;
}

/* the options of one request, set on every use of a handle */
static void
easy_setup_request(CURL *easy, WhRequest *req, EngineMulti *m)
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
	curl_easy_setopt(easy, CURLOPT_RESOLVE, m->resolve);
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

/* the options every request of a generation shares, set once per handle */
static void
easy_setup_constant(CURL *easy, EngineMulti *m)
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

	/*
	 * The trust store is the generation's (trust_build), installed by
	 * sslctx_cb.  libcurl gets no CA file or directory of its own, so it
	 * adds nothing to it, and no CA cache, so it never swaps in a cached
	 * store instead.  Without the callback (a libcurl without OpenSSL)
	 * nothing would be trusted: refuse rather than send.
	 */
	curl_easy_setopt(easy, CURLOPT_CAINFO, NULL);
	curl_easy_setopt(easy, CURLOPT_CAPATH, NULL);
#if LIBCURL_VERSION_NUM >= 0x075700	/* 7.87.0: the CA cache came with it */
	curl_easy_setopt(easy, CURLOPT_CA_CACHE_TIMEOUT, 0L);
#endif
	curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, m);
	if (curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, sslctx_cb) != CURLE_OK)
	{
		curl_easy_cleanup(easy);
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("libcurl does not support CURLOPT_SSL_CTX_FUNCTION")));
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
	EngineMulti *m;

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

	engine_follow_settings(engine);
	m = engine->current;
	easy = pool_get(engine);
	if (easy == NULL)
	{
		easy = curl_easy_init();
		if (easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
		easy_setup_constant(easy, m);
	}
	req->easy = easy;
	easy_setup_request(easy, req, m);
	req->started = GetCurrentTimestamp();
	if (curl_multi_add_handle(m->multi, easy) != CURLM_OK)
	{
		curl_easy_cleanup(easy);
		req->easy = NULL;
		elog(ERROR, "could not add a request to the libcurl multi handle");
	}
	dlist_push_tail(&engine->requests, &req->node);
	m->active++;
	engine->active++;
}

/* the wait events that stand for what curl wants of a socket */
static uint32
socket_wait_events(const EngineSocket *sock)
{
	uint32		ev = 0;

	if (sock->what & CURL_POLL_IN)
		ev |= WL_SOCKET_READABLE;
	if (sock->what & CURL_POLL_OUT)
		ev |= WL_SOCKET_WRITEABLE;
	return ev;
}

/* a new wait event set: latch, postmaster death and every socket of curl's */
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
		/* the event carries the generation whose multi handle the socket is in */
		engine->socks[i].pos = AddWaitEventToSet(engine->wes, socket_wait_events(&engine->socks[i]),
												 engine->socks[i].fd, NULL, engine->socks[i].owner);
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
engine_socket_action(WhEngine *engine, EngineMulti *m, curl_socket_t fd, int mask,
					 bool *corked)
{
	int			running;

	if (!*corked)
	{
		engine_cork(engine, true);
		*corked = true;
	}
	curl_multi_socket_action(m->multi, fd, mask, &running);
}

/* the earliest timer of the generations, or false if none is set */
static bool
engine_next_timer(WhEngine *engine, TimestampTz *deadline)
{
	bool		found = false;
	dlist_iter	iter;

	if (engine->current && engine->current->timer_set)
	{
		*deadline = engine->current->timer_deadline;
		found = true;
	}
	dlist_foreach(iter, &engine->retiring)
	{
		EngineMulti *m = dlist_container(EngineMulti, node, iter.cur);

		if (m->timer_set && (!found || m->timer_deadline < *deadline))
		{
			*deadline = m->timer_deadline;
			found = true;
		}
	}
	return found;
}

/* let a generation's curl act on its timer, if it is due */
static void
multi_timer_due(WhEngine *engine, EngineMulti *m, TimestampTz now, bool *corked)
{
	if (m->timer_set && now >= m->timer_deadline)
	{
		m->timer_set = false;
		engine_socket_action(engine, m, CURL_SOCKET_TIMEOUT, 0, corked);
	}
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
	TimestampTz deadline;
	TimestampTz now;
	dlist_iter	iter;

	if (engine->wes_dirty || engine->wes == NULL)
		rebuild_wait_set(engine);
	else
	{
		/* interest changes of known sockets are cheap modifications */
		for (i = 0; i < engine->nsocks; i++)
			ModifyWaitEvent(engine->wes, engine->socks[i].pos,
							socket_wait_events(&engine->socks[i]), NULL);
	}

	if (engine_next_timer(engine, &deadline))
	{
		long		secs;
		int			usecs;
		long		until;

		TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
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
			engine_socket_action(engine, (EngineMulti *) ev->user_data, ev->fd, mask, &corked);
		}
	}
	if (engine_next_timer(engine, &deadline) && (now = GetCurrentTimestamp()) >= deadline)
	{
		if (engine->current)
			multi_timer_due(engine, engine->current, now, &corked);
		dlist_foreach(iter, &engine->retiring)
			multi_timer_due(engine, dlist_container(EngineMulti, node, iter.cur), now, &corked);
	}
	if (corked)
		engine_cork(engine, false);
	return latch;
}

/* the next finished request of one generation, or NULL */
static WhRequest *
multi_next_done(WhEngine *engine, EngineMulti *m)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(m->multi, &left)) != NULL)
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

		/*
		 * An address refused by the open-socket check is the outcome only
		 * when no address could be connected to (libcurl tries a name's
		 * addresses in turn): a name with a private and a public address
		 * that was delivered over the public one is a success, and one whose
		 * public address then failed is that failure.
		 */
		if (req->blocked_reason != NULL && req->result != CURLE_COULDNT_CONNECT)
			req->blocked_reason = NULL;

		/* a ca_file that could not be loaded: say so, not libcurl's words */
		if (req->result == CURLE_SSL_CACERT_BADFILE && m->trust == NULL && m->trust_error)
			strlcpy(req->errbuf, m->trust_error, sizeof(req->errbuf));

		if (curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us) == CURLE_OK && total_us > 0)
			req->duration_ms = total_us / 1000.0;
		else
			req->duration_ms = (GetCurrentTimestamp() - req->started) / 1000.0;
		curl_multi_remove_handle(m->multi, easy);
		req->easy = NULL;
		free_request_lists(req);
		req->done = true;
		dlist_delete(&req->node);
		engine->active--;
		m->active--;
		if (m == engine->current)
		{
			/* nothing of this request may be used by the handle's next one */
			curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
			curl_easy_setopt(easy, CURLOPT_RESOLVE, NULL);
			pool_put(engine, easy);
		}
		else
		{
			/* a retired generation's handle, and perhaps its last request */
			curl_easy_cleanup(easy);
			if (m->active == 0)
			{
				dlist_delete(&m->node);
				multi_destroy(engine, m);
			}
		}
		return req;
	}
	return NULL;
}

/*
 * Return the next finished request (or NULL).  Its easy handle goes back to
 * the pool and its header list is freed.
 */
WhRequest *
wh_engine_next_done(WhEngine *engine)
{
	WhRequest  *req;
	dlist_mutable_iter iter;

	if (engine->current && (req = multi_next_done(engine, engine->current)) != NULL)
		return req;
	dlist_foreach_modify(iter, &engine->retiring)
	{
		req = multi_next_done(engine, dlist_container(EngineMulti, node, iter.cur));
		if (req != NULL)
			return req;
	}
	return NULL;
}

