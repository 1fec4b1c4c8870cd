/*-------------------------------------------------------------------------
 *
 * http_request.c
 *	  What one webhook request says, and what a failed one means as text.
 *
 * It owns the headers of a signed attempt (webhook-id, webhook-timestamp,
 * webhook-signature, the auth token and the webhook's extra headers, with
 * the body signed by signing.c) and the error content a log row gets for a
 * failed attempt.  Sending is http_engine.c's; whether the headers may be
 * sent at all, validate.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "mb/pg_wchar.h"

#include "http.h"
#include "signing.h"

/* curl_slist_append(), raising an error (and freeing list) when out of memory */
struct curl_slist *
wh_curl_slist_append(struct curl_slist *list, const char *line)
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
				list = wh_curl_slist_append(list, line.data);
			}
		}
	}

	list = wh_curl_slist_append(list, "Content-Type: application/json");
	list = wh_curl_slist_append(list, "Expect:");
	resetStringInfo(&line);
	appendStringInfo(&line, "webhook-id: %s", msg_id);
	list = wh_curl_slist_append(list, line.data);
	resetStringInfo(&line);
	appendStringInfo(&line, "webhook-timestamp: " INT64_FORMAT, ts);
	list = wh_curl_slist_append(list, line.data);
	resetStringInfo(&line);
	appendStringInfo(&line, "webhook-signature: %s", sig);
	list = wh_curl_slist_append(list, line.data);
	if (auth_token != NULL && auth_token[0] != '\0')
	{
		resetStringInfo(&line);
		appendStringInfo(&line, "Authorization: Bearer %s", auth_token);
		list = wh_curl_slist_append(list, line.data);
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
