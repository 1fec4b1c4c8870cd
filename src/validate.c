/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  The rules on what a webhook sends, each defined once: the target URL,
 *	  the extra headers, the auth token, the secrets and the payload.
 *
 * Every entry point calls these functions: the table guard (the trigger
 * webhooks._webhooks_guard, through the SQL-callable checks at the end of
 * this file), the wizard, the connection test, emit() and the trigger
 * function (payload size), and the worker, which checks every row again just
 * before it sends it, because a superuser can write rows that the guard
 * never saw.  A rule gives the same message everywhere (WhProblem): the
 * guard raises it, and a row the worker refuses goes dead with a log row
 * "rejected before sending: <the same message>".
 *
 * The URL rule itself is url.c's (pure C, fuzzed) and the form of a secret
 * signing.c's; this file turns their verdicts into these messages.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "compat.h"
#include "signing.h"
#include "url.h"
#include "validate.h"
#include "webhooks.h"

#define WH_MAX_EXTRA_HEADERS 32
#define WH_MAX_HEADER_NAME 256
#define WH_MAX_HEADER_VALUE 8192

/* fill *problem with an invalid_parameter_value error */
static bool
invalid(WhProblem *problem, char *message, const char *detail, const char *hint)
{
	problem->sqlerrcode = ERRCODE_INVALID_PARAMETER_VALUE;
	problem->message = message;
	problem->detail = detail;
	problem->hint = hint;
	return false;
}

/* is c a control character that no header line may carry (tab may)? */
static bool
is_forbidden_control(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

/*
 * Target URL: wh_url_check() (url.c) under the current
 * webhooks.allow_private_targets.
 */
bool
wh_valid_target_url(const char *url, WhProblem *problem)
{
	char		reason[WH_URL_REASON_LEN];
	WhUrlStatus st;

	st = wh_url_check(url, wh_allow_private_targets, NULL, reason, sizeof(reason));
	if (st == WH_URL_OK)
		return true;
	if (st == WH_URL_PRIVATE_ADDRESS || st == WH_URL_LOCAL_NAME)
		return invalid(problem, psprintf("invalid target URL: %s", reason),
					   "Webhook targets must be publicly accessible HTTPS addresses.",
					   "A superuser can set webhooks.allow_private_targets = on for tests and private networks.");
	return invalid(problem, psprintf("invalid target URL: %s", reason), NULL,
				   "A target URL looks like https://example.com/webhooks (https, a host, an optional port, no user name or password).");
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

/* may c appear in an HTTP header name (a "token" of RFC 9110)? */
static bool
is_token_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * What is wrong with extra headers, or NULL: a JSON object of at most 32
 * string values, names of 1 to 256 characters that are HTTP tokens and not
 * reserved, values of at most 8192 bytes without control characters but tab.
 */
static char *
extra_headers_problem(Jsonb *headers, bool has_auth_token)
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
			if (++count > WH_MAX_EXTRA_HEADERS)
				return psprintf("too many extra headers (at most %d)", WH_MAX_EXTRA_HEADERS);
			if (v.val.string.len == 0 || v.val.string.len > WH_MAX_HEADER_NAME)
				return psprintf("invalid header name \"%s\" (1 to %d characters)", name, WH_MAX_HEADER_NAME);
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
			if (v.val.string.len > WH_MAX_HEADER_VALUE)
				return psprintf("value of header \"%s\" is longer than %d bytes", name, WH_MAX_HEADER_VALUE);
			for (i = 0; i < v.val.string.len; i++)
				if (is_forbidden_control((unsigned char) v.val.string.val[i]))
					return psprintf("value of header \"%s\" contains a control character (CR, LF, NUL, ...)", name);
		}
	}
	return NULL;
}

/* Extra headers (NULL: none); has_auth_token reserves Authorization. */
bool
wh_valid_extra_headers(Jsonb *headers, bool has_auth_token, WhProblem *problem)
{
	char	   *why = extra_headers_problem(headers, has_auth_token);

	if (why == NULL)
		return true;
	return invalid(problem, psprintf("invalid extra headers: %s", why), NULL,
				   "Headers are a JSON object such as '{\"X-Source\": \"crm\"}'; "
				   "Host, Content-Type, Content-Length, Transfer-Encoding, User-Agent, "
				   "webhook-* and, with an auth token, Authorization are set by the extension.");
}

/* Auth token (not NULL): not empty, no control characters but tab. */
bool
wh_valid_auth_token(const char *token, WhProblem *problem)
{
	const char *detail = "An auth token is not empty and has no control characters other than tab.";
	const unsigned char *p;

	if (token[0] == '\0')
		return invalid(problem, pstrdup("invalid auth token: it is empty"), detail, NULL);
	for (p = (const unsigned char *) token; *p; p++)
		if (is_forbidden_control(*p))
			return invalid(problem, pstrdup("invalid auth token: it contains a control character (CR, LF, NUL, ...)"),
						   detail, NULL);
	return true;
}

/* A signing secret (not NULL): "whsec_" and base64 of 16 to 64 bytes. */
bool
wh_valid_secret(const char *secret, bool previous, WhProblem *problem)
{
	char	   *why = NULL;

	if (wh_secret_valid(secret, &why))
		return true;
	return invalid(problem,
				   pstrdup(previous ? "invalid previous webhook secret" : "invalid webhook secret"),
				   why, NULL);
}

/* A payload's size: at most webhooks.max_payload_size bytes. */
bool
wh_valid_payload_size(size_t len, WhProblem *problem)
{
	if (len <= (size_t) wh_max_payload_size)
		return true;
	problem->sqlerrcode = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
	problem->message = psprintf("payload is too large: %zu bytes, webhooks.max_payload_size is %d",
								len, wh_max_payload_size);
	problem->detail = NULL;
	problem->hint = NULL;
	return false;
}

/*
 * A payload's text: valid JSON, nested at most WH_JSON_MAX_DEPTH levels.
 * Bodies made by emit() and the trigger always are; rows written by hand
 * need not be.
 */
bool
wh_valid_payload_json(const char *body, size_t len, WhProblem *problem)
{
	if (wh_json_valid(body, len))
		return true;
	return invalid(problem,
				   psprintf("invalid payload: it is not valid JSON or is nested deeper than %d levels",
							WH_JSON_MAX_DEPTH),
				   NULL, NULL);
}

/*
 * Whether s is valid JSON.  The parser recurses once per nesting level and
 * raises a stack-depth ERROR on deep input; a hand-written queue row must
 * not be able to make the worker (or delete_webhook's log rows) fail, so
 * nesting is measured first, without recursion.
 */
bool
wh_json_valid(const char *s, size_t len)
{
	JsonLexContext *lex;
	int			depth = 0;
	bool		in_string = false;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > WH_JSON_MAX_DEPTH)
				return false;
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	lex = wh_make_json_lex((char *) s, len, GetDatabaseEncoding(), false);
	return pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS;
}

/*
 * The worker's send-time check of a claimed row, the target URL apart (the
 * worker remembers the URLs it found valid): the webhook-id, the payload,
 * the secrets, the auth token and the extra headers, in that order.
 */
bool
wh_valid_delivery(const char *msg_id, const char *body,
				  const char *secret, const char *previous_secret,
				  const char *auth_token, Jsonb *headers, WhProblem *problem)
{
	const char *msg_id_problem = wh_msg_id_problem(msg_id);
	size_t		body_len = strlen(body);

	if (msg_id_problem != NULL)
		return invalid(problem, pstrdup(msg_id_problem), NULL, NULL);
	return wh_valid_payload_size(body_len, problem) &&
		wh_valid_payload_json(body, body_len, problem) &&
		wh_valid_secret(secret, false, problem) &&
		(previous_secret == NULL || wh_valid_secret(previous_secret, true, problem)) &&
		(auth_token == NULL || wh_valid_auth_token(auth_token, problem)) &&
		wh_valid_extra_headers(headers, auth_token != NULL, problem);
}

/* the log text of a delivery the worker refuses: "rejected before sending: <message>" */
char *
wh_refusal(const WhProblem *problem)
{
	return psprintf("rejected before sending: %s", problem->message);
}

/* raise *problem as an ERROR */
void
wh_raise(const WhProblem *problem)
{
	ereport(ERROR,
			(errcode(problem->sqlerrcode),
			 errmsg_internal("%s", problem->message),
			 problem->detail ? errdetail_internal("%s", problem->detail) : 0,
			 problem->hint ? errhint("%s", problem->hint) : 0));
	pg_unreachable();
}

/* ---------------------------------------------------------------------
 * SQL-callable checks, used by the table guard and the wizard
 * ---------------------------------------------------------------------
 */

/* webhooks.url_problem(url, allow_private): why a URL is refused, or NULL */
PG_FUNCTION_INFO_V1(webhooks_url_problem);
Datum
webhooks_url_problem(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		allow_private = PG_ARGISNULL(1) ? wh_allow_private_targets : PG_GETARG_BOOL(1);
	char		reason[WH_URL_REASON_LEN];

	if (wh_url_check(url, allow_private, NULL, reason, sizeof(reason)) == WH_URL_OK)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(reason));
}

/* webhooks._check_target_url(url): raise the error of an invalid URL */
PG_FUNCTION_INFO_V1(webhooks_check_target_url);
Datum
webhooks_check_target_url(PG_FUNCTION_ARGS)
{
	WhProblem	problem;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("target URL is required")));
	if (!wh_valid_target_url(text_to_cstring(PG_GETARG_TEXT_PP(0)), &problem))
		wh_raise(&problem);
	PG_RETURN_VOID();
}

/* webhooks._check_headers(headers, has_auth_token) */
PG_FUNCTION_INFO_V1(webhooks_check_headers);
Datum
webhooks_check_headers(PG_FUNCTION_ARGS)
{
	WhProblem	problem;

	if (!PG_ARGISNULL(0) &&
		!wh_valid_extra_headers(PG_GETARG_JSONB_P(0), !PG_ARGISNULL(1) && PG_GETARG_BOOL(1), &problem))
		wh_raise(&problem);
	PG_RETURN_VOID();
}

/* webhooks._check_auth_token(auth_token): NULL (no token) passes */
PG_FUNCTION_INFO_V1(webhooks_check_auth_token);
Datum
webhooks_check_auth_token(PG_FUNCTION_ARGS)
{
	WhProblem	problem;

	if (!PG_ARGISNULL(0) && !wh_valid_auth_token(text_to_cstring(PG_GETARG_TEXT_PP(0)), &problem))
		wh_raise(&problem);
	PG_RETURN_VOID();
}

/*
 * webhooks._check_secret(secret) and, since 1.1, _check_secret(secret,
 * previous): a secret must not be NULL; previous names the previous one.
 */
PG_FUNCTION_INFO_V1(webhooks_check_secret);
Datum
webhooks_check_secret(PG_FUNCTION_ARGS)
{
	bool		previous = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	WhProblem	problem;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("webhook secret must not be null")));
	if (!wh_valid_secret(text_to_cstring(PG_GETARG_TEXT_PP(0)), previous, &problem))
		wh_raise(&problem);
	PG_RETURN_VOID();
}
