#!/usr/bin/env bash
# test/setup.sh [--bench] [NN]: install what building, testing and the demo
# need on a fresh Debian machine (with --bench, also the benchmark's nginx and
# wrk).  Idempotent: installs only what is missing, and runs apt-get update
# only then.
# The PostgreSQL version is NN, else $WH_PG_VERSION, else the newest server
# already installed (/usr/lib/postgresql/NN), else the release's default (the
# one its `postgresql` package depends on: 15 on Debian 12, 17 on Debian 13).
# The clang for the fuzz target is likewise the release's own.
# test/setup.sh --which [NN] prints the PostgreSQL version and installs nothing.
set -euo pipefail

bench=0
which_only=0
version=${WH_PG_VERSION:-}
for a in "$@"; do
	case "$a" in
		--bench) bench=1 ;;
		--which) which_only=1 ;;
		[0-9]*) version=$a ;;
		*) echo "usage: $0 [--bench] [--which] [POSTGRESQL_MAJOR]" >&2; exit 2 ;;
	esac
done

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
	[ $updated = 1 ] && return 0
	$SUDO apt-get update -qq
	updated=1
}

# default_of PKG: NN of the PKG-NN that the metapackage PKG depends on
default_of() {
	apt-cache depends "$1" 2>/dev/null |
		sed -n "s/^ *|\{0,1\}Depends: $1-\([0-9][0-9]*\)\$/\1/p" | head -n 1
}
pick_default() {
	local v
	v=$(default_of "$1")
	if [ -z "$v" ]; then
		apt_update >&2
		v=$(default_of "$1")
	fi
	[ -n "$v" ] || { echo "setup: cannot tell which $1 this release has" >&2; exit 1; }
	echo "$v"
}
installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

if [ -z "$version" ]; then
	version=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null |
		sed -n 's|^/usr/lib/postgresql/\([0-9][0-9]*\)/bin/postgres$|\1|p' |
		sort -n | tail -n 1)
	[ -n "$version" ] || version=$(pick_default postgresql)
fi
if [ $which_only = 1 ]; then
	echo "$version"
	exit 0
fi

# clang with libFuzzer: the newest one installed with its runtime, else the
# release's default
clang=""
for c in $(ls /usr/bin/clang-[0-9]* 2>/dev/null | sed 's|^/usr/bin/clang-||' | grep -x '[0-9]*' | sort -rn); do
	if installed "libclang-rt-$c-dev"; then
		clang=$c
		break
	fi
done
[ -n "$clang" ] || clang=$(pick_default clang)

packages=(
	postgresql-$version                # server binaries (initdb, postgres, pg_ctl)
	postgresql-server-dev-$version     # PGXS, server headers, pg_regress, isolation tester, TAP modules
	libcurl4-openssl-dev         # libcurl (OpenSSL flavour) headers
	libssl-dev                   # libcrypto (HMAC-SHA256)
	make gcc
	libipc-run-perl              # PostgreSQL::Test::Cluster
	python3                      # the HTTPS test receiver (standard library only)
	python3-h2                   # the HTTP/2 test receiver (test/h2receiver.py)
	openssl curl                 # the test CA; smoke checks
	clang-$clang libclang-rt-$clang-dev  # libFuzzer for the URL validator's fuzz target
)
if [ $bench = 1 ]; then
	packages+=(nginx-light wrk iproute2)  # benchmark sink, load tool, ss (connections)
fi

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "setup: all ${#packages[@]} packages present (PostgreSQL $version, clang $clang)"
	exit 0
fi

echo "setup: installing ${missing[*]}"
apt_update
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the postgresql-NN package may start a default cluster; the tests make their own
echo "setup: done (PostgreSQL $version, clang $clang)"
