/*-------------------------------------------------------------------------
 *
 * functions.c
 *	  SQL-callable functions that are not about payloads: the connection
 *	  test, install-time checks, webhook-ids and helpers of the SQL.
 *
 * The connection test runs in the calling backend (the wizard needs its
 * answer before it stores anything).  It uses the same engine, headers and
 * signing as the worker, waits on the backend's latch so a cancel or
 * statement_timeout interrupts it at once, and reports HTTP and transport
 * failures as data (ok = false), not as errors.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "mb/pg_wchar.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "http.h"
#include "payload.h"
#include "signing.h"
#include "validate.h"
#include "webhooks.h"

/* webhooks._check_preloaded(): refuse CREATE EXTENSION without shared_preload_libraries */
PG_FUNCTION_INFO_V1(webhooks_check_preloaded);
Datum
webhooks_check_preloaded(PG_FUNCTION_ARGS)
{
	if (!wh_loaded_at_preload)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the webhooks library is not loaded at server start"),
				 errdetail("The delivery worker and the commit wake-up need the library in shared_preload_libraries."),
				 errhint("Add 'webhooks' to shared_preload_libraries in postgresql.conf and restart the server.")));
	PG_RETURN_VOID();
}

/* webhooks._wake_worker(): wake the worker when the calling transaction commits */
PG_FUNCTION_INFO_V1(webhooks_wake_worker);
Datum
webhooks_wake_worker(PG_FUNCTION_ARGS)
{
	wh_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* argument argno as a C string; an error when it is NULL or blank */
static char *
required_text_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	char	   *s;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s is required", what)));
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (s[strspn(s, " \t\r\n")] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is required", what),
				 errdetail("It is empty.")));
	return s;
}

/*
 * webhooks.test_connection(target_url, event_type, auth_token, headers,
 *							secret, name, previous_secret)
 */
PG_FUNCTION_INFO_V1(webhooks_test_connection);
Datum
webhooks_test_connection(PG_FUNCTION_ARGS)
{
	char	   *url;
	const char *event_type;
	const WhEventType *et;
	char	   *auth_token = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	Jsonb	   *headers = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	char	   *secret;
	char	   *name = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	char	   *previous_secret = (PG_NARGS() < 7 || PG_ARGISNULL(6)) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(6));
	char	   *body;
	char		msg_id[64];
	uint8		rnd[8];
	MemoryContext cxt;
	WhEngine   *engine;
	WhRequest  *req;
	TupleDesc	tupdesc;
	Datum		values[8];
	bool		nulls[8] = {0};
	bool		ok;
	WhProblem	problem;
	TimestampTz started = GetCurrentTimestamp();

	/* the specification's order: fields filled, event type, URL */
	url = required_text_arg(fcinfo, 0, "target URL");
	event_type = required_text_arg(fcinfo, 1, "event type");
	et = wh_find_event_type(event_type);
	if (et == NULL)
		wh_check_event_type(event_type);	/* raises */
	secret = PG_ARGISNULL(4) ? wh_generate_secret() : text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (!wh_valid_target_url(url, &problem) ||
		!wh_valid_extra_headers(headers, auth_token != NULL, &problem) ||
		(auth_token != NULL && !wh_valid_auth_token(auth_token, &problem)) ||
		!wh_valid_secret(secret, false, &problem) ||
		(previous_secret != NULL && !wh_valid_secret(previous_secret, true, &problem)))
		wh_raise(&problem);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	body = wh_dummy_body(et);
	if (!pg_strong_random(rnd, sizeof(rnd)))
		elog(ERROR, "could not generate random bytes");
	snprintf(msg_id, sizeof(msg_id), "msg_test_%02x%02x%02x%02x%02x%02x%02x%02x",
			 rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);

	/* the engine's curl handles are freed with this context, even on error */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "webhooks connection test",
								ALLOCSET_DEFAULT_SIZES);
	engine = wh_engine_create(cxt);
	req = MemoryContextAllocZero(cxt, sizeof(WhRequest));
	req->url = url;
	req->body = body;

	pgstat_report_activity(STATE_RUNNING, "webhooks: connection test");
	for (;;)
	{
		req->headers = wh_build_headers(msg_id, body, secret, previous_secret, auth_token, headers);
		wh_engine_add(engine, req);
		while (!req->done)
		{
			wh_engine_wait(engine, 1000, PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
			(void) wh_engine_next_done(engine);
		}
		if (!req->h2_early_close || req->http1_only)
			break;
		/* an HTTP/2 answer libcurl lost: ask again over HTTP/1.1, as the worker does */
		req->http1_only = true;
	}

	ok = req->result == CURLE_OK && req->status >= 200 && req->status < 300 &&
		req->blocked_reason == NULL;
	if (req->response_truncated && req->status >= 200 && req->status < 300)
		ok = true;

	values[0] = BoolGetDatum(ok);
	values[1] = TimestampTzGetDatum(started);
	if (name)
		values[2] = CStringGetTextDatum(name);
	else
		nulls[2] = true;
	nulls[3] = true;			/* no webhook id yet */
	if (req->status > 0)
		values[4] = Int32GetDatum((int32) req->status);
	else
		nulls[4] = true;
	if (ok)
		nulls[5] = true;
	else
		values[5] = CStringGetTextDatum(wh_request_error_content(req));
	values[6] = CStringGetTextDatum(body);
	values[7] = Float8GetDatum(req->duration_ms);

	wh_engine_destroy(engine);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/* webhooks._json_or_null(body): the text as json when it is valid JSON, else NULL (for log rows) */
PG_FUNCTION_INFO_V1(webhooks_json_or_null);
Datum
webhooks_json_or_null(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	if (!wh_json_valid(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(t);
}

/* A new webhook-id: "msg_" and a UUIDv7 (see signing.c). */
PG_FUNCTION_INFO_V1(webhooks_new_msg_id);
Datum
webhooks_new_msg_id(PG_FUNCTION_ARGS)
{
	char		id[WH_MSG_ID_LEN + 1];

	wh_new_msg_id(id);
	id[WH_MSG_ID_LEN] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(id));
}

/* The webhook-id of event "offset" (0 = the first) of a batch. */
PG_FUNCTION_INFO_V1(webhooks_batch_msg_id);
Datum
webhooks_batch_msg_id(PG_FUNCTION_ARGS)
{
	char	   *base = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		offset = PG_GETARG_INT64(1);
	char		id[WH_MSG_ID_LEN + 1];

	if (!wh_msg_id_offset(base, offset, id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid batch webhook-id \"%s\"", base),
				 errdetail("A webhook-id made by the extension is \"msg_\" and 32 lowercase hexadecimal digits.")));
	PG_RETURN_TEXT_P(cstring_to_text(id));
}

/*
 * webhooks._log_retention_s(): the retention in seconds, for the history's
 * periods (the setting's text form has units that SQL would have to parse)
 */
PG_FUNCTION_INFO_V1(webhooks_log_retention_s);
Datum
webhooks_log_retention_s(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(wh_log_retention_s);
}
