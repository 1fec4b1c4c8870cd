/*-------------------------------------------------------------------------
 *
 * validate.h
 *	  The rules on what a webhook sends, each defined once (validate.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_VALIDATE_H
#define WEBHOOKS_VALIDATE_H

#include "utils/jsonb.h"

/* JSON nested deeper than this is refused without recursing into it */
#define WH_JSON_MAX_DEPTH 64

/*
 * Why a value breaks a rule.  message is the same wherever the rule is
 * checked: the table guard, the wizard and the connection test raise it as
 * the error message (with detail and hint), and the worker's send-time check
 * writes it into the log row of a delivery it refuses.
 */
typedef struct WhProblem
{
	int			sqlerrcode;
	char	   *message;		/* "invalid auth token: it is empty" */
	const char *detail;			/* or NULL */
	const char *hint;			/* or NULL */
} WhProblem;

/* each returns true when the value follows the rule, else fills *problem */
extern bool wh_valid_target_url(const char *url, WhProblem *problem);
extern bool wh_valid_extra_headers(Jsonb *headers, bool has_auth_token,
								   WhProblem *problem);
extern bool wh_valid_auth_token(const char *token, WhProblem *problem);
extern bool wh_valid_secret(const char *secret, bool previous, WhProblem *problem);
extern bool wh_valid_payload_size(size_t len, WhProblem *problem);
extern bool wh_valid_payload_json(const char *body, size_t len, WhProblem *problem);

/* everything the worker checks before it sends, the URL apart */
extern bool wh_valid_delivery(const char *msg_id, const char *body,
							  const char *secret, const char *previous_secret,
							  const char *auth_token, Jsonb *headers,
							  WhProblem *problem);

/* the worker's text for a delivery it refuses to send */
extern char *wh_refusal(const WhProblem *problem);

extern void wh_raise(const WhProblem *problem);

extern bool wh_json_valid(const char *s, size_t len);

#endif							/* WEBHOOKS_VALIDATE_H */
