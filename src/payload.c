/*-------------------------------------------------------------------------
 *
 * payload.c
 *	  Event types, payload validation, webhooks.emit() and the trigger
 *	  function webhooks.enqueue_event().
 *
 * The nine event types of the specification live here, as the single source
 * of truth; the install script seeds webhooks.event_types from
 * webhooks._builtin_event_types().  Payloads are flat JSON objects with
 * "eventType" first, then "eventDate" (ISO 8601, UTC, "Z"), then the type's
 * fields in the specification's order.  jsonb does not keep key order, so
 * the exact body to send is rendered here once, at enqueue time, and stored
 * as text: every attempt sends (and signs) the same bytes.
 *
 * Enqueueing is an INSERT into webhooks.deliveries inside the caller's
 * transaction, so a rollback (or a rolled-back savepoint) leaves nothing
 * behind, and a commit wakes the worker (see webhooks.c).  An event that
 * finds no active webhook is not stored but counted (unrouted.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "compat.h"
#include "payload.h"
#include "queue.h"
#include "unrouted.h"
#include "validate.h"
#include "webhooks.h"

#define EMAIL_FIELDS \
	{{"messageId", "message_id", WH_FIELD_INTEGER}, \
	 {"subscriberId", "subscriber_id", WH_FIELD_INTEGER}, \
	 {"subscriberEmail", "subscriber_email", WH_FIELD_STRING}}
#define LIST_FIELDS \
	{{"listId", "list_id", WH_FIELD_INTEGER}, \
	 {"subscriberId", "subscriber_id", WH_FIELD_INTEGER}, \
	 {"subscriberEmail", "subscriber_email", WH_FIELD_STRING}}

/* The specification's event types, with its example values. */
static const WhEventType event_types[] = {
	{"EmailSends", "Email — Send", "Triggered when an email is sent.",
	 3, EMAIL_FIELDS, {145413, 6552353}},
	{"EmailClicks", "Email — Click", "Triggered when a subscriber clicks a link in the email.",
	 3, EMAIL_FIELDS, {148000, 1}},
	{"EmailOpens", "Email — Open", "Triggered when a subscriber opens an email.",
	 3, EMAIL_FIELDS, {149211, 5823952}},
	{"EmailDeliveries", "Email — Delivery", "Triggered when an email is delivered to the recipient.",
	 3, EMAIL_FIELDS, {145413, 6552353}},
	{"EmailBounces", "Email — Bounce", "Triggered when an email cannot be delivered (error).",
	 3, EMAIL_FIELDS, {138876, 149448}},
	{"EmailComplaints", "Email — Complaint", "Triggered when a recipient reports an email as spam.",
	 3, EMAIL_FIELDS, {149141, 49858}},
	{"Subscriptions", "Subscription", "Triggered when a new subscriber joins the mailing list.",
	 3, LIST_FIELDS, {7477, 6552356}},
	{"Confirmations", "Subscription Confirmation",
	 "Triggered when a subscriber confirms their subscription to the mailing list.",
	 4, {{"messageId", "message_id", WH_FIELD_INTEGER},
		 {"subscriberId", "subscriber_id", WH_FIELD_INTEGER},
		 {"subscriberEmail", "subscriber_email", WH_FIELD_STRING},
	 {"listId", "list_id", WH_FIELD_INTEGER}}, {149212, 5823952, 0, 7480}},
	{"Unsubscriptions", "Unsubscription", "Triggered when a subscriber unsubscribes from the mailing list.",
	 3, LIST_FIELDS, {7468, 4723542}},
};

#define N_EVENT_TYPES lengthof(event_types)
StaticAssertDecl(lengthof(event_types) == WH_N_EVENT_TYPES,
				 "WH_N_EVENT_TYPES must count event_types[]");

/*
 * A statement's events are stored in batch rows of at most this size.  The
 * worker splits one batch per short transaction, and its requests in flight
 * wait meanwhile: 1,000 events are a few milliseconds of splitting, where
 * 10,000 held other webhooks' requests for 80 ms at a time.
 */
#define WH_BATCH_MAX_EVENTS 1000
#define WH_BATCH_MAX_BYTES (16 * 1024 * 1024)
#define EXAMPLE_EMAIL "test@test.com"

/* the event type named name, or NULL */
const WhEventType *
wh_find_event_type(const char *name)
{
	int			i;

	for (i = 0; i < N_EVENT_TYPES; i++)
		if (strcmp(event_types[i].name, name) == 0)
			return &event_types[i];
	return NULL;
}

/* event types by position, 0 to WH_N_EVENT_TYPES - 1, and back */
const WhEventType *
wh_event_type_at(int index)
{
	Assert(index >= 0 && index < N_EVENT_TYPES);
	return &event_types[index];
}

int
wh_event_type_index(const WhEventType *et)
{
	Assert(et >= event_types && et < event_types + N_EVENT_TYPES);
	return (int) (et - event_types);
}

/* the event type named name, or an error naming the known ones */
static const WhEventType *
lookup_event_type(const char *name)
{
	const WhEventType *et = wh_find_event_type(name);

	if (et == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown event type \"%s\"", name),
				 errhint("The event types are listed in webhooks.event_types, e.g. EmailOpens.")));
	return et;
}

/* raise the error of an unknown event type */
void
wh_check_event_type(const char *name)
{
	(void) lookup_event_type(name);
}

/* the JSON type of a field, as the error messages name it */
static const char *
field_type_name(WhFieldType t)
{
	return t == WH_FIELD_INTEGER ? "integer" : "string";
}

/* ISO 8601 in UTC with microseconds and a "Z" */
void
wh_format_event_date(StringInfo buf, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("event date is out of range")));
	if (tm.tm_year < 1 || tm.tm_year > 9999)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("event date is out of range"),
				 errdetail("Event dates must fall in the years 1 to 9999.")));
	appendStringInfo(buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
					 tm.tm_year, tm.tm_mon, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

/*
 * Text dates (emit()'s "eventDate") are ISO 8601 and nothing else, read
 * without any session setting: DateStyle's field order (05/10/2024),
 * TimeZone (a string without a zone) and the zone abbreviations
 * (timezone_abbreviations) would otherwise make the same call render
 * different bodies in different sessions.  The accepted form:
 *
 *	  YYYY-MM-DD [ (T|space) HH:MM [:SS [.fraction]] [ Z | +HH[:MM] | -HH[:MM] | +HHMM | -HHMM ] ]
 *
 * T and Z may be lower case; without a zone the time is UTC; the fraction
 * (any number of digits) is rounded half up to microseconds.
 */
#define EVENT_DATE_HINT \
	"Write ISO 8601: YYYY-MM-DD, optionally followed by T or a space, HH:MM[:SS[.fraction]] and Z, +HH[:MM] or -HH[:MM]; without a zone the time is UTC. For example \"2024-05-10T13:28:23.209375Z\"."

typedef enum EventDateParse
{
	EVENT_DATE_OK,
	EVENT_DATE_BAD_FORM,		/* not the ISO 8601 form above */
	EVENT_DATE_BAD_FIELD		/* the form, with a field out of range */
} EventDateParse;

/* n decimal digits at *p into *value, advancing *p */
static bool
take_digits(const char **p, int n, int *value)
{
	int			v = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*value = v;
	return true;
}

/* the character c at *p, advancing *p */
static bool
take_char(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

/*
 * Parse an eventDate string, without throwing.  On EVENT_DATE_BAD_FIELD,
 * *detail says which field is out of range.
 */
static EventDateParse
parse_event_date(const char *str, TimestampTz *result, const char **detail)
{
	const char *p = str;
	int			year,
				mon,
				mday;
	int			hour = 0,
				min = 0,
				sec = 0,
				usec = 0;
	int			tz_sign = 0,
				tz_hour = 0,
				tz_min = 0;

	if (!take_digits(&p, 4, &year) || !take_char(&p, '-') ||
		!take_digits(&p, 2, &mon) || !take_char(&p, '-') ||
		!take_digits(&p, 2, &mday))
		return EVENT_DATE_BAD_FORM;
	if (*p != '\0')
	{
		if (*p != 'T' && *p != 't' && *p != ' ')
			return EVENT_DATE_BAD_FORM;
		p++;
		if (!take_digits(&p, 2, &hour) || !take_char(&p, ':') ||
			!take_digits(&p, 2, &min))
			return EVENT_DATE_BAD_FORM;
		if (take_char(&p, ':'))
		{
			if (!take_digits(&p, 2, &sec))
				return EVENT_DATE_BAD_FORM;
			if (take_char(&p, '.'))
			{
				int			ndigits = 0;

				for (; *p >= '0' && *p <= '9'; p++, ndigits++)
				{
					if (ndigits < 6)
						usec = usec * 10 + (*p - '0');
					else if (ndigits == 6 && *p >= '5')
						usec++;		/* rounds half up; may reach 1000000 */
				}
				if (ndigits == 0)
					return EVENT_DATE_BAD_FORM;
				for (; ndigits < 6; ndigits++)
					usec *= 10;
			}
		}
		if (take_char(&p, 'Z') || take_char(&p, 'z'))
			tz_sign = 0;
		else if (*p == '+' || *p == '-')
		{
			tz_sign = (*p == '-') ? -1 : 1;
			p++;
			if (!take_digits(&p, 2, &tz_hour))
				return EVENT_DATE_BAD_FORM;
			if (take_char(&p, ':'))
			{
				if (!take_digits(&p, 2, &tz_min))
					return EVENT_DATE_BAD_FORM;
			}
			else if (*p != '\0' && !take_digits(&p, 2, &tz_min))
				return EVENT_DATE_BAD_FORM;
		}
	}
	if (*p != '\0')
		return EVENT_DATE_BAD_FORM;

	if (year < 1)
		*detail = "The year must be 0001 to 9999.";
	else if (mon < 1 || mon > 12)
		*detail = "The month must be 01 to 12.";
	else if (mday < 1 || mday > day_tab[isleap(year) ? 1 : 0][mon - 1])
		*detail = "The day does not exist in that month.";
	else if (hour > 23)
		*detail = "The hour must be 00 to 23.";
	else if (min > 59)
		*detail = "The minutes must be 00 to 59.";
	else if (sec > 59)
		*detail = "The seconds must be 00 to 59.";
	else if (tz_hour > MAX_TZDISP_HOUR || tz_min > 59)
		*detail = "The zone offset must be at most 15:59 hours.";
	else
	{
		int64		days = date2j(year, mon, mday) - POSTGRES_EPOCH_JDATE;
		int64		secs = ((int64) hour * MINS_PER_HOUR + min) * SECS_PER_MINUTE + sec -
			(int64) tz_sign * (tz_hour * MINS_PER_HOUR + tz_min) * SECS_PER_MINUTE;

		/* years 1 to 9999 with an offset under 16 h: no overflow */
		*result = days * USECS_PER_DAY + secs * USECS_PER_SEC + usec;
		return EVENT_DATE_OK;
	}
	return EVENT_DATE_BAD_FIELD;
}

/* raise the error of a body over webhooks.max_payload_size */
static void
check_body_size(StringInfo body)
{
	WhProblem	problem;

	if (!wh_valid_payload_size(body->len, &problem))
		wh_raise(&problem);
}

/* integral numeric as text, or NULL when it has a fractional part */
static char *
integral_numeric_text(Numeric num)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
	const char *p = s;

	if (*p == '-')
		p++;
	if (*p == '\0' || strspn(p, "0123456789") != strlen(p) || strlen(p) > 18)
		return NULL;
	return s;
}

/*
 * Validate a jsonb payload against an event type and render the body.
 * eventType and eventDate are filled in when absent; a mismatched eventType,
 * an unknown key, a missing field or one of the wrong JSON type is an error.
 */
char *
wh_build_body(const WhEventType *et, Jsonb *payload)
{
	StringInfoData buf;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue *jv;
	TimestampTz event_date;
	int			i;

	if (payload == NULL || !JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s payload must be a JSON object", et->name)));

	/* every key must be known, every value a scalar */
	it = JsonbIteratorInit(&payload->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		bool		known;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		known = strcmp(key, "eventType") == 0 || strcmp(key, "eventDate") == 0;
		for (i = 0; i < et->nfields && !known; i++)
			known = strcmp(key, et->fields[i].name) == 0;
		if (!known)
		{
			StringInfoData names;

			initStringInfo(&names);
			appendStringInfoString(&names, "eventType, eventDate");
			for (i = 0; i < et->nfields; i++)
				appendStringInfo(&names, ", %s", et->fields[i].name);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s payload has an unknown field \"%s\"", et->name, key),
					 errdetail("%s payloads have exactly these fields: %s.", et->name, names.data)));
		}
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"eventType\":");
	escape_json(&buf, et->name);

	jv = getKeyJsonValueFromContainer(&payload->root, "eventType", 9, NULL);
	if (jv != NULL && jv->type != jbvNull)
	{
		if (jv->type != jbvString ||
			jv->val.string.len != strlen(et->name) ||
			strncmp(jv->val.string.val, et->name, jv->val.string.len) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("payload eventType does not match the event type \"%s\"", et->name),
					 errdetail("The payload says %s.",
							   jv->type == jbvString ?
							   pnstrdup(jv->val.string.val, jv->val.string.len) :
							   "a value that is not a string")));
	}

	appendStringInfoString(&buf, ",\"eventDate\":\"");
	jv = getKeyJsonValueFromContainer(&payload->root, "eventDate", 9, NULL);
	if (jv == NULL || jv->type == jbvNull)
		event_date = GetCurrentTransactionStartTimestamp();
	else
	{
		char	   *s;
		const char *detail = NULL;

		if (jv->type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s payload field \"eventDate\" must be a string", et->name),
					 errhint(EVENT_DATE_HINT)));
		s = pnstrdup(jv->val.string.val, jv->val.string.len);
		switch (parse_event_date(s, &event_date, &detail))
		{
			case EVENT_DATE_OK:
				break;
			case EVENT_DATE_BAD_FORM:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
						 errmsg("%s payload field \"eventDate\" is not an ISO 8601 date and time: \"%s\"",
								et->name, s),
						 errdetail("Dates that depend on DateStyle or TimeZone, zone names and words such as \"now\" are not accepted."),
						 errhint(EVENT_DATE_HINT)));
				break;
			case EVENT_DATE_BAD_FIELD:
				ereport(ERROR,
						(errcode(ERRCODE_DATETIME_FIELD_OVERFLOW),
						 errmsg("%s payload field \"eventDate\" is out of range: \"%s\"",
								et->name, s),
						 errdetail_internal("%s", detail),
						 errhint(EVENT_DATE_HINT)));
				break;
		}
	}
	wh_format_event_date(&buf, event_date);
	appendStringInfoChar(&buf, '"');

	for (i = 0; i < et->nfields; i++)
	{
		const WhField *f = &et->fields[i];

		jv = getKeyJsonValueFromContainer(&payload->root, f->name, strlen(f->name), NULL);
		if (jv == NULL || jv->type == jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s payload lacks the required field \"%s\"", et->name, f->name),
					 errdetail("\"%s\" must be a JSON %s.", f->name, field_type_name(f->type))));
		appendStringInfo(&buf, ",\"%s\":", f->name);
		if (f->type == WH_FIELD_INTEGER)
		{
			char	   *s = NULL;

			if (jv->type == jbvNumeric)
				s = integral_numeric_text(jv->val.numeric);
			if (s == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s payload field \"%s\" must be an integer", et->name, f->name),
						 errdetail("A JSON number without a fractional part of at most 18 digits is expected.")));
			appendStringInfoString(&buf, s);
		}
		else
		{
			char	   *s;

			if (jv->type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s payload field \"%s\" must be a string", et->name, f->name)));
			s = pnstrdup(jv->val.string.val, jv->val.string.len);
			escape_json(&buf, s);
		}
	}
	appendStringInfoChar(&buf, '}');
	check_body_size(&buf);
	return buf.data;
}

/* The specification's example payload of an event type, dated "date". */
static char *
example_body(const WhEventType *et, const char *date)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"eventType\":");
	escape_json(&buf, et->name);
	appendStringInfo(&buf, ",\"eventDate\":\"%s\"", date);
	for (i = 0; i < et->nfields; i++)
	{
		if (et->fields[i].type == WH_FIELD_INTEGER)
			appendStringInfo(&buf, ",\"%s\":" INT64_FORMAT, et->fields[i].name, et->example[i]);
		else
			appendStringInfo(&buf, ",\"%s\":\"%s\"", et->fields[i].name, EXAMPLE_EMAIL);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* The connection test's dummy payload: the spec's example, dated now. */
char *
wh_dummy_body(const WhEventType *et)
{
	StringInfoData date;

	initStringInfo(&date);
	wh_format_event_date(&date, GetCurrentTimestamp());
	return example_body(et, date.data);
}

/* ---------------------------------------------------------------------
 * Storing deliveries
 * ---------------------------------------------------------------------
 */

/*
 * The search_path of the enqueue path's SPI statements: the batch INSERT,
 * and the delivery INSERT when the queue table has triggers (otherwise
 * queue.c writes the row without SQL).  The SQL functions set it already
 * (SET search_path), then this costs a string comparison.
 */
#define WH_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

static int
safe_search_path_begin(void)
{
	int			nestlevel;

	if (namespace_search_path != NULL &&
		strcmp(namespace_search_path, WH_SAFE_SEARCH_PATH) == 0)
		return -1;
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", WH_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

static void
safe_search_path_end(int nestlevel)
{
	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
}

/* SPI_connect with that search_path; the GUC nest level to end it with */
static int
spi_begin(void)
{
	int			nestlevel = safe_search_path_begin();

	SPI_connect();
	return nestlevel;
}

static void
spi_end(int nestlevel)
{
	SPI_finish();
	safe_search_path_end(nestlevel);
}

static SPIPlanPtr plan_insert_one = NULL;
static SPIPlanPtr plan_insert_batch = NULL;

/* the last active-webhook lookup, valid for the rest of its command */
static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
static CommandId cached_cid = InvalidCommandId;
static char cached_type[64];
static int64 cached_id = 0;

/*
 * The active webhook for an event type, or 0 (queue.c reads it without
 * SQL).  Cached for the rest of the current command: a multi-row INSERT
 * with a row trigger asks once.
 */
static int64
active_webhook_id(const char *event_type)
{
	if (cached_lxid == wh_my_lxid() && cached_cid == GetCurrentCommandId(false) &&
		strcmp(cached_type, event_type) == 0)
		return cached_id;
	cached_id = wh_queue_active_webhook(event_type);
	cached_lxid = wh_my_lxid();
	cached_cid = GetCurrentCommandId(false);
	strlcpy(cached_type, event_type, sizeof(cached_type));
	return cached_id;
}

/*
 * Queue one delivery of body to the webhook; its id.  queue.c writes the
 * row without SQL; a queue table with triggers (or row-level security, or
 * generated columns) gets the SQL INSERT, which honours them.
 */
static int64
insert_one(int64 webhook_id, const char *event_type, const char *body)
{
	Oid			argtypes[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		args[3];
	bool		isnull;
	int			rc;
	int64		id;
	int			nestlevel;

	if (wh_queue_insert(webhook_id, event_type, body, &id))
	{
		wh_announce_at_commit();
		return id;
	}

	nestlevel = spi_begin();
	if (plan_insert_one == NULL)
		plan_insert_one = wh_keep_plan("INSERT INTO webhooks.deliveries (webhook_id, event_type, body) "
										"VALUES ($1, $2, $3) RETURNING id",
										3, argtypes);
	args[0] = Int64GetDatum(webhook_id);
	args[1] = CStringGetTextDatum(event_type);
	args[2] = CStringGetTextDatum(body);
	rc = SPI_execute_plan(plan_insert_one, args, NULL, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not enqueue a delivery: %s", SPI_result_code_string(rc));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	spi_end(nestlevel);
	wh_announce_at_commit();
	return id;
}

/*
 * Store the bodies of a multi-row statement as one compact batch row
 * (newline-separated, lz4-compressed by TOAST): writing one small row instead
 * of one queue row per event is what keeps bulk enqueueing cheap.  The
 * worker splits batches into deliveries (webhooks._expand_batches()).
 */
static void
insert_batch(int64 webhook_id, const char *event_type, StringInfo bodies, int n)
{
	Oid			argtypes[4] = {INT8OID, TEXTOID, INT4OID, TEXTOID};
	Datum		args[4];
	int			rc;
	int			nestlevel = spi_begin();

	if (plan_insert_batch == NULL)
		plan_insert_batch = wh_keep_plan("INSERT INTO webhooks.event_batches (webhook_id, event_type, events, bodies) "
										  "VALUES ($1, $2, $3, $4)",
										  4, argtypes);
	args[0] = Int64GetDatum(webhook_id);
	args[1] = CStringGetTextDatum(event_type);
	args[2] = Int32GetDatum(n);
	args[3] = PointerGetDatum(cstring_to_text_with_len(bodies->data, bodies->len));
	rc = SPI_execute_plan(plan_insert_batch, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not enqueue a batch of deliveries: %s", SPI_result_code_string(rc));
	pfree(DatumGetPointer(args[3]));
	spi_end(nestlevel);
	wh_batches_at_commit();
}

/* ---------------------------------------------------------------------
 * Gathering the row trigger's events
 *
 * A row trigger used to store each event with its own SPI INSERT into the
 * queue, which made a 100,000-row INSERT about ten times as slow as without
 * the trigger.  Now the trigger only renders the body and appends it to a
 * group in backend memory, one group per (subtransaction level, webhook,
 * event type, user); the groups are stored when the statement ends:
 *
 *	- a group of one event as a plain delivery row (a single-row INSERT is
 *	  delivered without waiting for the worker to split a batch), a larger
 *	  one as one webhooks.event_batches row, like the statement trigger's;
 *	  a group reaching WH_BATCH_MAX_EVENTS is stored at once, by the trigger,
 *	  so memory stays bounded however many rows a statement inserts;
 *	- "when the statement ends" is the ExecutorEnd of a statement that can
 *	  fire triggers (ExecutorFinish has run its AFTER ROW triggers), the end
 *	  of a utility statement (COPY FROM fires them inside CopyFrom, SET
 *	  CONSTRAINTS fires deferred ones), and, as a safety net, PRE_COMMIT and
 *	  PRE_PREPARE (deferred constraint triggers fire at commit, after the
 *	  last statement) -- see webhooks.c for the hooks;
 *	- a statement stores only what it gathered itself, or statements inside
 *	  it: a group remembers the depth of statements running (wh_exec_depth,
 *	  counted by the hooks) when it was started, and a statement ending at
 *	  depth d stores the groups of depth > d.  An audit trigger that inserts
 *	  a row for each row of a big INSERT thus stores its own statement's
 *	  events, not the big INSERT's gathered so far one at a time;
 *	- only the groups of the current subtransaction level are stored: a
 *	  statement inside a savepoint (or a PL/pgSQL EXCEPTION block) must not
 *	  store what its parent gathered, which would vanish with a rollback to
 *	  the savepoint.  A released savepoint hands its groups to its parent;
 *	  a rolled-back one frees them; the end of the transaction (commit,
 *	  prepare or abort) resets the memory context that holds them all;
 *	- storing runs as the user the trigger function ran as (it is SECURITY
 *	  DEFINER) with the function's search_path, and an error while storing
 *	  is an error of the statement (or of COMMIT): the transaction fails,
 *	  nothing is dropped silently.
 *
 * emit() keeps its immediate INSERT: it returns the delivery's id.
 * ---------------------------------------------------------------------
 */

typedef struct GatheredGroup
{
	struct GatheredGroup *next;
	int			nestlevel;		/* subtransaction level that gathered them */
	int			depth;			/* wh_exec_depth when they were gathered */
	int64		webhook_id;
	const WhEventType *et;
	Oid			userid;			/* the trigger function's user */
	int			n;				/* events in bodies */
	StringInfoData bodies;		/* newline-separated */
} GatheredGroup;

static MemoryContext gather_cxt = NULL;
static GatheredGroup *gathered = NULL;

int			wh_exec_depth = 0;

/* set while a group is stored: the INSERT's own ExecutorEnd must not store */
static bool storing = false;

/* store a group's events: one delivery row, or one batch row */
static void
store_group(GatheredGroup *g)
{
	Assert(!storing);
	storing = true;
	PG_TRY();
	{
		if (g->n == 1)
			(void) insert_one(g->webhook_id, g->et->name, g->bodies.data);
		else if (g->n > 1)
			insert_batch(g->webhook_id, g->et->name, &g->bodies, g->n);
	}
	PG_FINALLY();
	{
		storing = false;
	}
	PG_END_TRY();
	g->n = 0;
	resetStringInfo(&g->bodies);
}

/*
 * Add one rendered event to the current level's group of its webhook.
 * Called by the row trigger, as the trigger function's user; a full group
 * is stored at once.
 */
static void
gather_event(int64 webhook_id, const WhEventType *et, StringInfo body)
{
	int			level = GetCurrentTransactionNestLevel();
	Oid			userid = GetUserId();
	GatheredGroup *g;

	for (g = gathered; g != NULL; g = g->next)
		if (g->nestlevel == level && g->depth == wh_exec_depth &&
			g->webhook_id == webhook_id && g->et == et && g->userid == userid)
			break;
	if (g == NULL)
	{
		MemoryContext old;

		if (gather_cxt == NULL)
			gather_cxt = AllocSetContextCreate(TopMemoryContext,
											   "webhooks gathered events",
											   ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(gather_cxt);
		g = palloc(sizeof(GatheredGroup));
		g->nestlevel = level;
		g->depth = wh_exec_depth;
		g->webhook_id = webhook_id;
		g->et = et;
		g->userid = userid;
		g->n = 0;
		initStringInfo(&g->bodies);
		MemoryContextSwitchTo(old);
		g->next = gathered;
		gathered = g;
	}
	/* bodies never contain a raw newline: escape_json escapes it */
	if (g->n > 0)
		appendStringInfoChar(&g->bodies, '\n');
	appendBinaryStringInfo(&g->bodies, body->data, body->len);
	g->n++;
	/* (not while storing: a trigger on the queue tables gathers meanwhile) */
	if ((g->n >= WH_BATCH_MAX_EVENTS || g->bodies.len >= WH_BATCH_MAX_BYTES) && !storing)
		store_group(g);
}

/* whether this transaction has gathered events not stored yet */
bool
wh_have_gathered(void)
{
	return gathered != NULL;
}

/*
 * Store the gathered events of the current subtransaction level that were
 * gathered deeper than depth (-1: all of them; see above for when).  Each
 * group is unlinked before it is stored: should the INSERT fail, the error
 * aborts the (sub)transaction at this level, which would discard the group
 * anyway.
 */
void
wh_store_gathered(int depth)
{
	int			level = GetCurrentTransactionNestLevel();
	GatheredGroup **link = &gathered;
	Oid			save_userid;
	int			save_sec_context;
	bool		pushed_snapshot = false;

	if (gathered == NULL || storing || !IsTransactionState())
		return;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	while (*link != NULL)
	{
		GatheredGroup *g = *link;

		if (g->nestlevel < level || g->depth <= depth)
		{
			link = &g->next;
			continue;
		}
		*link = g->next;
		/* at PRE_COMMIT, or after SET CONSTRAINTS, no snapshot is set */
		if (!ActiveSnapshotSet())
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			pushed_snapshot = true;
		}
		SetUserIdAndSecContext(g->userid, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		store_group(g);
		SetUserIdAndSecContext(save_userid, save_sec_context);
		pfree(g->bodies.data);
		pfree(g);
	}
	if (pushed_snapshot)
		PopActiveSnapshot();
}

/*
 * A subtransaction ends (called while it is still the current one): a
 * committed one's groups go to its parent, a rolled-back one's are freed.
 */
void
wh_gathered_subxact_end(bool committed)
{
	int			level = GetCurrentTransactionNestLevel();
	GatheredGroup **link = &gathered;

	while (*link != NULL)
	{
		GatheredGroup *g = *link;

		if (g->nestlevel < level)
			link = &g->next;
		else if (committed)
		{
			g->nestlevel = level - 1;
			link = &g->next;
		}
		else
		{
			*link = g->next;
			pfree(g->bodies.data);
			pfree(g);
		}
	}
}

/* The transaction ends: whatever is still gathered is forgotten. */
void
wh_gathered_xact_end(void)
{
	gathered = NULL;
	if (gather_cxt != NULL)
		MemoryContextReset(gather_cxt);
}

/* webhooks.emit(event_type, payload): queue one event; the delivery id, or NULL when unrouted */
PG_FUNCTION_INFO_V1(webhooks_emit);
Datum
webhooks_emit(PG_FUNCTION_ARGS)
{
	const WhEventType *et;
	char	   *body;
	int64		webhook_id;
	int64		id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event type must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null")));
	et = lookup_event_type(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	body = wh_build_body(et, PG_GETARG_JSONB_P(1));

	webhook_id = active_webhook_id(et->name);
	if (webhook_id == 0)
	{
		wh_count_unrouted(et, 1);
		PG_RETURN_NULL();
	}
	id = insert_one(webhook_id, et->name, body);
	PG_RETURN_INT64(id);
}

/* webhooks.build_payload(event_type, payload): the body emit() would queue */
PG_FUNCTION_INFO_V1(webhooks_build_payload);
Datum
webhooks_build_payload(PG_FUNCTION_ARGS)
{
	const WhEventType *et = lookup_event_type(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	char	   *body = wh_build_body(et, PG_GETARG_JSONB_P(1));

	PG_RETURN_TEXT_P(cstring_to_text(body));
}

/* webhooks.dummy_payload(event_type): the connection test's body */
PG_FUNCTION_INFO_V1(webhooks_dummy_payload);
Datum
webhooks_dummy_payload(PG_FUNCTION_ARGS)
{
	const WhEventType *et = lookup_event_type(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	PG_RETURN_TEXT_P(cstring_to_text(wh_dummy_body(et)));
}

/* ---------------------------------------------------------------------
 * The trigger
 * ---------------------------------------------------------------------
 */

typedef struct ColumnMap
{
	int			attnum[WH_MAX_FIELDS];	/* 0-based */
	Oid			typid[WH_MAX_FIELDS];
	FmgrInfo	outfunc[WH_MAX_FIELDS];
	const char *colname[WH_MAX_FIELDS];
	int			date_attnum;	/* -1 when the table has no date column */
	Oid			date_typid;
} ColumnMap;

/* the 0-based number of a live column named name, or -1 */
static int
find_column(TupleDesc tupdesc, const char *name)
{
	int			i;

	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return i;
	}
	return -1;
}

/* map the event type's fields to the table's columns, or raise why they do not fit */
static void
build_column_map(const WhEventType *et, Relation rel, ColumnMap *map)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	int			i;
	const char *date_names[] = {"event_date", "eventDate", "created_at"};

	for (i = 0; i < et->nfields; i++)
	{
		const WhField *f = &et->fields[i];
		int			att = find_column(tupdesc, f->column);
		Oid			typid;

		if (att < 0)
			att = find_column(tupdesc, f->name);
		if (att < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table \"%s\" has no column for the %s field \"%s\"",
							RelationGetRelationName(rel), et->name, f->name),
					 errdetail("The trigger webhooks.enqueue_event('%s') maps column \"%s\" to \"%s\".",
							   et->name, f->column, f->name),
					 errhint("Add a column named %s of type %s, or call webhooks.emit() yourself.",
							 f->column, f->type == WH_FIELD_INTEGER ? "bigint" : "text")));
		typid = getBaseType(TupleDescAttr(tupdesc, att)->atttypid);
		if (f->type == WH_FIELD_INTEGER &&
			typid != INT2OID && typid != INT4OID && typid != INT8OID && typid != NUMERICOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of table \"%s\" must have an integer type",
							NameStr(TupleDescAttr(tupdesc, att)->attname),
							RelationGetRelationName(rel)),
					 errdetail("It maps to the %s field \"%s\", a JSON integer; it has type %s.",
							   et->name, f->name, format_type_be(typid))));
		map->attnum[i] = att;
		map->typid[i] = typid;
		map->colname[i] = NameStr(TupleDescAttr(tupdesc, att)->attname);
		if (f->type == WH_FIELD_STRING)
		{
			Oid			outfn;
			bool		varlena;

			getTypeOutputInfo(typid, &outfn, &varlena);
			fmgr_info(outfn, &map->outfunc[i]);
		}
	}

	map->date_attnum = -1;
	for (i = 0; i < lengthof(date_names) && map->date_attnum < 0; i++)
	{
		int			att = find_column(tupdesc, date_names[i]);
		Oid			typid;

		if (att < 0)
			continue;
		typid = getBaseType(TupleDescAttr(tupdesc, att)->atttypid);
		if (typid != TIMESTAMPTZOID && typid != TIMESTAMPOID && typid != DATEOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of table \"%s\" must have a date or time stamp type",
							date_names[i], RelationGetRelationName(rel)),
					 errdetail("It becomes \"eventDate\"; it has type %s.", format_type_be(typid))));
		map->date_attnum = att;
		map->date_typid = typid;
	}
}

/*
 * eventDate of a row, formatted; a statement inserting many rows usually
 * gives them all the same time stamp, so the last one is remembered.  The
 * text depends on ts alone (UTC, no session setting), so the memory stays
 * right across statements and settings; only a formatted value is ever
 * remembered (an out-of-range ts, such as -infinity, always errors).
 */
static void
append_event_date(StringInfo buf, TimestampTz ts)
{
	static bool have_last = false;
	static TimestampTz last_ts;
	static char last_str[48];

	if (!have_last || ts != last_ts)
	{
		StringInfoData tmp;

		initStringInfo(&tmp);
		wh_format_event_date(&tmp, ts);
		strlcpy(last_str, tmp.data, sizeof(last_str));
		pfree(tmp.data);
		last_ts = ts;
		have_last = true;
	}
	appendStringInfoString(buf, last_str);
}

/*
 * Render one row's body into buf (reset first).
 *
 * eventDate never depends on the session: a timestamptz is an instant; a
 * timestamp without time zone is read as UTC wall-clock time and a date as
 * 00:00:00 UTC of that day (not through the session's TimeZone, which would
 * give the same row different dates in different sessions).
 */
static void
body_from_slot(StringInfo buf, const WhEventType *et, const ColumnMap *map,
			   TupleTableSlot *slot, const char *relname)
{
	TimestampTz event_date = GetCurrentTransactionStartTimestamp();
	bool		isnull;
	Datum		d;
	int			i;
	char		num[MAXINT8LEN + 1];

	resetStringInfo(buf);
	appendStringInfoString(buf, "{\"eventType\":\"");
	appendStringInfoString(buf, et->name);
	appendStringInfoString(buf, "\",\"eventDate\":\"");
	if (map->date_attnum >= 0)
	{
		d = slot_getattr(slot, map->date_attnum + 1, &isnull);
		if (!isnull)
		{
			if (map->date_typid == TIMESTAMPTZOID)
				event_date = DatumGetTimestampTz(d);
			else if (map->date_typid == TIMESTAMPOID)
				event_date = (TimestampTz) DatumGetTimestamp(d);
			else
				event_date = (TimestampTz) DatumGetTimestamp(DirectFunctionCall1(date_timestamp, d));
		}
	}
	append_event_date(buf, event_date);
	appendStringInfoChar(buf, '"');

	for (i = 0; i < et->nfields; i++)
	{
		const WhField *f = &et->fields[i];

		d = slot_getattr(slot, map->attnum[i] + 1, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("column \"%s\" of table \"%s\" is null",
							map->colname[i], relname),
					 errdetail("It maps to the required %s field \"%s\".", et->name, f->name)));
		appendStringInfoString(buf, ",\"");
		appendStringInfoString(buf, f->name);
		appendStringInfoString(buf, "\":");
		switch (map->typid[i])
		{
			case INT2OID:
				appendBinaryStringInfo(buf, num, pg_ltoa(DatumGetInt16(d), num));
				break;
			case INT4OID:
				appendBinaryStringInfo(buf, num, pg_ltoa(DatumGetInt32(d), num));
				break;
			case INT8OID:
				appendBinaryStringInfo(buf, num, pg_lltoa(DatumGetInt64(d), num));
				break;
			case NUMERICOID:
				{
					char	   *s = integral_numeric_text(DatumGetNumeric(d));

					if (s == NULL)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("column \"%s\" of table \"%s\" is not an integer",
										map->colname[i], relname),
								 errdetail("It maps to the %s field \"%s\", a JSON integer.",
										   et->name, f->name)));
					appendStringInfoString(buf, s);
					break;
				}
			case TEXTOID:
			case VARCHAROID:
				escape_json(buf, TextDatumGetCString(d));
				break;
			default:
				escape_json(buf, OutputFunctionCall((FmgrInfo *) &map->outfunc[i], d));
				break;
		}
	}
	appendStringInfoChar(buf, '}');
	check_body_size(buf);
}

/*
 * What a row trigger needs for every row of a statement, built at its first
 * row: the column map and a slot.  It lives in the trigger's FmgrInfo
 * (fn_extra, in the executor's memory), so it lasts for one statement.  The
 * slot's descriptor is a copy: a slot on the relation's own descriptor
 * would pin it, to be released by the resource owner of the first row.
 */
typedef struct RowTriggerCache
{
	Oid			owner;			/* the function's owner: see webhooks_enqueue_event */
	Oid			tgoid;
	TupleDesc	reldesc;		/* the relation's descriptor it was built for */
	const WhEventType *et;
	ColumnMap	map;
	TupleTableSlot *slot;
	StringInfoData body;
} RowTriggerCache;

/* the owner of a function (the extension's installer, for ours) */
static Oid
function_owner(Oid fn_oid)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn_oid);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

static RowTriggerCache *
row_trigger_cache(FunctionCallInfo fcinfo, const WhEventType *et, Relation rel)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	RowTriggerCache *cache = (RowTriggerCache *) fcinfo->flinfo->fn_extra;
	MemoryContext old;

	if (cache != NULL && cache->tgoid == td->tg_trigger->tgoid &&
		cache->reldesc == RelationGetDescr(rel) && cache->et == et)
		return cache;

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	if (cache == NULL)
	{
		cache = palloc0(sizeof(RowTriggerCache));
		initStringInfo(&cache->body);
	}
	build_column_map(et, rel, &cache->map);
	cache->slot = MakeSingleTupleTableSlot(CreateTupleDescCopy(RelationGetDescr(rel)),
										   &TTSOpsHeapTuple);
	cache->owner = function_owner(fcinfo->flinfo->fn_oid);
	cache->tgoid = td->tg_trigger->tgoid;
	cache->reldesc = RelationGetDescr(rel);
	cache->et = et;
	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = cache;
	return cache;
}

/* webhooks.enqueue_event(): the trigger function, in row or statement mode */
PG_FUNCTION_INFO_V1(webhooks_enqueue_event);
Datum
webhooks_enqueue_event(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	Trigger    *trigger;
	const WhEventType *et;
	Relation	rel;
	ColumnMap	map;
	int64		webhook_id;
	HeapTuple	rettuple = NULL;
	Oid			save_userid;
	int			save_sec_context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhooks.enqueue_event() must be called as a trigger")));
	td = (TriggerData *) fcinfo->context;
	trigger = td->tg_trigger;
	rel = td->tg_relation;

	/*
	 * Only an AFTER trigger sees a row that is really stored: a BEFORE
	 * trigger's row may still be skipped without an error (ON CONFLICT DO
	 * NOTHING, a later BEFORE trigger returning NULL), and an INSTEAD OF
	 * trigger's row is not stored by PostgreSQL at all.
	 */
	if (!TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on \"%s\" must be an AFTER trigger to call webhooks.enqueue_event()",
						trigger->tgname, RelationGetRelationName(rel)),
				 errdetail("It fired %s; the event could describe a row that is never stored.",
						   TRIGGER_FIRED_BEFORE(td->tg_event) ? "BEFORE" : "INSTEAD OF"),
				 errhint("Create it as an AFTER INSERT (or AFTER INSERT OR UPDATE) trigger on the table, FOR EACH ROW or FOR EACH STATEMENT with REFERENCING NEW TABLE.")));

	if (trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger \"%s\" on table \"%s\" must pass one event type to webhooks.enqueue_event()",
						trigger->tgname, RelationGetRelationName(rel)),
				 errhint("For example: EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens').")));
	et = lookup_event_type(trigger->tgargs[0]);

	if (TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("webhooks.enqueue_event() fires only on INSERT or UPDATE"),
				 errdetail("Trigger \"%s\" on table \"%s\" fired on %s.",
						   trigger->tgname, RelationGetRelationName(rel),
						   TRIGGER_FIRED_BY_DELETE(td->tg_event) ? "DELETE" : "TRUNCATE")));

	/*
	 * The function runs as its caller (SECURITY INVOKER since 1.3: a
	 * SECURITY DEFINER function's SET search_path, applied and undone on
	 * every row, cost most of what the row trigger added to an INSERT).
	 * What it reads and writes in schema webhooks it does as the function's
	 * owner, the way PostgreSQL's foreign-key triggers act as the table's
	 * owner: without SQL (queue.c), or with search_path pg_catalog, pg_temp
	 * (spi_begin).  An error aborts the (sub)transaction, which restores
	 * the user.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);

	if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		RowTriggerCache *cache = row_trigger_cache(fcinfo, et, rel);

		SetUserIdAndSecContext(cache->owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

		rettuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
		webhook_id = active_webhook_id(et->name);
		if (webhook_id == 0)
			wh_count_unrouted(et, 1);
		else
		{
			ExecStoreHeapTuple(rettuple, cache->slot, false);
			body_from_slot(&cache->body, et, &cache->map, cache->slot, RelationGetRelationName(rel));
			ExecClearTuple(cache->slot);
			/* without preloading, no hook would store what is gathered */
			if (wh_loaded_at_preload)
				gather_event(webhook_id, et, &cache->body);
			else
				(void) insert_one(webhook_id, et->name, cache->body.data);
		}
		SetUserIdAndSecContext(save_userid, save_sec_context);
		return PointerGetDatum(rettuple);
	}
	else
	{
		Tuplestorestate *rows = td->tg_newtable;

		SetUserIdAndSecContext(function_owner(fcinfo->flinfo->fn_oid),
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

		build_column_map(et, rel, &map);
		if (rows == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("statement trigger \"%s\" on table \"%s\" needs a transition table",
							trigger->tgname, RelationGetRelationName(rel)),
					 errhint("Create it with REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT.")));
		webhook_id = active_webhook_id(et->name);
		if (webhook_id == 0)
			wh_count_unrouted(et, tuplestore_tuple_count(rows));
		else
		{
			TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
			MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext,
														 "webhooks trigger row",
														 ALLOCSET_DEFAULT_SIZES);
			StringInfoData body;
			StringInfoData batch;
			int			n = 0;
			bool		flushed = false;
			const char *relname = RelationGetRelationName(rel);

			initStringInfo(&body);
			initStringInfo(&batch);
			tuplestore_rescan(rows);
			while (tuplestore_gettupleslot(rows, true, false, slot))
			{
				MemoryContext old = MemoryContextSwitchTo(rowcxt);

				body_from_slot(&body, et, &map, slot, relname);
				MemoryContextSwitchTo(old);
				MemoryContextReset(rowcxt);
				/* bodies never contain a raw newline: escape_json escapes it */
				if (n > 0)
					appendStringInfoChar(&batch, '\n');
				appendBinaryStringInfo(&batch, body.data, body.len);
				if (++n == WH_BATCH_MAX_EVENTS || batch.len >= WH_BATCH_MAX_BYTES)
				{
					insert_batch(webhook_id, et->name, &batch, n);
					resetStringInfo(&batch);
					n = 0;
					flushed = true;
				}
			}
			ExecDropSingleTupleTableSlot(slot);
			/* a single event goes straight to the queue: no batch to split */
			if (n == 1 && !flushed)
				insert_one(webhook_id, et->name, batch.data);
			else if (n > 0)
				insert_batch(webhook_id, et->name, &batch, n);
		}
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	return PointerGetDatum(rettuple);
}

/* The specification's event types, for seeding webhooks.event_types. */
PG_FUNCTION_INFO_V1(webhooks_builtin_event_types);
Datum
webhooks_builtin_event_types(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < N_EVENT_TYPES; i++)
	{
		const WhEventType *et = &event_types[i];
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		StringInfoData fields;
		int			j;

		initStringInfo(&fields);
		appendStringInfoChar(&fields, '[');
		for (j = 0; j < et->nfields; j++)
			appendStringInfo(&fields, "%s{\"name\": \"%s\", \"type\": \"%s\", \"column\": \"%s\"}",
							 j ? ", " : "", et->fields[j].name,
							 field_type_name(et->fields[j].type), et->fields[j].column);
		appendStringInfoChar(&fields, ']');

		values[0] = CStringGetTextDatum(et->name);
		values[1] = CStringGetTextDatum(et->label);
		values[2] = CStringGetTextDatum(et->description);
		values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(fields.data));
		values[4] = CStringGetTextDatum(example_body(et, "2024-05-10T13:28:23.209375Z"));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
