#!/usr/bin/env bash
# test/setup.sh [--bench]: install what building, testing and the demo need
# on a fresh Debian 12 machine (with --bench, also the benchmark's nginx and
# wrk).  Idempotent: installs only what is missing, and runs apt-get update
# only then.
set -euo pipefail

packages=(
	postgresql-15                # server binaries (initdb, postgres, pg_ctl)
	postgresql-server-dev-15     # PGXS, server headers, pg_regress, isolation tester, TAP modules
	libcurl4-openssl-dev         # libcurl (OpenSSL flavour) headers
	libssl-dev                   # libcrypto (HMAC-SHA256)
	make gcc
	libipc-run-perl              # PostgreSQL::Test::Cluster
	python3                      # the HTTPS test receiver (standard library only)
	python3-h2                   # the HTTP/2 test receiver (test/h2receiver.py)
	openssl curl                 # the test CA; smoke checks
	clang-14 libclang-rt-14-dev  # libFuzzer for the URL validator's fuzz target
)
if [ "${1:-}" = "--bench" ]; then
	packages+=(nginx-light wrk)  # benchmark sink and load tool
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "setup: all ${#packages[@]} packages present"
	exit 0
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the postgresql-15 package may start a default cluster; the tests make their own
echo "setup: done"
