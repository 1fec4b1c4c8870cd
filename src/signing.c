/*-------------------------------------------------------------------------
 *
 * signing.c
 *	  Standard Webhooks (v1, HMAC-SHA256) secrets and signatures.
 *
 * A secret is "whsec_" followed by the standard base64 (with padding) of
 * WH_SECRET_BYTES random bytes from pg_strong_random().  A signature is
 * "v1," + base64(HMAC_SHA256(key, id + "." + timestamp + "." + body)) where
 * key is the base64-decoded secret without its prefix.  The receivers'
 * libraries are strict, so this file follows the specification byte for
 * byte (see the test vectors in the regression tests).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "common/base64.h"
#include "fmgr.h"
#include "port.h"
#include "utils/builtins.h"

#include "compat.h"
#include "signing.h"
#include "validate.h"

#define WH_SECRET_PREFIX "whsec_"
#define WH_SECRET_MIN_BYTES 16
#define WH_SECRET_MAX_BYTES 64

/* a new secret: "whsec_" and the base64 of WH_SECRET_BYTES random bytes */
char *
wh_generate_secret(void)
{
	uint8		raw[WH_SECRET_BYTES];
	int			enclen = pg_b64_enc_len(WH_SECRET_BYTES);
	char	   *out = palloc(strlen(WH_SECRET_PREFIX) + enclen + 1);
	int			n;

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a webhook secret")));
	strcpy(out, WH_SECRET_PREFIX);
	n = wh_b64_encode((const char *) raw, sizeof(raw),
					  out + strlen(WH_SECRET_PREFIX), enclen);
	if (n < 0)
		elog(ERROR, "could not encode webhook secret");
	out[strlen(WH_SECRET_PREFIX) + n] = '\0';
	return out;
}

/*
 * Decode a secret into its key bytes.  Returns the key length, or -1 with
 * *why set when the secret is not of the expected form.
 */
static int
decode_secret(const char *secret, uint8 *key, int keysize, const char **why)
{
	const char *b64;
	int			len;
	int			n;

	if (strncmp(secret, WH_SECRET_PREFIX, strlen(WH_SECRET_PREFIX)) != 0)
	{
		*why = "A secret starts with \"whsec_\".";
		return -1;
	}
	b64 = secret + strlen(WH_SECRET_PREFIX);
	len = strlen(b64);
	if (len == 0 || len % 4 != 0 || pg_b64_dec_len(len) > keysize)
	{
		*why = "The part after \"whsec_\" must be standard base64 of 16 to 64 bytes.";
		return -1;
	}
	n = wh_b64_decode(b64, len, (char *) key, keysize);
	if (n < WH_SECRET_MIN_BYTES || n > WH_SECRET_MAX_BYTES)
	{
		*why = "The part after \"whsec_\" must be standard base64 of 16 to 64 bytes.";
		return -1;
	}
	return n;
}

/* is secret of the form above?  If not, *why (when not NULL) says why, as a sentence */
bool
wh_secret_valid(const char *secret, char **why)
{
	uint8		key[WH_SECRET_MAX_BYTES + 4];
	const char *reason = NULL;

	if (decode_secret(secret, key, sizeof(key), &reason) < 0)
	{
		if (why)
			*why = pstrdup(reason);
		return false;
	}
	return true;
}

/*
 * HMAC-SHA256.  The HMAC method and its SHA-256 digest are looked up once
 * per process and kept in a template context that each call duplicates
 * (OpenSSL's one-shot HMAC() fetches both on every call: a measurable share
 * of the worker's time when it signs thousands of requests a second).
 */
static bool
hmac_sha256(const uint8 *key, int keylen, const unsigned char *data, size_t len,
			unsigned char *mac, unsigned int *maclen)
{
	static EVP_MAC_CTX *template = NULL;
	EVP_MAC_CTX *ctx;
	size_t		outlen = 0;
	bool		ok;

	if (template == NULL)
	{
		EVP_MAC   *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
		OSSL_PARAM params[2];

		if (alg == NULL)
			return false;
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		template = EVP_MAC_CTX_new(alg);
		EVP_MAC_free(alg);		/* the context keeps its own reference */
		if (template == NULL)
			return false;
		if (!EVP_MAC_CTX_set_params(template, params))
		{
			EVP_MAC_CTX_free(template);
			template = NULL;
			return false;
		}
	}
	ctx = EVP_MAC_CTX_dup(template);
	if (ctx == NULL)
		return false;
	ok = EVP_MAC_init(ctx, key, keylen, NULL) &&
		EVP_MAC_update(ctx, data, len) &&
		EVP_MAC_final(ctx, mac, &outlen, EVP_MAX_MD_SIZE);
	EVP_MAC_CTX_free(ctx);
	*maclen = (unsigned int) outlen;
	return ok;
}

/*
 * Return "v1,<base64 signature>" for one secret.
 */
char *
wh_sign(const char *secret, const char *msg_id, int64 timestamp,
		const char *body, size_t body_len)
{
	uint8		key[WH_SECRET_MAX_BYTES + 4];
	int			keylen;
	const char *why = NULL;
	char		tsbuf[32];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	StringInfoData signed_content;
	char	   *out;
	int			enclen;
	int			n;

	/* every caller has checked the secret (validate.c) */
	keylen = decode_secret(secret, key, sizeof(key), &why);
	if (keylen < 0)
		elog(ERROR, "cannot sign with an invalid webhook secret: %s", why);

	snprintf(tsbuf, sizeof(tsbuf), INT64_FORMAT, timestamp);
	initStringInfo(&signed_content);
	appendStringInfoString(&signed_content, msg_id);
	appendStringInfoChar(&signed_content, '.');
	appendStringInfoString(&signed_content, tsbuf);
	appendStringInfoChar(&signed_content, '.');
	appendBinaryStringInfo(&signed_content, body, body_len);

	if (!hmac_sha256(key, keylen, (const unsigned char *) signed_content.data,
					 signed_content.len, mac, &maclen))
		elog(ERROR, "HMAC-SHA256 failed");
	pfree(signed_content.data);

	enclen = pg_b64_enc_len(maclen);
	out = palloc(3 + enclen + 1);
	memcpy(out, "v1,", 3);
	n = wh_b64_encode((const char *) mac, maclen, out + 3, enclen);
	if (n < 0)
		elog(ERROR, "could not encode signature");
	out[3 + n] = '\0';
	explicit_bzero(key, sizeof(key));
	return out;
}

/* webhooks.generate_secret() */
PG_FUNCTION_INFO_V1(webhooks_generate_secret);
Datum
webhooks_generate_secret(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(wh_generate_secret()));
}

/* webhooks.sign(secret, msg_id, timestamp, body): the v1 signature a receiver checks */
PG_FUNCTION_INFO_V1(webhooks_sign);
Datum
webhooks_sign(PG_FUNCTION_ARGS)
{
	char	   *secret = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *msg_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int64		ts = PG_GETARG_INT64(2);
	text	   *body = PG_GETARG_TEXT_PP(3);
	WhProblem	problem;

	if (strchr(msg_id, '.') != NULL || msg_id[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid message id \"%s\"", msg_id),
				 errdetail("A message id is not empty and contains no \".\".")));
	if (!wh_valid_secret(secret, false, &problem))
		wh_raise(&problem);
	PG_RETURN_TEXT_P(cstring_to_text(wh_sign(secret, msg_id, ts,
											 VARDATA_ANY(body),
											 VARSIZE_ANY_EXHDR(body))));
}

/*
 * Message ids (the webhook-id header).  An event's id is fixed when it is
 * enqueued and must never be reused, across reinstalls, databases, servers
 * and promoted replicas, because receivers deduplicate on it.  It is
 * "msg_" and the 32 hexadecimal digits of a UUIDv7 (RFC 9562): 48 bits of
 * Unix time in milliseconds, then 74 random bits, so ids sort by time.
 *
 * The events of a multi-row statement are stored as one batch with the id
 * of its first event; event i of the batch has the first id with i added
 * to its low 62 random bits (wh_msg_id_offset).  The split into deliveries
 * therefore gives every event the same id however often it is repeated
 * (a crash can undo a split that was committed asynchronously).
 */
void
wh_new_msg_id(char *out)
{
	uint8		u[16];
	uint64		ms = (uint64) ((GetCurrentTimestamp() / 1000) +
							   (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000);
	int			i;

	if (!pg_strong_random(u + 6, 10))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a webhook-id")));
	for (i = 0; i < 6; i++)
		u[i] = (uint8) (ms >> (40 - 8 * i));
	u[6] = (u[6] & 0x0f) | 0x70;	/* version 7 */
	u[8] = (u[8] & 0x3f) | 0x80;	/* variant 10 */
	memcpy(out, "msg_", 4);
	for (i = 0; i < 16; i++)
	{
		out[4 + 2 * i] = "0123456789abcdef"[u[i] >> 4];
		out[5 + 2 * i] = "0123456789abcdef"[u[i] & 0x0f];
	}
	out[4 + 32] = '\0';
}

/*
 * Why msg_id cannot be sent as a webhook-id header, or NULL: "msg_" and 1 to
 * 64 letters or digits (ids of 1.0, msg_<delivery id>, and of 1.1 alike).
 * A row written by hand must not add a header line.
 */
const char *
wh_msg_id_problem(const char *msg_id)
{
	size_t		n = strlen(msg_id);
	size_t		i;

	if (n < 5 || n > 4 + 64 || strncmp(msg_id, "msg_", 4) != 0)
		return "the webhook-id is not \"msg_\" and 1 to 64 letters or digits";
	for (i = 4; i < n; i++)
		if (!((msg_id[i] >= '0' && msg_id[i] <= '9') || (msg_id[i] >= 'a' && msg_id[i] <= 'z') ||
			  (msg_id[i] >= 'A' && msg_id[i] <= 'Z')))
			return "the webhook-id is not \"msg_\" and 1 to 64 letters or digits";
	return NULL;
}

/*
 * The id "offset" places after "base" (a msg id as made above), into out
 * (WH_MSG_ID_LEN + 1 bytes).  Returns false when base is not of that form.
 */
bool
wh_msg_id_offset(const char *base, int64 offset, char *out)
{
	uint64		low = 0;
	int			i;

	if (strlen(base) != WH_MSG_ID_LEN || strncmp(base, "msg_", 4) != 0 ||
		strspn(base + 4, "0123456789abcdef") != 32)
		return false;
	for (i = 16; i < 32; i++)
	{
		char		c = base[4 + i];

		low = (low << 4) | (uint64) (c <= '9' ? c - '0' : c - 'a' + 10);
	}
	/* the variant's two high bits stay, the 62 random bits below them move */
	low = (low & UINT64CONST(0xC000000000000000)) |
		((low + (uint64) offset) & UINT64CONST(0x3FFFFFFFFFFFFFFF));
	memcpy(out, base, 4 + 16);
	for (i = 0; i < 8; i++)
		sprintf(out + 20 + 2 * i, "%02x", (unsigned int) ((low >> (56 - 8 * i)) & 0xff));
	out[WH_MSG_ID_LEN] = '\0';
	return true;
}
