/*-------------------------------------------------------------------------
 *
 * signing.h
 *	  Standard Webhooks secrets and signatures, and webhook-ids (signing.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_SIGNING_H
#define WEBHOOKS_SIGNING_H

/* random bytes in a secret made by wh_generate_secret() */
#define WH_SECRET_BYTES 32

extern char *wh_generate_secret(void);
extern bool wh_secret_valid(const char *secret, char **why);
extern char *wh_sign(const char *secret, const char *msg_id, int64 timestamp,
					 const char *body, size_t body_len);

/* "msg_" + 32 hex digits of a UUIDv7 */
#define WH_MSG_ID_LEN 36
extern void wh_new_msg_id(char *out);
extern bool wh_msg_id_offset(const char *base, int64 offset, char *out);
extern const char *wh_msg_id_problem(const char *msg_id);

#endif							/* WEBHOOKS_SIGNING_H */
