#!/usr/bin/env bash
# test/check.sh: the whole test suite from a clean checkout.
#   set-up (packages), build, install, then `make installcheck` (pg_regress,
#   isolation, TAP: each on its own temp instance), the URL validator's
#   corpus driver and a short fuzzing run.
# initdb refuses to run as root, so as root the suite runs as the postgres
# user in a scratch copy of the built tree.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

bash test/setup.sh
# build against the PostgreSQL that setup.sh chose (WH_PG_VERSION, else the
# newest installed), unless PG_CONFIG says otherwise
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$(bash test/setup.sh --which)/bin/pg_config}
export PG_CONFIG
echo "check: $("$PG_CONFIG" --version)"
make -s
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO make -s PG_CONFIG="$PG_CONFIG" install

status=0
if [ "$(id -u)" = 0 ]; then
	work=$(mktemp -d /tmp/webhooks-check.XXXXXX)
	tar --exclude=.git -cf - . | tar -xf - -C "$work"
	chown -R postgres: "$work"
	runuser -u postgres -- make -C "$work" PG_CONFIG="$PG_CONFIG" installcheck || status=$?
	where=$work
else
	make installcheck || status=$?
	where=$top
fi

if [ $status -ne 0 ]; then
	echo "=== installcheck failed; diffs and logs follow ==="
	for f in "$where"/regression.diffs "$where"/output_iso/regression.diffs; do
		[ -f "$f" ] && { echo "--- $f"; head -300 "$f"; }
	done
	for f in "$where"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] && { echo "--- $f (tail)"; tail -80 "$f"; }
	done
	exit $status
fi

[ "$where" != "$top" ] && rm -rf "$where"
make -s -C test/url check
bash test/fuzz/run.sh "${FUZZ_SECONDS:-20}"
echo "check: all suites passed"
