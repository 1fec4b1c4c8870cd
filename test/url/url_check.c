/*-------------------------------------------------------------------------
 *
 * url_check.c
 *	  Standalone test driver for the webhook URL validator (src/url.c).
 *
 * The validator has no PostgreSQL dependency, so it can be tested here
 * quickly and without a server.  The driver reads two corpora that the SQL
 * regression tests reuse:
 *
 *	  bad_urls.txt	 one "<WH_URL_STATUS_NAME><TAB><url>" per line
 *	  good_urls.txt	 one url per line
 *
 * To keep one URL per line, a URL may contain the escapes \xHH, \n, \r, \t
 * and \s (a space); a literal backslash is written \x5c.  Any other
 * backslash sequence is an error in the corpus.
 *
 * Every bad URL must be rejected with the listed status and a reason, and
 * with the same status when private targets are allowed (unless the status
 * is about a private address or local name).  Every good URL must be
 * accepted in both modes with a canonical form that is itself accepted and
 * unchanged.  A handful of specific checks follow: generated over-long
 * URLs, exact reason texts, canonical forms, allow_private, and the address
 * judging functions.
 *
 * Usage: url_check [corpus-directory]	(default: the current directory)
 * Prints "N passed, M failed" and exits non-zero if anything failed.
 *
 * test/url/url_check.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "url.h"

#define LINE_MAX_BYTES 8192

typedef struct StatusName
{
	const char *name;
	WhUrlStatus status;
} StatusName;

static const StatusName status_names[] = {
	{"WH_URL_OK", WH_URL_OK},
	{"WH_URL_EMPTY", WH_URL_EMPTY},
	{"WH_URL_TOO_LONG", WH_URL_TOO_LONG},
	{"WH_URL_BAD_CHARACTERS", WH_URL_BAD_CHARACTERS},
	{"WH_URL_MALFORMED", WH_URL_MALFORMED},
	{"WH_URL_NOT_HTTPS", WH_URL_NOT_HTTPS},
	{"WH_URL_NO_HOST", WH_URL_NO_HOST},
	{"WH_URL_CREDENTIALS", WH_URL_CREDENTIALS},
	{"WH_URL_BAD_PORT", WH_URL_BAD_PORT},
	{"WH_URL_FRAGMENT", WH_URL_FRAGMENT},
	{"WH_URL_LOCAL_NAME", WH_URL_LOCAL_NAME},
	{"WH_URL_METADATA", WH_URL_METADATA},
	{"WH_URL_PRIVATE_ADDRESS", WH_URL_PRIVATE_ADDRESS},
};

static int	passed = 0;
static int	failed = 0;

static void check(int ok, const char *fmt,...) __attribute__((format(printf, 2, 3)));

/*
 * Count one check; describe it only when it fails.
 */
static void
check(int ok, const char *fmt,...)
{
	va_list		args;

	if (ok)
	{
		passed++;
		return;
	}
	failed++;
	printf("FAIL: ");
	va_start(args, fmt);
	vprintf(fmt, args);
	va_end(args);
	printf("\n");
}

static const char *
status_name(WhUrlStatus status)
{
	size_t		i;

	for (i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
	{
		if (status_names[i].status == status)
			return status_names[i].name;
	}
	return "(unknown status)";
}

static int
status_by_name(const char *name, WhUrlStatus *status)
{
	size_t		i;

	for (i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
	{
		if (strcmp(status_names[i].name, name) == 0)
		{
			*status = status_names[i].status;
			return 1;
		}
	}
	return 0;
}

/*
 * Print a URL for a failure message with the same escapes the corpus uses.
 * Uses a static buffer: fine for a single-threaded test driver.
 */
static const char *
show(const char *url)
{
	static char buf[LINE_MAX_BYTES * 4 + 1];
	size_t		o = 0;

	for (; *url != '\0' && o + 5 < sizeof(buf); url++)
	{
		unsigned char c = (unsigned char) *url;

		if (c > 0x20 && c < 0x7f && c != '\\')
			buf[o++] = (char) c;
		else
			o += (size_t) snprintf(buf + o, sizeof(buf) - o, "\\x%02x", c);
	}
	buf[o] = '\0';
	return buf;
}

/*
 * Undo the corpus escapes in place.  Returns 0 on a bad escape.
 */
static int
unescape(char *s)
{
	char	   *in = s;
	char	   *out = s;

	while (*in != '\0')
	{
		if (*in != '\\')
		{
			*out++ = *in++;
			continue;
		}
		switch (in[1])
		{
			case 'n':
				*out++ = '\n';
				break;
			case 'r':
				*out++ = '\r';
				break;
			case 't':
				*out++ = '\t';
				break;
			case 's':
				*out++ = ' ';
				break;
			case 'x':
				{
					char		hex[3] = {in[2], in[2] ? in[3] : '\0', '\0'};
					char	   *end;
					long		byte = strtol(hex, &end, 16);

					if (strlen(hex) != 2 || *end != '\0' || !isxdigit((unsigned char) hex[0]) ||
						byte == 0)
						return 0;
					*out++ = (char) byte;
					in += 2;
				}
				break;
			default:
				return 0;
		}
		in += 2;
	}
	*out = '\0';
	return 1;
}

/*
 * A reason must be a non-empty fragment without a trailing period, starting
 * lowercase (the acronym "URL" excepted).
 */
static int
reason_well_formed(const char *reason)
{
	size_t		len = strlen(reason);

	if (len == 0 || reason[len - 1] == '.')
		return 0;
	if (strncmp(reason, "URL ", 4) == 0)
		return 1;
	return reason[0] >= 'a' && reason[0] <= 'z';
}

/*
 * Check one URL that must be rejected with the given status.
 */
static void
check_bad(const char *url, WhUrlStatus expected)
{
	char		reason[512];
	char	   *canonical = (char *) "not reset";
	WhUrlStatus status;
	int			private_status;

	status = wh_url_check(url, 0, &canonical, reason, sizeof(reason));
	check(status == expected, "bad \"%s\": expected %s, got %s (%s)",
		  show(url), status_name(expected), status_name(status), reason);
	check(canonical == NULL, "bad \"%s\": canonical not NULL", show(url));
	check(reason_well_formed(reason), "bad \"%s\": reason \"%s\" is not well formed",
		  show(url), reason);

	/* private ranges open: only the private/local verdicts may change */
	private_status = (expected == WH_URL_PRIVATE_ADDRESS ||
					  expected == WH_URL_LOCAL_NAME);
	status = wh_url_check(url, 1, &canonical, reason, sizeof(reason));
	if (private_status)
		check(status != WH_URL_PRIVATE_ADDRESS && status != WH_URL_LOCAL_NAME,
			  "bad \"%s\" with allow_private: got %s (%s)",
			  show(url), status_name(status), reason);
	else
		check(status == expected,
			  "bad \"%s\" with allow_private: expected %s, got %s (%s)",
			  show(url), status_name(expected), status_name(status), reason);
	free(canonical);
}

/*
 * Check one URL that must be accepted; its canonical form must be accepted
 * too and map to itself.
 */
static void
check_good(const char *url)
{
	char		reason[512];
	char	   *canonical = NULL;
	char	   *again = NULL;
	WhUrlStatus status;
	int			allow;

	for (allow = 0; allow <= 1; allow++)
	{
		strcpy(reason, "not reset");
		status = wh_url_check(url, allow, &canonical, reason, sizeof(reason));
		check(status == WH_URL_OK, "good \"%s\" (allow_private=%d): got %s (%s)",
			  show(url), allow, status_name(status), reason);
		check(reason[0] == '\0', "good \"%s\": reason not empty: \"%s\"",
			  show(url), reason);
		check(canonical != NULL, "good \"%s\": no canonical form", show(url));
		if (canonical == NULL)
			continue;
		status = wh_url_check(canonical, allow, &again, NULL, 0);
		check(status == WH_URL_OK && again != NULL &&
			  strcmp(canonical, again) == 0,
			  "good \"%s\": canonical \"%s\" is not a fixed point (%s, \"%s\")",
			  show(url), canonical, status_name(status),
			  again ? again : "(null)");
		free(again);
		again = NULL;
		free(canonical);
		canonical = NULL;
	}
}

/* check every URL of a corpus file: bad ones (status TAB url) or good ones */
static void
run_corpus(const char *dir, const char *file, int bad)
{
	char		path[4096];
	char		line[LINE_MAX_BYTES];
	FILE	   *f;
	int			lineno = 0;
	int			count = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "r");
	check(f != NULL, "cannot open %s", path);
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		size_t		len = strlen(line);
		char	   *url = line;
		WhUrlStatus expected = WH_URL_OK;

		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (bad)
		{
			char	   *tab = strchr(line, '\t');

			if (tab == NULL)
			{
				check(0, "%s:%d: no tab", path, lineno);
				continue;
			}
			*tab = '\0';
			url = tab + 1;
			if (!status_by_name(line, &expected) || expected == WH_URL_OK)
			{
				check(0, "%s:%d: bad status name \"%s\"", path, lineno, line);
				continue;
			}
		}
		if (!unescape(url))
		{
			check(0, "%s:%d: bad escape", path, lineno);
			continue;
		}
		if (bad)
			check_bad(url, expected);
		else
			check_good(url);
		count++;
	}
	fclose(f);
	printf("%s: %d URLs\n", file, count);
}

static void
expect_reason(const char *url, int allow, WhUrlStatus expected,
			  const char *expected_reason)
{
	char		reason[512];
	WhUrlStatus status;

	status = wh_url_check(url, allow, NULL, reason, sizeof(reason));
	check(status == expected && strcmp(reason, expected_reason) == 0,
		  "\"%s\" (allow_private=%d): expected %s \"%s\", got %s \"%s\"",
		  show(url), allow, status_name(expected), expected_reason,
		  status_name(status), reason);
}

static void
expect_canonical(const char *url, int allow, const char *expected)
{
	char		reason[512];
	char	   *canonical = NULL;
	WhUrlStatus status;

	status = wh_url_check(url, allow, &canonical, reason, sizeof(reason));
	check(status == WH_URL_OK && canonical != NULL &&
		  strcmp(canonical, expected) == 0,
		  "\"%s\" (allow_private=%d): expected canonical \"%s\", got %s \"%s\" (%s)",
		  show(url), allow, expected, status_name(status),
		  canonical ? canonical : "(null)", reason);
	free(canonical);
}

static void
expect_status(const char *url, int allow, WhUrlStatus expected)
{
	char		reason[512];
	WhUrlStatus status;

	status = wh_url_check(url, allow, NULL, reason, sizeof(reason));
	check(status == expected, "\"%s\" (allow_private=%d): expected %s, got %s (%s)",
		  show(url), allow, status_name(expected), status_name(status), reason);
}

static void
run_length_checks(void)
{
	static const char prefix[] = "https://example.com/";
	char	   *url;
	size_t		n;

	/* exactly the limit is fine, one more is not */
	for (n = WH_URL_MAX_LENGTH - 1; n <= WH_URL_MAX_LENGTH + 1; n++)
	{
		url = malloc(n + 1);
		memcpy(url, prefix, strlen(prefix));
		memset(url + strlen(prefix), 'a', n - strlen(prefix));
		url[n] = '\0';
		expect_status(url, 0, n <= WH_URL_MAX_LENGTH ? WH_URL_OK : WH_URL_TOO_LONG);
		free(url);
	}

	/* very long, and too long even though it also has bad characters */
	n = 100000;
	url = malloc(n + 1);
	memcpy(url, prefix, strlen(prefix));
	memset(url + strlen(prefix), ' ', n - strlen(prefix));
	url[n] = '\0';
	expect_reason(url, 0, WH_URL_TOO_LONG, "URL is longer than 2048 characters");
	free(url);
}

/* URLs and the verdict and reason wh_url_check() gives them */
static const struct
{
	const char *url;
	int			allow;
	WhUrlStatus status;
	const char *reason;
}			reason_cases[] =
{
	{"http://example.com/", 0, WH_URL_NOT_HTTPS,
	"URL scheme must be https, not \"http\""},
	{"https://127.0.0.1/", 0, WH_URL_PRIVATE_ADDRESS,
	"host 127.0.0.1 is a loopback address (127.0.0.0/8)"},
	{"https://10.0.0.1/", 0, WH_URL_PRIVATE_ADDRESS,
	"host 10.0.0.1 is a private address (10.0.0.0/8)"},
	{"https://[::ffff:10.0.0.1]/", 0, WH_URL_PRIVATE_ADDRESS,
	"host [::ffff:10.0.0.1] is a private address (10.0.0.0/8, IPv4-mapped)"},
	{"https://0x7f.1./", 0, WH_URL_PRIVATE_ADDRESS,
	"host 0x7f.1. (127.0.0.1) is a loopback address (127.0.0.0/8)"},
	{"https://2852039166/", 1, WH_URL_METADATA,
	"host 169.254.169.254 is a cloud metadata address (169.254.169.254)"},
	{"https://[::]/", 0, WH_URL_PRIVATE_ADDRESS,
	"host [::] is an unspecified address (::/128)"},
	{"https://localhost/", 0, WH_URL_LOCAL_NAME,
	"host name localhost refers to the local machine"},
	{"https://metadata.google.internal/", 1, WH_URL_METADATA,
	"host metadata.google.internal is a cloud metadata address"},
	{"https://example.com:0/", 0, WH_URL_BAD_PORT,
	"URL port must be between 1 and 65535, not 0"},
	{"", 0, WH_URL_EMPTY,
	"URL is empty"},
	{"https://example.com/#top", 0, WH_URL_FRAGMENT,
	"URL must not contain a fragment"},
	{"https://u:p@example.com/", 0, WH_URL_CREDENTIALS,
	"URL must not contain a user name or password"},
};

static void
run_reason_checks(void)
{
	char		reason[8];
	char	   *canonical = (char *) "not reset";
	WhUrlStatus status;
	size_t		i;

	for (i = 0; i < sizeof(reason_cases) / sizeof(reason_cases[0]); i++)
		expect_reason(reason_cases[i].url, reason_cases[i].allow,
					  reason_cases[i].status, reason_cases[i].reason);

	/* NULL URL, NULL buffers, and a tiny buffer that truncates */
	status = wh_url_check(NULL, 0, &canonical, NULL, 0);
	check(status == WH_URL_EMPTY && canonical == NULL, "NULL URL: got %s",
		  status_name(status));
	status = wh_url_check("https://example.com/", 0, NULL, NULL, 0);
	check(status == WH_URL_OK, "no output buffers: got %s", status_name(status));
	status = wh_url_check("http://example.com/", 0, NULL, reason, sizeof(reason));
	check(status == WH_URL_NOT_HTTPS && strcmp(reason, "URL sch") == 0,
		  "truncated reason: got %s \"%s\"", status_name(status), reason);
	strcpy(reason, "x");
	status = wh_url_check("https://example.com/", 0, NULL, reason, 1);
	check(status == WH_URL_OK && reason[0] == '\0',
		  "one-byte reason buffer: got %s \"%s\"", status_name(status), reason);
}

/* accepted URLs and the canonical form wh_url_check() gives them */
static const struct
{
	const char *url;
	int			allow;
	const char *canonical;
}			canonical_cases[] =
{
	{"HTTPS://EXAMPLE.COM/", 0, "https://EXAMPLE.COM/"},
	{"https://example.com", 0, "https://example.com/"},
	{"https://example.com:0443/x", 0, "https://example.com:443/x"},
	{"https://example.com/a/../b/./c", 0, "https://example.com/b/c"},
	{"https://[0:0:0:0:0:0:0:1]/", 1, "https://[::1]/"},
	{"https://0x7f.1/", 1, "https://127.0.0.1/"},
	{"https://2130706433/", 1, "https://127.0.0.1/"},
	{"https://0177.0.0.1/", 1, "https://127.0.0.1/"},
	{"https://127.1/", 1, "https://127.0.0.1/"},
	{"https://1572395042/", 0, "https://93.184.216.34/"},
};

static void
run_canonical_checks(void)
{
	size_t		i;

	for (i = 0; i < sizeof(canonical_cases) / sizeof(canonical_cases[0]); i++)
		expect_canonical(canonical_cases[i].url, canonical_cases[i].allow,
						 canonical_cases[i].canonical);
}

/* URLs and their verdict with webhooks.allow_private_targets on */
static const struct
{
	const char *url;
	WhUrlStatus status;
}			allow_private_cases[] =
{
	{"https://127.0.0.1:8443/ok", WH_URL_OK},
	{"https://localhost/", WH_URL_OK},
	{"https://10.0.0.1/", WH_URL_OK},
	{"https://[::1]/", WH_URL_OK},
	{"https://[fe80::1]/", WH_URL_OK},
	{"https://169.254.169.254/", WH_URL_METADATA},
	{"https://[::ffff:a9fe:a9fe]/", WH_URL_METADATA},
	{"https://[::a9fe:a9fe]/", WH_URL_METADATA},
	{"https://[fd00:ec2::254]/", WH_URL_METADATA},
	{"https://100.100.100.200/", WH_URL_METADATA},
	{"https://metadata.google.internal/", WH_URL_METADATA},
	{"https://[fe80::1%25eth0]/", WH_URL_MALFORMED},
	/* not normalised by libcurl, so not accepted even where allowed */
	{"https://127.0.0.1./", WH_URL_MALFORMED},
};

static void
run_allow_private_checks(void)
{
	size_t		i;

	for (i = 0; i < sizeof(allow_private_cases) / sizeof(allow_private_cases[0]); i++)
		expect_status(allow_private_cases[i].url, 1, allow_private_cases[i].status);
}

/* wh_addr_blocked() on the address text of family AF_INET or AF_INET6 */
static const char *
blocked_addr(int family, const char *text, int allow)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
	void	   *addr = family == AF_INET ? (void *) &sin->sin_addr : (void *) &sin6->sin6_addr;

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = (sa_family_t) family;
	if (family == AF_INET)
		sin->sin_port = htons(443);
	else
		sin6->sin6_port = htons(443);
	if (inet_pton(family, text, addr) != 1)
		return "test bug";
	return wh_addr_blocked((struct sockaddr *) &ss, allow);
}

static void
expect_blocked(const char *what, const char *got, const char *expected)
{
	check((got == NULL && expected == NULL) ||
		  (got != NULL && expected != NULL && strcmp(got, expected) == 0),
		  "%s: expected \"%s\", got \"%s\"", what,
		  expected ? expected : "(allowed)", got ? got : "(allowed)");
}

/*
 * Addresses and the range they are refused as (NULL: allowed): kind '4' and
 * '6' are socket addresses for wh_addr_blocked(), 'h' host strings for
 * wh_host_blocked().
 */
static const struct
{
	char		kind;
	const char *text;
	int			allow;
	const char *blocked;
}			address_cases[] =
{
	{'4', "127.0.0.1", 0, "loopback address (127.0.0.0/8)"},
	{'4', "127.0.0.1", 1, NULL},
	{'4', "93.184.216.34", 0, NULL},
	{'4', "100.64.0.1", 0, "carrier-grade NAT address (100.64.0.0/10)"},
	{'4', "100.128.0.1", 0, NULL},
	{'4', "172.15.255.255", 0, NULL},
	{'4', "255.255.255.255", 0, "broadcast address (255.255.255.255/32)"},
	{'4', "169.254.169.254", 1, "cloud metadata address (169.254.169.254)"},
	{'6', "::1", 0, "loopback address (::1/128)"},
	{'6', "::1", 1, NULL},
	{'6', "::ffff:169.254.169.254", 1, "cloud metadata address (169.254.169.254, IPv4-mapped)"},
	{'6', "::ffff:93.184.216.34", 0, NULL},
	{'6', "64:ff9b::10.1.2.3", 0, "private address (10.0.0.0/8, NAT64)"},
	{'6', "fd00:ec2::254", 1, "cloud metadata address (fd00:ec2::254)"},
	{'6', "2606:4700:4700::1111", 0, NULL},
	{'6', "2001:db8::1", 0, "documentation address (2001:db8::/32)"},
	{'6', "2001:1ff::1", 0, "reserved address (2001::/23, IETF protocol assignments)"},
	{'6', "2001:200::1", 0, NULL},
	{'6', "8000::1", 0, "unallocated address (outside 2000::/3)"},
	{'h', "2130706433", 0, "loopback address (127.0.0.0/8)"},
	{'h', "0x7f.1.", 0, "loopback address (127.0.0.0/8)"},
	{'h', "[::1]", 0, "loopback address (::1/128)"},
	{'h', "::1", 0, "loopback address (::1/128)"},
	{'h', "example.com", 0, NULL},
	{'h', "localhost", 0, NULL},
	{'h', "93.184.216.34", 0, NULL},
	{'h', "169.254.169.254", 1, "cloud metadata address (169.254.169.254)"},
	{'h', "[fe80::1%eth0]", 1, "invalid address literal"},
	{'h', "256.1.1.1", 1, "invalid address literal"},
	{'h', "[::1", 1, "invalid address literal"},
};

static void
run_address_checks(void)
{
	struct sockaddr_un sun;
	size_t		i;

	for (i = 0; i < sizeof(address_cases) / sizeof(address_cases[0]); i++)
	{
		const char *text = address_cases[i].text;
		int			allow = address_cases[i].allow;
		char		what[128];

		snprintf(what, sizeof(what), "%s %s (allow_private=%d)",
				 address_cases[i].kind == 'h' ? "host" : "addr", text, allow);
		expect_blocked(what,
					   address_cases[i].kind == '4' ? blocked_addr(AF_INET, text, allow) :
					   address_cases[i].kind == '6' ? blocked_addr(AF_INET6, text, allow) :
					   wh_host_blocked(text, allow),
					   address_cases[i].blocked);
	}
	expect_blocked("addr NULL", wh_addr_blocked(NULL, 1),
				   "missing address");
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	check(wh_addr_blocked((struct sockaddr *) &sun, 1) != NULL,
		  "AF_UNIX address allowed");
}

int
main(int argc, char **argv)
{
	const char *dir = (argc > 1) ? argv[1] : ".";

	run_corpus(dir, "bad_urls.txt", 1);
	run_corpus(dir, "good_urls.txt", 0);
	run_length_checks();
	run_reason_checks();
	run_canonical_checks();
	run_allow_private_checks();
	run_address_checks();

	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
