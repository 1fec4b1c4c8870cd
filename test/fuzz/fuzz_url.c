/*-------------------------------------------------------------------------
 *
 * fuzz_url.c
 *	  libFuzzer target for the webhook URL validator (src/url.c).
 *
 * The validator is the barrier between user-typed URLs and a worker that
 * makes requests from inside the database server, so it is worth more than
 * a list of examples.  This target feeds arbitrary bytes to wh_url_check()
 * with private targets both denied and allowed, and abort()s when a
 * property that should hold for every accepted URL does not:
 *
 *	- the reason is empty, a canonical form is returned, and the input is
 *	  at most WH_URL_MAX_LENGTH printable ASCII bytes starting with
 *	  "https://" and a non-slash, without '#', and without '@' or '\' before
 *	  the end of the authority;
 *	- libcurl parses the input to exactly the canonical form, and the
 *	  canonical form to itself;
 *	- the canonical form has scheme https, a non-empty host, no user,
 *	  password, options, fragment or zone id, and no port or one in
 *	  1..65535;
 *	- the host is not a denied address, judged independently: IPv6 by
 *	  inet_pton(), IPv4 by glibc's inet_aton() (the parser the resolver
 *	  uses), each handed to wh_addr_blocked() as a socket address; an IPv4
 *	  host is in dotted-quad form; local and metadata names are refused;
 *	- allowing private targets only ever turns private/local verdicts into
 *	  something else, never changes another verdict, and never rejects a
 *	  URL that was accepted without it;
 *	- every rejection has a reason without a trailing period that fits in
 *	  WH_URL_REASON_LEN bytes, and a small buffer merely truncates it.
 *
 * Independently of URLs, the input is also used as a bare host string to
 * compare wh_host_blocked() with inet_aton()/inet_pton() + wh_addr_blocked().
 *
 * Build and run with test/fuzz/run.sh.
 *
 * test/fuzz/fuzz_url.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <curl/curl.h>

#include "url.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond, input) \
	do { \
		if (!(cond)) \
			fail(#cond, (input), __LINE__); \
	} while (0)

/* report the property that does not hold for input, and stop (libFuzzer keeps the input) */
static void
fail(const char *what, const char *input, int line)
{
	fprintf(stderr, "fuzz_url.c:%d: property violated: %s\ninput: \"%s\"\n",
			line, what, input);
	abort();
}

static int
lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int
is_hex(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		(c >= 'A' && c <= 'F');
}

/* does the last label of s look numeric (digits, or 0x and hex digits)? */
static int
last_label_numeric(const char *s)
{
	const char *dot = strrchr(s, '.');
	const char *label = dot ? dot + 1 : s;
	const char *p;

	if (*label == '\0')
		return 0;
	if (label[0] == '0' && (label[1] == 'x' || label[1] == 'X'))
	{
		for (p = label + 2; *p; p++)
			if (!is_hex((unsigned char) *p))
				return 0;
		return 1;
	}
	for (p = label; *p; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

/* a part of a parsed URL (*out, for curl_free()), or NULL when it has none */
static const char *
curl_part(CURLU *u, CURLUPart part, char **out)
{
	*out = NULL;
	if (curl_url_get(u, part, out, 0) != CURLUE_OK)
		return NULL;
	return *out;
}

/*
 * Judge the host of an accepted URL without trusting the validator's own
 * parsing.
 */
static void
check_host(const char *host, int allow, const char *input)
{
	size_t		len = strlen(host);
	char		name[WH_URL_MAX_LENGTH + 1];
	size_t		i;

	REQUIRE(len > 0, input);
	REQUIRE(wh_host_blocked(host, allow) == NULL, input);

	if (host[0] == '[')
	{
		struct sockaddr_in6 sin6;

		REQUIRE(len > 2 && host[len - 1] == ']', input);
		memcpy(name, host + 1, len - 2);
		name[len - 2] = '\0';
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		REQUIRE(strchr(name, '%') == NULL, input);
		REQUIRE(inet_pton(AF_INET6, name, &sin6.sin6_addr) == 1, input);
		REQUIRE(wh_addr_blocked((struct sockaddr *) &sin6, allow) == NULL, input);
		return;
	}

	memcpy(name, host, len + 1);
	if (name[len - 1] == '.')
		name[--len] = '\0';
	for (i = 0; i < len; i++)
		name[i] = (char) lower((unsigned char) name[i]);

	{
		struct sockaddr_in sin;
		char		dotted[INET_ADDRSTRLEN];

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		if (inet_aton(name, &sin.sin_addr))
		{
			REQUIRE(wh_addr_blocked((struct sockaddr *) &sin, allow) == NULL, input);
			inet_ntop(AF_INET, &sin.sin_addr, dotted, sizeof(dotted));
			REQUIRE(strcmp(host, dotted) == 0, input);
		}
		else
			REQUIRE(!last_label_numeric(name), input);
	}

	REQUIRE(strcmp(name, "metadata") != 0, input);
	REQUIRE(strcmp(name, "metadata.google.internal") != 0, input);
	REQUIRE(strcmp(name, "metadata.goog") != 0, input);
	REQUIRE(strcmp(name, "instance-data") != 0, input);
	REQUIRE(strcmp(name, "instance-data.ec2.internal") != 0, input);
	if (!allow)
	{
		REQUIRE(strcmp(name, "localhost") != 0, input);
		REQUIRE(strcmp(name, "localhost.localdomain") != 0, input);
		REQUIRE(strcmp(name, "ip6-localhost") != 0, input);
		REQUIRE(len < 10 || strcmp(name + len - 10, ".localhost") != 0, input);
	}
}

/*
 * libcurl's parse of url, which must serialise to exactly expected; the
 * caller frees it with curl_url_cleanup().
 */
static CURLU *
parse_to(const char *url, const char *expected, const char *input)
{
	CURLU	   *u = curl_url();
	char	   *out;

	REQUIRE(u != NULL, input);
	REQUIRE(curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK, input);
	REQUIRE(curl_url_get(u, CURLUPART_URL, &out, 0) == CURLUE_OK, input);
	REQUIRE(strcmp(out, expected) == 0, input);
	curl_free(out);
	return u;
}

/*
 * Every property of one accepted URL.
 */
static void
check_accepted(const char *input, const char *canonical, int allow)
{
	size_t		len = strlen(input);
	size_t		auth_len;
	size_t		i;
	CURLU	   *u;
	char	   *part;
	const char *value;

	/* the raw string */
	REQUIRE(len > 8 && len <= WH_URL_MAX_LENGTH, input);
	for (i = 0; i < len; i++)
		REQUIRE((unsigned char) input[i] > 0x20 &&
				(unsigned char) input[i] < 0x7f, input);
	for (i = 0; i < 8; i++)
		REQUIRE(lower((unsigned char) input[i]) == "https://"[i], input);
	REQUIRE(input[8] != '/', input);
	REQUIRE(strchr(input, '#') == NULL, input);
	auth_len = strcspn(input + 8, "/?#");
	REQUIRE(memchr(input + 8, '@', auth_len) == NULL, input);
	REQUIRE(memchr(input + 8, '\\', auth_len) == NULL, input);

	/* libcurl turns the input into the canonical form */
	curl_url_cleanup(parse_to(input, canonical, input));

	/* ... and the canonical form into itself, with sane parts */
	u = parse_to(canonical, canonical, input);
	value = curl_part(u, CURLUPART_SCHEME, &part);
	REQUIRE(value != NULL && strcmp(value, "https") == 0, input);
	curl_free(part);
	REQUIRE(curl_part(u, CURLUPART_USER, &part) == NULL, input);
	REQUIRE(curl_part(u, CURLUPART_PASSWORD, &part) == NULL, input);
	REQUIRE(curl_part(u, CURLUPART_OPTIONS, &part) == NULL, input);
	REQUIRE(curl_part(u, CURLUPART_FRAGMENT, &part) == NULL, input);
	REQUIRE(curl_part(u, CURLUPART_ZONEID, &part) == NULL, input);
	value = curl_part(u, CURLUPART_PORT, &part);
	if (value != NULL)
	{
		char	   *end;
		long		port = strtol(value, &end, 10);

		REQUIRE(*end == '\0' && port >= 1 && port <= 65535, input);
		curl_free(part);
	}
	value = curl_part(u, CURLUPART_HOST, &part);
	REQUIRE(value != NULL, input);
	check_host(value, allow, input);
	curl_free(part);
	curl_url_cleanup(u);
}

/*
 * Compare wh_host_blocked() on the raw input with the system's parsers.
 */
static void
check_literal(const char *input)
{
	static const char invalid[] = "invalid address literal";
	size_t		len = strlen(input);
	char		text[128];
	size_t		i;
	int			allow;

	if (len == 0 || len >= sizeof(text) || input[0] == '[')
		return;
	for (i = 0; i < len; i++)
	{
		/* inet_aton() tolerates trailing whitespace; we do not */
		if ((unsigned char) input[i] <= 0x20 || (unsigned char) input[i] >= 0x7f)
			return;
	}
	memcpy(text, input, len + 1);

	if (strchr(text, ':') != NULL)
	{
		struct sockaddr_in6 sin6;

		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, text, &sin6.sin6_addr) == 1)
		{
			for (allow = 0; allow <= 1; allow++)
				REQUIRE(wh_host_blocked(input, allow) ==
						wh_addr_blocked((struct sockaddr *) &sin6, allow), input);
		}
		else
			REQUIRE(wh_host_blocked(input, 1) != NULL &&
					strcmp(wh_host_blocked(input, 1), invalid) == 0, input);
		return;
	}

	if (text[len - 1] == '.')
		text[--len] = '\0';
	{
		struct sockaddr_in sin;

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		if (len > 0 && inet_aton(text, &sin.sin_addr))
		{
			for (allow = 0; allow <= 1; allow++)
				REQUIRE(wh_host_blocked(input, allow) ==
						wh_addr_blocked((struct sockaddr *) &sin, allow), input);
		}
		else if (last_label_numeric(text))
			REQUIRE(wh_host_blocked(input, 1) != NULL &&
					strcmp(wh_host_blocked(input, 1), invalid) == 0, input);
		else
			REQUIRE(wh_host_blocked(input, 1) == NULL, input);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input;
	char	   *canonical[2] = {NULL, NULL};
	char		reason[2][WH_URL_REASON_LEN];
	char		small[16];
	WhUrlStatus status[2];
	int			allow;

	input = malloc(size + 1);
	if (input == NULL)
		return 0;
	memcpy(input, data, size);
	input[size] = '\0';

	for (allow = 0; allow <= 1; allow++)
	{
		size_t		rlen;

		status[allow] = wh_url_check(input, allow, &canonical[allow],
									 reason[allow], sizeof(reason[allow]));
		/* WH_URL_REASON_LEN is enough: the reason is never truncated */
		rlen = strnlen(reason[allow], sizeof(reason[allow]));
		REQUIRE(rlen < sizeof(reason[allow]) - 1, input);
		if (status[allow] == WH_URL_OK)
		{
			REQUIRE(rlen == 0, input);
			REQUIRE(canonical[allow] != NULL, input);
			check_accepted(input, canonical[allow], allow);
		}
		else
		{
			REQUIRE(rlen > 0 && reason[allow][rlen - 1] != '.', input);
			REQUIRE(canonical[allow] == NULL, input);
		}
	}

	/* a small buffer truncates the reason but changes nothing else */
	memset(small, 'x', sizeof(small));
	REQUIRE(wh_url_check(input, 0, NULL, small, sizeof(small)) == status[0],
			input);
	REQUIRE(memchr(small, '\0', sizeof(small)) != NULL, input);
	REQUIRE(strncmp(small, reason[0], sizeof(small) - 1) == 0, input);

	/* allowing private targets relaxes exactly the private verdicts */
	REQUIRE(status[1] != WH_URL_PRIVATE_ADDRESS &&
			status[1] != WH_URL_LOCAL_NAME, input);
	if (status[0] == WH_URL_OK)
		REQUIRE(status[1] == WH_URL_OK &&
				strcmp(canonical[0], canonical[1]) == 0, input);
	else if (status[0] != WH_URL_PRIVATE_ADDRESS &&
			 status[0] != WH_URL_LOCAL_NAME)
		REQUIRE(status[1] == status[0], input);

	check_literal(input);

	free(canonical[0]);
	free(canonical[1]);
	free(input);
	return 0;
}
