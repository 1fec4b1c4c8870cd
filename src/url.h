/*-------------------------------------------------------------------------
 *
 * url.h
 *	  Validation of webhook target URLs and of the addresses they lead to.
 *
 * Webhook URLs are typed in by database users but fetched by a background
 * worker running on the database server, so every URL is a potential
 * server-side request forgery.  These functions decide which URLs may be
 * stored (wh_url_check) and which addresses may actually be connected to
 * (wh_addr_blocked, called from libcurl's open-socket callback, which sees
 * the address a host name really resolved to).
 *
 * This header and url.c deliberately have no PostgreSQL dependency, so the
 * validator can also be linked into a standalone test driver and a fuzzer.
 * Everything here is thread-safe and keeps no global state.
 *
 * src/url.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WEBHOOKS_URL_H
#define WEBHOOKS_URL_H

#include <stddef.h>

struct sockaddr;

/* the longest URL wh_url_check() accepts, in bytes */
#define WH_URL_MAX_LENGTH 2048

/* a reason buffer of this size never truncates wh_url_check()'s reasons */
#define WH_URL_REASON_LEN 512

/*
 * Outcome of wh_url_check().  The comment next to each value is the generic
 * meaning; the reason text wh_url_check() writes is more specific.
 */
typedef enum WhUrlStatus
{
	WH_URL_OK = 0,
	WH_URL_EMPTY,				/* "URL is empty" */
	WH_URL_TOO_LONG,			/* "URL is longer than 2048 characters" */
	WH_URL_BAD_CHARACTERS,		/* "URL contains whitespace, control or
								 * non-ASCII characters" */
	WH_URL_MALFORMED,			/* "URL is not a valid absolute URL" */
	WH_URL_NOT_HTTPS,			/* "URL scheme must be https" */
	WH_URL_NO_HOST,				/* "URL has no host" */
	WH_URL_CREDENTIALS,			/* "URL must not contain a user name or
								 * password" */
	WH_URL_BAD_PORT,			/* "URL port must be between 1 and 65535" */
	WH_URL_FRAGMENT,			/* "URL must not contain a fragment" */
	WH_URL_LOCAL_NAME,			/* "host name refers to the local machine" */
	WH_URL_METADATA,			/* "host is a cloud metadata address" */
	WH_URL_PRIVATE_ADDRESS		/* "host is a non-public address (range)" */
} WhUrlStatus;

/*
 * Validate a webhook target URL.
 *
 * Only absolute "https://" URLs with a host, an optional port between 1 and
 * 65535, no user name or password and no fragment are accepted.  Host names
 * that refer to the local machine and literal addresses outside the public
 * internet are rejected unless allow_private is non-zero; cloud metadata
 * names and addresses are rejected always.
 *
 * If canonical is not NULL, *canonical is set to NULL, and on WH_URL_OK to a
 * malloc'd copy of the URL as libcurl serialises it (CURLUPART_URL), which
 * the caller frees with free().
 *
 * If reason_buf is not NULL and reason_len > 0, a NUL-terminated English
 * sentence fragment (no trailing period) explaining the verdict is written
 * there, truncated to fit (WH_URL_REASON_LEN bytes always suffice); it is
 * the empty string on WH_URL_OK.  Examples:
 * "URL scheme must be https, not \"http\"",
 * "host 127.0.0.1 is a loopback address (127.0.0.0/8)".
 */
extern WhUrlStatus wh_url_check(const char *url, int allow_private,
								char **canonical,
								char *reason_buf, size_t reason_len);

/*
 * Judge an address that is about to be connected to.  Returns NULL if it is
 * allowed, else a static description of the range it falls in, such as
 * "loopback address (127.0.0.0/8)".  Families other than AF_INET and
 * AF_INET6 are always refused.
 */
extern const char *wh_addr_blocked(const struct sockaddr *sa,
								   int allow_private);

/*
 * The same for a literal host string: IPv4 in any form libcurl and
 * inet_aton() accept ("2130706433", "0x7f.1", "127.1", with or without a
 * trailing dot), or IPv6 with or without brackets.  Returns NULL if host is
 * allowed or is not an address literal at all (i.e. a host name, which this
 * function does not judge); a literal that is not a valid address, or an
 * IPv6 literal with a zone id, is refused.
 */
extern const char *wh_host_blocked(const char *host, int allow_private);

#endif							/* WEBHOOKS_URL_H */
