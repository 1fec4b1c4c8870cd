/*-------------------------------------------------------------------------
 *
 * functions.h
 *	  Checks of the SQL-callable functions that the worker applies again
 *	  at send time (functions.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_FUNCTIONS_H
#define WEBHOOKS_FUNCTIONS_H

/* JSON nested deeper than this is refused without recursing into it */
#define WH_JSON_MAX_DEPTH 64
extern bool wh_json_valid(const char *s, size_t len);
extern const char *wh_auth_token_problem(const char *token);

#endif							/* WEBHOOKS_FUNCTIONS_H */
