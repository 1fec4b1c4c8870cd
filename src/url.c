/*-------------------------------------------------------------------------
 *
 * url.c
 *	  Validation of webhook target URLs and of the addresses they lead to.
 *
 * A webhook URL is typed in by a database user but fetched by a background
 * worker on the database server.  Unchecked, that is a server-side request
 * forgery: "https://169.254.169.254/" hands out cloud credentials, and
 * "https://127.0.0.1:5432/" probes the server itself.  This file decides
 * which URLs may be stored and which addresses may be connected to.
 *
 * There are two lines of defence.  wh_url_check() runs when a URL is
 * registered: it accepts only plain absolute https URLs without user info
 * or fragment, and judges host names and literal addresses so that users get
 * an early and precise error.  But a host name can resolve to anything, and
 * to something else tomorrow (DNS rebinding), so the HTTP code also calls
 * wh_addr_blocked() from libcurl's open-socket callback for every address it
 * is about to connect to.  For host names only that second check is
 * authoritative.
 *
 * URLs are parsed by libcurl's URL API, the parser that later fetches them,
 * so the validator and the fetcher cannot disagree about where the host is.
 * libcurl is lenient, though: it takes "https:/host" and "https:///host",
 * and reads "https://evil\@good" as user "evil\" at host "good", where a
 * browser sees host "evil".  So the raw string is checked before libcurl
 * sees it, and the parts libcurl hands back are checked again afterwards.
 *
 * libcurl rewrites numeric IPv4 spellings such as "2130706433", "0x7f.1" and
 * "127.1" to dotted quads, but not when they have a trailing dot or are
 * percent-encoded, and the system resolver would still read some of those
 * as addresses.  So every host whose last label is a number is parsed here
 * with inet_aton()'s rules and judged as the address it denotes.
 *
 * This file has no PostgreSQL dependency: it is also linked into a
 * standalone test driver and a libFuzzer target.  It keeps no global state
 * (the tables below are constant) and allocates only through libcurl and
 * for the canonical URL it returns, so it is thread-safe and may be called
 * from libcurl callbacks.
 *
 * IDENTIFICATION
 *	  src/url.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <curl/curl.h>

#include "url.h"

#if defined(__GNUC__) || defined(__clang__)
#define WH_PRINTF_ATTR(f, a) __attribute__((format(printf, f, a)))
#else
#define WH_PRINTF_ATTR(f, a)
#endif

#define WH_LENGTHOF(array) (sizeof(array) / sizeof((array)[0]))

/* longest host name DNS can carry, without the trailing dot */
#define WH_MAX_HOSTNAME 253
#define WH_MAX_LABEL 63

/*
 * How an IPv4 address was reached: written as itself, or embedded in an
 * IPv6 address.  Each IPv4 range has one description per way, so that the
 * descriptions can stay static strings.
 */
typedef enum AddrVia
{
	VIA_NATIVE = 0,				/* plain IPv4 */
	VIA_MAPPED,					/* ::ffff:a.b.c.d */
	VIA_NAT64,					/* 64:ff9b::a.b.c.d */
	VIA_COMPAT,					/* ::a.b.c.d (deprecated IPv4-compatible) */
	VIA_COUNT
} AddrVia;

typedef struct Ipv4Range
{
	uint32_t	network;		/* in host byte order */
	int			prefix;			/* prefix length in bits */
	int			metadata;		/* denied even when private ranges are open */
	const char *desc[VIA_COUNT];
} Ipv4Range;

#define WH_IPV4(a, b, c, d) \
	(((uint32_t) (a) << 24) | ((uint32_t) (b) << 16) | \
	 ((uint32_t) (c) << 8) | (uint32_t) (d))

#define V4_RANGE(a, b, c, d, len, what) \
	{ WH_IPV4(a, b, c, d), len, 0, { \
		what " (" #a "." #b "." #c "." #d "/" #len ")", \
		what " (" #a "." #b "." #c "." #d "/" #len ", IPv4-mapped)", \
		what " (" #a "." #b "." #c "." #d "/" #len ", NAT64)", \
		what " (" #a "." #b "." #c "." #d "/" #len ", IPv4-compatible)" } }

#define V4_METADATA(a, b, c, d) \
	{ WH_IPV4(a, b, c, d), 32, 1, { \
		"cloud metadata address (" #a "." #b "." #c "." #d ")", \
		"cloud metadata address (" #a "." #b "." #c "." #d ", IPv4-mapped)", \
		"cloud metadata address (" #a "." #b "." #c "." #d ", NAT64)", \
		"cloud metadata address (" #a "." #b "." #c "." #d ", IPv4-compatible)" } }

/*
 * IPv4 ranges that are not on the public internet.  The first match wins,
 * so metadata addresses come first (they must be found even when private
 * ranges are allowed) and more specific ranges precede wider ones.
 */
static const Ipv4Range ipv4_ranges[] = {
	V4_METADATA(169, 254, 169, 254),	/* AWS, GCP, Azure, OCI, ... */
	V4_METADATA(169, 254, 170, 2),	/* AWS ECS task metadata */
	V4_METADATA(169, 254, 0, 23),	/* Tencent Cloud */
	V4_METADATA(100, 100, 100, 200),	/* Alibaba Cloud */
	V4_METADATA(168, 63, 129, 16),	/* Azure WireServer (a public address) */
	V4_RANGE(0, 0, 0, 0, 8, "unspecified address"),
	V4_RANGE(10, 0, 0, 0, 8, "private address"),
	V4_RANGE(100, 64, 0, 0, 10, "carrier-grade NAT address"),
	V4_RANGE(127, 0, 0, 0, 8, "loopback address"),
	V4_RANGE(169, 254, 0, 0, 16, "link-local address"),
	V4_RANGE(172, 16, 0, 0, 12, "private address"),
	V4_RANGE(192, 0, 0, 0, 24, "reserved address"),
	V4_RANGE(192, 0, 2, 0, 24, "documentation address"),
	V4_RANGE(192, 88, 99, 0, 24, "reserved address"),
	V4_RANGE(192, 168, 0, 0, 16, "private address"),
	V4_RANGE(198, 18, 0, 0, 15, "benchmarking address"),
	V4_RANGE(198, 51, 100, 0, 24, "documentation address"),
	V4_RANGE(203, 0, 113, 0, 24, "documentation address"),
	V4_RANGE(224, 0, 0, 0, 4, "multicast address"),
	V4_RANGE(255, 255, 255, 255, 32, "broadcast address"),
	V4_RANGE(240, 0, 0, 0, 4, "reserved address"),
};

typedef struct Ipv6Range
{
	unsigned char network[16];
	int			prefix;			/* prefix length in bits */
	const char *desc;
} Ipv6Range;

/* IPv6 metadata addresses, denied even when private ranges are allowed */
static const Ipv6Range ipv6_metadata[] = {
	{{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54}, 128,
	"cloud metadata address (fd00:ec2::254)"},
};

/*
 * IPv6 ranges that are not on the public internet, first match wins.
 * ::ffff:0:0/96, 64:ff9b::/96 and ::/96 embed an IPv4 address and are
 * handled in judge_ipv6() before this table is consulted.  Everything
 * outside 2000::/3 that is not listed is refused as unallocated.
 */
static const Ipv6Range ipv6_ranges[] = {
	{{0}, 128, "unspecified address (::/128)"},
	{{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128,
	"loopback address (::1/128)"},
	{{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48,
	"private address (64:ff9b:1::/48, local-use NAT64)"},
	{{0x01, 0x00}, 64, "discard-only address (100::/64)"},
	{{0x20, 0x01, 0x00, 0x00}, 32, "reserved address (2001::/32, Teredo)"},
	{{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation address (2001:db8::/32)"},
	{{0x20, 0x01, 0x00}, 23,
	"reserved address (2001::/23, IETF protocol assignments)"},
	{{0x20, 0x02}, 16, "reserved address (2002::/16, 6to4)"},
	{{0x3f, 0xff, 0x00}, 20, "documentation address (3fff::/20)"},
	{{0xfc}, 7, "unique local address (fc00::/7)"},
	{{0xfe, 0x80}, 10, "link-local address (fe80::/10)"},
	{{0xfe, 0xc0}, 10, "site-local address (fec0::/10)"},
	{{0xff}, 8, "multicast address (ff00::/8)"},
	{{0x20}, 3, NULL},			/* global unicast: allowed */
};

static const char ipv6_unallocated[] = "unallocated address (outside 2000::/3)";
static const char ipv6_compat[] = "reserved address (::/96, IPv4-compatible)";

/* host names that name the local machine, besides *.localhost */
static const char *const local_names[] = {
	"localhost",
	"localhost.localdomain",
	"localhost4",
	"localhost4.localdomain4",
	"localhost6",
	"localhost6.localdomain6",
	"ip6-localhost",
	"ip6-loopback",
	"ip6-localnet",
	"ip6-mcastprefix",
	"ip6-allnodes",
	"ip6-allrouters",
};

/* host names of cloud metadata services, besides instance-data.*.internal */
static const char *const metadata_names[] = {
	"metadata",
	"metadata.google.internal",
	"metadata.goog",
	"instance-data",
	"instance-data.ec2.internal",
	"metadata.tencentyun.com",
};

/* result of parsing a host as an address literal */
typedef enum LiteralKind
{
	LITERAL_NONE,				/* a host name, not an address */
	LITERAL_INVALID,			/* looks like an address but is not one */
	LITERAL_IPV4,
	LITERAL_IPV6
} LiteralKind;

static void set_reason(char *buf, size_t len, const char *fmt,...) WH_PRINTF_ATTR(3, 4);


/*
 * Write a reason into the caller's buffer, if there is one.
 */
static void
set_reason(char *buf, size_t len, const char *fmt,...)
{
	va_list		args;

	if (buf == NULL || len == 0)
		return;
	va_start(args, fmt);
	vsnprintf(buf, len, fmt, args);
	va_end(args);
}

/*
 * "a" or "an" for one of our range descriptions.
 */
static const char *
article(const char *desc)
{
	if (desc[0] == 'a' || desc[0] == 'e' || desc[0] == 'i' || desc[0] == 'o' ||
		(desc[0] == 'u' && desc[1] == 'n' && desc[2] != 'i'))
		return "an";
	return "a";
}

static int
ascii_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* case-insensitive comparison of s (length len) with NUL-terminated word */
static int
equals_ci(const char *s, size_t len, const char *word)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		if (word[i] == '\0' || ascii_lower((unsigned char) s[i]) != word[i])
			return 0;
	}
	return word[len] == '\0';
}

static int
hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Does the last dot-separated label of s (length len, trailing dot already
 * removed) look like a number?  As in the WHATWG URL standard, such a host
 * is an IPv4 address or invalid, never a name: "example.123" is refused
 * rather than sent to DNS.
 */
static int
ends_in_number(const char *s, size_t len)
{
	size_t		start = len;
	size_t		i;

	while (start > 0 && s[start - 1] != '.')
		start--;
	if (start == len)
		return 0;
	if (len - start >= 2 && s[start] == '0' &&
		(s[start + 1] == 'x' || s[start + 1] == 'X'))
	{
		for (i = start + 2; i < len; i++)
		{
			if (hex_value((unsigned char) s[i]) < 0)
				return 0;
		}
		return 1;
	}
	for (i = start; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return 0;
	}
	return 1;
}

/*
 * Parse s (length len) as an IPv4 address with the rules of inet_aton():
 * one to four parts separated by dots, each decimal, octal (leading "0") or
 * hexadecimal (leading "0x"), the last part filling all remaining bytes, so
 * "127.1" is 127.0.0.1 and "2130706433" is too.  No trailing dot, no
 * trailing garbage.  On success stores the address in host byte order.
 */
static int
parse_ipv4(const char *s, size_t len, uint32_t *addr)
{
	uint32_t	parts[4];
	int			nparts = 0;
	size_t		i = 0;
	uint32_t	result = 0;
	uint32_t	last_max;
	int			k;

	for (;;)
	{
		uint64_t	value = 0;
		int			base = 10;
		size_t		start;

		if (nparts == 4 || i >= len)
			return 0;			/* too many parts, or an empty last part */
		if (s[i] == '0' && i + 1 < len && (s[i + 1] == 'x' || s[i + 1] == 'X'))
		{
			base = 16;
			i += 2;
		}
		else if (s[i] == '0')
			base = 8;
		start = i;
		while (i < len && s[i] != '.')
		{
			int			digit = hex_value((unsigned char) s[i]);

			if (digit < 0 || digit >= base)
				return 0;
			value = value * (uint64_t) base + (uint64_t) digit;
			if (value > 0xFFFFFFFFu)
				return 0;
			i++;
		}
		if (i == start)
			return 0;			/* empty part, or "0x" without digits */
		parts[nparts++] = (uint32_t) value;
		if (i == len)
			break;
		i++;					/* skip the dot */
	}

	/* all parts but the last are single bytes; the last fills the rest */
	for (k = 0; k < nparts - 1; k++)
	{
		if (parts[k] > 255)
			return 0;
		result |= parts[k] << (24 - 8 * k);
	}
	last_max = (nparts == 1) ? 0xFFFFFFFFu :
		(((uint32_t) 1 << (8 * (5 - nparts))) - 1);
	if (parts[nparts - 1] > last_max)
		return 0;
	*addr = result | parts[nparts - 1];
	return 1;
}

/*
 * Parse a host as an address literal: "[IPv6]" or bare IPv6, or IPv4 in
 * any inet_aton() spelling with an optional trailing dot.  IPv4 is stored
 * in network byte order in the first four bytes of addr.
 */
static LiteralKind
parse_literal(const char *host, size_t len, unsigned char addr[16])
{
	char		buf[INET6_ADDRSTRLEN + 1];
	const char *inner = host;
	size_t		inner_len = len;
	uint32_t	v4;

	if (len > 0 && host[0] == '[')
	{
		if (len < 2 || host[len - 1] != ']')
			return LITERAL_INVALID;
		inner = host + 1;
		inner_len = len - 2;
	}
	if (inner != host || memchr(host, ':', len) != NULL)
	{
		/* IPv6; a zone id ("%eth0") makes it refused here */
		if (inner_len >= sizeof(buf) || memchr(inner, '%', inner_len) != NULL)
			return LITERAL_INVALID;
		memcpy(buf, inner, inner_len);
		buf[inner_len] = '\0';
		if (inet_pton(AF_INET6, buf, addr) != 1)
			return LITERAL_INVALID;
		return LITERAL_IPV6;
	}

	if (len > 0 && host[len - 1] == '.')
		len--;
	if (!ends_in_number(host, len))
		return LITERAL_NONE;
	if (!parse_ipv4(host, len, &v4))
		return LITERAL_INVALID;
	v4 = htonl(v4);
	memcpy(addr, &v4, 4);
	return LITERAL_IPV4;
}

/*
 * Judge an IPv4 address (host byte order).  Returns NULL if allowed, else
 * the static description of its range; *metadata tells whether it is a
 * metadata address, which is refused even with allow_private.
 */
static const char *
judge_ipv4(uint32_t addr, int allow_private, AddrVia via, int *metadata)
{
	size_t		i;

	*metadata = 0;
	for (i = 0; i < WH_LENGTHOF(ipv4_ranges); i++)
	{
		const Ipv4Range *range = &ipv4_ranges[i];
		uint32_t	mask;

		mask = (range->prefix == 0) ? 0 : (0xFFFFFFFFu << (32 - range->prefix));
		if ((addr & mask) != range->network)
			continue;
		if (range->metadata)
		{
			*metadata = 1;
			return range->desc[via];
		}
		return allow_private ? NULL : range->desc[via];
	}
	return NULL;
}

/* are the first prefix bits of addr those of network? */
static int
prefix_matches(const unsigned char *addr, const unsigned char *network,
			   int prefix)
{
	int			full = prefix / 8;
	int			rest = prefix % 8;
	unsigned char mask;

	if (memcmp(addr, network, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	mask = (unsigned char) (0xFF << (8 - rest));
	return (addr[full] & mask) == (network[full] & mask);
}

/*
 * Judge an IPv6 address (16 bytes, network order), like judge_ipv4().
 * Addresses that embed an IPv4 address are judged by that address.
 */
static const char *
judge_ipv6(const unsigned char *addr, int allow_private, int *metadata)
{
	static const unsigned char mapped_prefix[12] =
	{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char nat64_prefix[12] =
	{0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
	static const unsigned char zero_prefix[12] = {0};
	uint32_t	v4;
	size_t		i;

	*metadata = 0;
	for (i = 0; i < WH_LENGTHOF(ipv6_metadata); i++)
	{
		if (prefix_matches(addr, ipv6_metadata[i].network,
						   ipv6_metadata[i].prefix))
		{
			*metadata = 1;
			return ipv6_metadata[i].desc;
		}
	}

	v4 = ((uint32_t) addr[12] << 24) | ((uint32_t) addr[13] << 16) |
		((uint32_t) addr[14] << 8) | (uint32_t) addr[15];
	if (memcmp(addr, mapped_prefix, 12) == 0)
		return judge_ipv4(v4, allow_private, VIA_MAPPED, metadata);
	if (memcmp(addr, nat64_prefix, 12) == 0)
		return judge_ipv4(v4, allow_private, VIA_NAT64, metadata);
	if (memcmp(addr, zero_prefix, 12) == 0 && v4 > 1)
	{
		const char *desc;

		/* deprecated IPv4-compatible: no metadata, else reserved */
		desc = judge_ipv4(v4, 1, VIA_COMPAT, metadata);
		if (desc != NULL)
			return desc;
		return allow_private ? NULL : ipv6_compat;
	}

	if (allow_private)
		return NULL;
	for (i = 0; i < WH_LENGTHOF(ipv6_ranges); i++)
	{
		if (prefix_matches(addr, ipv6_ranges[i].network, ipv6_ranges[i].prefix))
			return ipv6_ranges[i].desc;
	}
	return ipv6_unallocated;
}

/*
 * Judge a parsed literal (see parse_literal()).
 */
static const char *
judge_literal(LiteralKind kind, const unsigned char *addr, int allow_private,
			  int *metadata)
{
	uint32_t	v4;

	if (kind == LITERAL_IPV6)
		return judge_ipv6(addr, allow_private, metadata);
	memcpy(&v4, addr, 4);
	return judge_ipv4(ntohl(v4), allow_private, VIA_NATIVE, metadata);
}

const char *
wh_addr_blocked(const struct sockaddr *sa, int allow_private)
{
	int			metadata;

	if (sa == NULL)
		return "missing address";
	if (sa->sa_family == AF_INET)
	{
		struct sockaddr_in sin;

		memcpy(&sin, sa, sizeof(sin));
		return judge_ipv4(ntohl(sin.sin_addr.s_addr), allow_private,
						  VIA_NATIVE, &metadata);
	}
	if (sa->sa_family == AF_INET6)
	{
		struct sockaddr_in6 sin6;

		memcpy(&sin6, sa, sizeof(sin6));
		return judge_ipv6(sin6.sin6_addr.s6_addr, allow_private, &metadata);
	}
	return "address of a family other than IPv4 and IPv6";
}

const char *
wh_host_blocked(const char *host, int allow_private)
{
	unsigned char addr[16];
	int			metadata;
	LiteralKind kind;

	if (host == NULL)
		return "missing host";
	kind = parse_literal(host, strlen(host), addr);
	if (kind == LITERAL_NONE)
		return NULL;
	if (kind == LITERAL_INVALID)
		return "invalid address literal";
	return judge_literal(kind, addr, allow_private, &metadata);
}

/*
 * Is name (length len, lowercase, no trailing dot) a metadata service?
 */
static int
is_metadata_name(const char *name, size_t len)
{
	static const char prefix[] = "instance-data.";
	static const char suffix[] = ".internal";
	size_t		i;

	for (i = 0; i < WH_LENGTHOF(metadata_names); i++)
	{
		if (equals_ci(name, len, metadata_names[i]))
			return 1;
	}
	return len > strlen(prefix) + strlen(suffix) &&
		memcmp(name, prefix, strlen(prefix)) == 0 &&
		memcmp(name + len - strlen(suffix), suffix, strlen(suffix)) == 0;
}

/*
 * Is name (length len, lowercase, no trailing dot) the local machine?
 */
static int
is_local_name(const char *name, size_t len)
{
	static const char suffix[] = ".localhost";
	size_t		i;

	for (i = 0; i < WH_LENGTHOF(local_names); i++)
	{
		if (equals_ci(name, len, local_names[i]))
			return 1;
	}
	return len > strlen(suffix) &&
		memcmp(name + len - strlen(suffix), suffix, strlen(suffix)) == 0;
}

/*
 * Judge the host part as libcurl returned it (percent-decoded, IPv6 in
 * brackets, numeric IPv4 usually already rewritten as a dotted quad).
 */
static WhUrlStatus
check_host(const char *host, int allow_private, char *reason_buf,
		   size_t reason_len)
{
	size_t		len = strlen(host);
	size_t		name_len;
	size_t		label_len = 0;
	size_t		i;
	unsigned char addr[16];
	char		lower[WH_MAX_HOSTNAME + 1];
	char		dotted[INET_ADDRSTRLEN];
	const char *desc;
	int			metadata;
	LiteralKind kind;

	if (len == 0)
	{
		set_reason(reason_buf, reason_len, "URL has no host");
		return WH_URL_NO_HOST;
	}

	if (host[0] == '[')
	{
		kind = parse_literal(host, len, addr);
		if (kind != LITERAL_IPV6)
		{
			set_reason(reason_buf, reason_len,
					   "URL is not a valid absolute URL (host is not a valid IPv6 address)");
			return WH_URL_MALFORMED;
		}
		desc = judge_literal(kind, addr, allow_private, &metadata);
		if (desc != NULL)
		{
			/* in lower case, as newer libcurl versions hand it back */
			for (i = 0; i < len && i < sizeof(lower) - 1; i++)
				lower[i] = (host[i] >= 'A' && host[i] <= 'F') ?
					host[i] - 'A' + 'a' : host[i];
			lower[i] = '\0';
			set_reason(reason_buf, reason_len, "host %s is %s %s",
					   lower, article(desc), desc);
			return metadata ? WH_URL_METADATA : WH_URL_PRIVATE_ADDRESS;
		}
		return WH_URL_OK;
	}

	/*
	 * A name or IPv4: at most 253 characters of letters, digits, '-' and
	 * '_' in non-empty labels of at most 63.  Checking the length first also
	 * bounds the length of the reasons below that quote the host.
	 */
	name_len = (host[len - 1] == '.') ? len - 1 : len;
	if (name_len > WH_MAX_HOSTNAME)
	{
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (host name is longer than %d characters)",
				   WH_MAX_HOSTNAME);
		return WH_URL_MALFORMED;
	}
	for (i = 0; i < name_len; i++)
	{
		char		c = host[i];

		if (c == '.')
		{
			if (label_len == 0)
				break;
			label_len = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_'))
		{
			set_reason(reason_buf, reason_len,
					   "URL is not a valid absolute URL (host name contains a character other than letters, digits, \"-\", \"_\" and \".\")");
			return WH_URL_MALFORMED;
		}
		if (++label_len > WH_MAX_LABEL)
		{
			set_reason(reason_buf, reason_len,
					   "URL is not a valid absolute URL (host name has a label longer than %d characters)",
					   WH_MAX_LABEL);
			return WH_URL_MALFORMED;
		}
	}
	if (name_len == 0 || i < name_len || label_len == 0)
	{
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (host %s has an empty label)",
				   host);
		return WH_URL_MALFORMED;
	}

	kind = parse_literal(host, len, addr);
	if (kind == LITERAL_INVALID)
	{
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (host %s ends in a number but is not a valid IPv4 address)",
				   host);
		return WH_URL_MALFORMED;
	}
	if (kind == LITERAL_IPV4)
	{
		inet_ntop(AF_INET, addr, dotted, sizeof(dotted));
		desc = judge_literal(kind, addr, allow_private, &metadata);
		if (desc != NULL)
		{
			if (strcmp(host, dotted) == 0)
				set_reason(reason_buf, reason_len, "host %s is %s %s",
						   host, article(desc), desc);
			else
				set_reason(reason_buf, reason_len, "host %s (%s) is %s %s",
						   host, dotted, article(desc), desc);
			return metadata ? WH_URL_METADATA : WH_URL_PRIVATE_ADDRESS;
		}

		/*
		 * libcurl leaves a trailing dot and percent-encoded digits alone,
		 * and the resolver would then look the string up in DNS instead of
		 * using the address.  Ask for the plain form rather than guess.
		 */
		if (strcmp(host, dotted) != 0)
		{
			set_reason(reason_buf, reason_len,
					   "URL is not a valid absolute URL (write the IPv4 address %s as %s)",
					   host, dotted);
			return WH_URL_MALFORMED;
		}
		return WH_URL_OK;
	}

	for (i = 0; i < name_len; i++)
		lower[i] = (char) ascii_lower((unsigned char) host[i]);
	lower[name_len] = '\0';
	if (is_metadata_name(lower, name_len))
	{
		set_reason(reason_buf, reason_len,
				   "host %s is a cloud metadata address", host);
		return WH_URL_METADATA;
	}
	if (!allow_private && is_local_name(lower, name_len))
	{
		set_reason(reason_buf, reason_len,
				   "host name %s refers to the local machine", host);
		return WH_URL_LOCAL_NAME;
	}
	return WH_URL_OK;
}

/*
 * Checks on the raw string, before libcurl sees it: length, characters,
 * scheme, the two slashes, and the things libcurl would accept but we do
 * not (user info, backslashes in the authority, fragments).
 */
static WhUrlStatus
check_raw(const char *url, char *reason_buf, size_t reason_len)
{
	size_t		len;
	size_t		i;
	size_t		auth_len;
	const char *auth;

	if (url == NULL || url[0] == '\0')
	{
		set_reason(reason_buf, reason_len, "URL is empty");
		return WH_URL_EMPTY;
	}

	/* count without running through a huge string */
	for (len = 0; url[len] != '\0'; len++)
	{
		if (len >= WH_URL_MAX_LENGTH)
		{
			set_reason(reason_buf, reason_len,
					   "URL is longer than %d characters", WH_URL_MAX_LENGTH);
			return WH_URL_TOO_LONG;
		}
	}

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) url[i];

		if (c <= 0x20 || c >= 0x7f)
		{
			set_reason(reason_buf, reason_len,
					   "URL contains whitespace, control or non-ASCII characters (%s 0x%02x at position %zu)",
					   c == ' ' ? "space" :
					   (c < 0x80 ? "control character" : "non-ASCII byte"),
					   c, i + 1);
			return WH_URL_BAD_CHARACTERS;
		}
	}

	/* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" */
	i = 0;
	if ((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z'))
	{
		for (i = 1; url[i] != '\0'; i++)
		{
			char		c = url[i];

			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				  (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))
				break;
		}
	}
	if (i == 0 || url[i] != ':')
	{
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (it has no scheme)");
		return WH_URL_MALFORMED;
	}
	if (!equals_ci(url, i, "https"))
	{
		set_reason(reason_buf, reason_len,
				   "URL scheme must be https, not \"%.*s\"",
				   (int) (i > 32 ? 32 : i), url);
		return WH_URL_NOT_HTTPS;
	}

	/* exactly two slashes: no "https:host", "https:/host", "https:///host" */
	if (url[6] != '/' || url[7] != '/' || url[8] == '/' || url[8] == '\\')
	{
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (\"https:\" must be followed by exactly two slashes and the host)");
		return WH_URL_MALFORMED;
	}
	if (url[8] == '\0')
	{
		set_reason(reason_buf, reason_len, "URL has no host");
		return WH_URL_NO_HOST;
	}

	/* the authority ends where libcurl ends it */
	auth = url + 8;
	auth_len = strcspn(auth, "/?#");
	if (memchr(auth, '@', auth_len) != NULL)
	{
		set_reason(reason_buf, reason_len,
				   "URL must not contain a user name or password");
		return WH_URL_CREDENTIALS;
	}
	if (memchr(auth, '\\', auth_len) != NULL)
	{
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (backslash before the end of the host)");
		return WH_URL_MALFORMED;
	}
	for (i = 0; i + 2 < auth_len; i++)
	{
		int			hi,
					lo;

		if (auth[i] != '%')
			continue;
		hi = hex_value((unsigned char) auth[i + 1]);
		lo = hex_value((unsigned char) auth[i + 2]);
		if (hi < 0 || lo < 0)
			continue;
		if (hi * 16 + lo <= 0x20 || hi * 16 + lo >= 0x7f)
		{
			set_reason(reason_buf, reason_len,
					   "URL contains whitespace, control or non-ASCII characters (percent-encoded byte 0x%02x in the host)",
					   hi * 16 + lo);
			return WH_URL_BAD_CHARACTERS;
		}
	}

	if (strchr(url, '#') != NULL)
	{
		set_reason(reason_buf, reason_len, "URL must not contain a fragment");
		return WH_URL_FRAGMENT;
	}
	return WH_URL_OK;
}

/*
 * Judge the host as it is written, where libcurl versions differ in what
 * they hand back: 7.x leaves a trailing dot and percent-encoded IPv4
 * spellings alone, while 8.x rewrites some of them to plain dotted quads
 * (so "93.184.216.34." would pass) or rejects them with errors of its own.  Hosts with a trailing dot or a
 * percent sign are therefore judged here first, on the percent-decoded
 * text, and IPv6 zone ids are refused here, so that the verdict and its
 * reason do not depend on the libcurl the server has.  Anything else, and
 * anything this cannot read, is left to the checks after libcurl's parse.
 */
static WhUrlStatus
check_raw_host(const char *url, int allow_private, char *reason_buf,
			   size_t reason_len)
{
	const char *auth = url + 8;
	size_t		auth_len = strcspn(auth, "/?#");
	size_t		host_len;
	size_t		i;
	size_t		n = 0;
	char		host[WH_MAX_HOSTNAME + 3];

	if (auth[0] == '[')
	{
		const char *close = memchr(auth, ']', auth_len);

		if (close == NULL || (size_t) (close - auth) + 1 >= sizeof(host))
			return WH_URL_OK;
		host_len = (size_t) (close - auth) + 1;
		if (memchr(auth, '%', host_len) != NULL)
		{
			set_reason(reason_buf, reason_len,
					   "URL is not a valid absolute URL (IPv6 zone ids are not allowed)");
			return WH_URL_MALFORMED;
		}
		return WH_URL_OK;
	}

	host_len = strcspn(auth, ":");
	if (host_len > auth_len)
		host_len = auth_len;
	if (host_len == 0 ||
		(auth[host_len - 1] != '.' && memchr(auth, '%', host_len) == NULL))
		return WH_URL_OK;
	for (i = 0; i < host_len; i++)
	{
		int			c = (unsigned char) auth[i];

		if (c == '%')
		{
			int			hi = i + 2 < host_len ? hex_value((unsigned char) auth[i + 1]) : -1;
			int			lo = i + 2 < host_len ? hex_value((unsigned char) auth[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				return WH_URL_OK;
			c = hi * 16 + lo;
			i += 2;
		}
		if (n + 1 >= sizeof(host))
			return WH_URL_OK;
		host[n++] = (char) c;
	}
	host[n] = '\0';
	return check_host(host, allow_private, reason_buf, reason_len);
}

/*
 * What libcurl's errors from parsing the whole URL mean: a verdict of its
 * own with its reason, or (WH_URL_MALFORMED) what libcurl found wrong.
 */
static const struct
{
	CURLUcode	rc;
	WhUrlStatus status;
	const char *text;
}			curl_errors[] =
{
	{CURLUE_BAD_PORT_NUMBER, WH_URL_BAD_PORT, "URL port must be between 1 and 65535"},
	{CURLUE_NO_HOST, WH_URL_NO_HOST, "URL has no host"},
	{CURLUE_USER_NOT_ALLOWED, WH_URL_CREDENTIALS, "URL must not contain a user name or password"},
	{CURLUE_UNSUPPORTED_SCHEME, WH_URL_NOT_HTTPS, "URL scheme must be https"},
	{CURLUE_OUT_OF_MEMORY, WH_URL_MALFORMED, "out of memory while parsing it"},
	{CURLUE_URLDECODE, WH_URL_MALFORMED, "invalid percent-encoding"},
#if LIBCURL_VERSION_NUM >= 0x075100
	{CURLUE_BAD_HOSTNAME, WH_URL_MALFORMED, "invalid host name"},
	{CURLUE_BAD_IPV6, WH_URL_MALFORMED, "invalid IPv6 address"},
	{CURLUE_BAD_PATH, WH_URL_MALFORMED, "invalid path"},
	{CURLUE_BAD_QUERY, WH_URL_MALFORMED, "invalid query"},
	{CURLUE_BAD_SLASHES, WH_URL_MALFORMED, "wrong number of slashes after the scheme"},
	{CURLUE_BAD_LOGIN, WH_URL_CREDENTIALS, "URL must not contain a user name or password"},
	{CURLUE_BAD_USER, WH_URL_CREDENTIALS, "URL must not contain a user name or password"},
	{CURLUE_BAD_PASSWORD, WH_URL_CREDENTIALS, "URL must not contain a user name or password"},
	{CURLUE_BAD_FRAGMENT, WH_URL_FRAGMENT, "URL must not contain a fragment"},
#endif
};

/*
 * Map a libcurl error from parsing the whole URL to our verdict.
 */
static WhUrlStatus
map_curl_error(CURLUcode rc, char *reason_buf, size_t reason_len)
{
	const char *what = "rejected by the URL parser";
	size_t		i;

	for (i = 0; i < sizeof(curl_errors) / sizeof(curl_errors[0]); i++)
	{
		if (curl_errors[i].rc != rc)
			continue;
		if (curl_errors[i].status != WH_URL_MALFORMED)
		{
			set_reason(reason_buf, reason_len, "%s", curl_errors[i].text);
			return curl_errors[i].status;
		}
		what = curl_errors[i].text;
		break;
	}
	set_reason(reason_buf, reason_len,
			   "URL is not a valid absolute URL (%s, libcurl error %d)",
			   what, (int) rc);
	return WH_URL_MALFORMED;
}

/*
 * Checks on the parts libcurl parsed out of the URL.
 */
static WhUrlStatus
check_parts(CURLU *handle, int allow_private, char *reason_buf,
			size_t reason_len)
{
	char	   *part = NULL;
	CURLUcode	rc;
	WhUrlStatus status;

	rc = curl_url_get(handle, CURLUPART_SCHEME, &part, 0);
	if (rc != CURLUE_OK || strcmp(part, "https") != 0)
	{
		set_reason(reason_buf, reason_len,
				   "URL scheme must be https, not \"%s\"",
				   rc == CURLUE_OK ? part : "");
		curl_free(part);
		return WH_URL_NOT_HTTPS;
	}
	curl_free(part);
	part = NULL;

	if (curl_url_get(handle, CURLUPART_USER, &part, 0) == CURLUE_OK ||
		curl_url_get(handle, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK ||
		curl_url_get(handle, CURLUPART_OPTIONS, &part, 0) == CURLUE_OK)
	{
		curl_free(part);
		set_reason(reason_buf, reason_len,
				   "URL must not contain a user name or password");
		return WH_URL_CREDENTIALS;
	}

	if (curl_url_get(handle, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK)
	{
		curl_free(part);
		set_reason(reason_buf, reason_len, "URL must not contain a fragment");
		return WH_URL_FRAGMENT;
	}

	if (curl_url_get(handle, CURLUPART_ZONEID, &part, 0) == CURLUE_OK)
	{
		curl_free(part);
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (IPv6 zone ids are not allowed)");
		return WH_URL_MALFORMED;
	}

	rc = curl_url_get(handle, CURLUPART_PORT, &part, 0);
	if (rc == CURLUE_OK)
	{
		char	   *end;
		long		port = strtol(part, &end, 10);

		if (*end != '\0' || port < 1 || port > 65535)
		{
			set_reason(reason_buf, reason_len,
					   "URL port must be between 1 and 65535, not %s", part);
			curl_free(part);
			return WH_URL_BAD_PORT;
		}
		curl_free(part);
	}
	else if (rc != CURLUE_NO_PORT)
		return map_curl_error(rc, reason_buf, reason_len);
	part = NULL;

	rc = curl_url_get(handle, CURLUPART_HOST, &part, 0);
	if (rc != CURLUE_OK)
	{
		if (rc == CURLUE_NO_HOST)
		{
			set_reason(reason_buf, reason_len, "URL has no host");
			return WH_URL_NO_HOST;
		}
		return map_curl_error(rc, reason_buf, reason_len);
	}
	status = check_host(part, allow_private, reason_buf, reason_len);
	curl_free(part);
	return status;
}

/*
 * Serialise the parsed URL, and make sure parsing that again gives the same
 * string, so that what we store is what will be fetched.  On success
 * *result is a curl-allocated string.
 */
static WhUrlStatus
serialise(CURLU *handle, char **result, char *reason_buf, size_t reason_len)
{
	char	   *first = NULL;
	char	   *second = NULL;
	CURLU	   *again;
	CURLUcode	rc;
	int			stable;

	*result = NULL;
	rc = curl_url_get(handle, CURLUPART_URL, &first, 0);
	if (rc != CURLUE_OK)
		return map_curl_error(rc, reason_buf, reason_len);

	again = curl_url();
	if (again == NULL)
	{
		curl_free(first);
		return map_curl_error(CURLUE_OUT_OF_MEMORY, reason_buf, reason_len);
	}
	rc = curl_url_set(again, CURLUPART_URL, first, CURLU_DISALLOW_USER);
	if (rc == CURLUE_OK)
		rc = curl_url_get(again, CURLUPART_URL, &second, 0);
	stable = (rc == CURLUE_OK && strcmp(first, second) == 0);
	curl_free(second);
	curl_url_cleanup(again);
	if (!stable)
	{
		curl_free(first);
		if (rc == CURLUE_OUT_OF_MEMORY)
			return map_curl_error(rc, reason_buf, reason_len);
		set_reason(reason_buf, reason_len,
				   "URL is not a valid absolute URL (it changes when parsed again)");
		return WH_URL_MALFORMED;
	}
	*result = first;
	return WH_URL_OK;
}

WhUrlStatus
wh_url_check(const char *url, int allow_private, char **canonical,
			 char *reason_buf, size_t reason_len)
{
	CURLU	   *handle;
	CURLUcode	rc;
	WhUrlStatus status;
	char	   *serialised = NULL;

	if (canonical != NULL)
		*canonical = NULL;
	set_reason(reason_buf, reason_len, "%s", "");

	status = check_raw(url, reason_buf, reason_len);
	if (status != WH_URL_OK)
		return status;
	status = check_raw_host(url, allow_private, reason_buf, reason_len);
	if (status != WH_URL_OK)
		return status;

	handle = curl_url();
	if (handle == NULL)
		return map_curl_error(CURLUE_OUT_OF_MEMORY, reason_buf, reason_len);

	/* no CURLU_NON_SUPPORT_SCHEME, no guessing, no spaces */
	rc = curl_url_set(handle, CURLUPART_URL, url, CURLU_DISALLOW_USER);
	if (rc != CURLUE_OK)
		status = map_curl_error(rc, reason_buf, reason_len);
	else
		status = check_parts(handle, allow_private, reason_buf, reason_len);
	if (status == WH_URL_OK)
		status = serialise(handle, &serialised, reason_buf, reason_len);
	curl_url_cleanup(handle);
	if (status != WH_URL_OK)
		return status;

	/* hand out a malloc'd copy, as promised, not curl's allocation */
	if (canonical != NULL)
	{
		size_t		size = strlen(serialised) + 1;

		*canonical = malloc(size);
		if (*canonical == NULL)
		{
			curl_free(serialised);
			return map_curl_error(CURLUE_OUT_OF_MEMORY, reason_buf,
								  reason_len);
		}
		memcpy(*canonical, serialised, size);
	}
	curl_free(serialised);
	return WH_URL_OK;
}
