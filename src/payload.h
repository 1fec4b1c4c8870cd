/*-------------------------------------------------------------------------
 *
 * payload.h
 *	  The specification's event types and the rendering of payloads
 *	  (payload.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_PAYLOAD_H
#define WEBHOOKS_PAYLOAD_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"

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

/* the specification's event types, in a fixed order */
#define WH_N_EVENT_TYPES 9

extern const WhEventType *wh_find_event_type(const char *name);
extern const WhEventType *wh_event_type_at(int index);
extern int	wh_event_type_index(const WhEventType *et);
extern void wh_check_event_type(const char *name);
extern char *wh_build_body(const WhEventType *et, Jsonb *payload);
extern char *wh_dummy_body(const WhEventType *et);
extern void wh_format_event_date(StringInfo buf, TimestampTz ts);

/* the row trigger's events, gathered until their statement ends */
extern int	wh_exec_depth;		/* statements running: ExecutorFinish and
								 * ProcessUtility calls (webhooks.c's hooks) */
extern bool wh_have_gathered(void);
extern void wh_store_gathered(int depth);
extern void wh_gathered_subxact_end(bool committed);
extern void wh_gathered_xact_end(void);

#endif							/* WEBHOOKS_PAYLOAD_H */
