#!/usr/bin/env bash
# test/bench/soak.sh: the soak benchmark of issue 11 (not part of the test suite).
#
#   bash test/bench/soak.sh                                  # about 35 minutes
#   SOAK_MINUTES=3 SOAK_RETENTION=1min SOAK_HISTORY_ROWS=1000000 \
#     PG_CONFIG=/opt/pg-NAME/usr/lib/postgresql/15/bin/pg_config bash test/bench/soak.sh
#
# Builds and installs the extension for PG_CONFIG (default: pg_config on PATH,
# i.e. the system PostgreSQL, as run.sh does; give a private copy's pg_config
# to leave the system one alone), then in a throwaway directory sets up what
# run.sh sets up (test/lib.sh: a cluster preloading the library, fsync on,
# shared_buffers 512MB; the TLS test CA; the libpq client pgclient.c; the
# latency sink lat_sink.py) and nginx from soak-nginx.conf.in (the throughput
# sink, a "flaky" server answering 500 to SOAK_FAIL_SHARE of requests, and
# stub_status), and runs test/bench/soak.py.  Its phases (SOAK_PHASES):
#
#   soak      peak throughput (drain of a backlog of SOAK_PEAK_EVENTS events,
#             1,000-row statements), then SOAK_MINUTES at SOAK_LOAD x that peak:
#             pgclient paces 1,000-row INSERTs into a table with the statement
#             trigger (EmailOpens -> nginx), a second pgclient runs single-row
#             webhooks.emit() transactions every SOAK_EMIT_INTERVAL_MS (every
#             SOAK_FLAKY_EVERY-th to the flaky webhook, the others to
#             lat_sink.py, whose arrival stamps give commit -> arrival latency
#             as in bench.py).  webhooks.log_retention = SOAK_RETENTION.
#             Every minute a row of soak.csv (deliveries/s, latency p50/p99,
#             bytes of every relation of the extension, worker RssAnon,
#             autovacuum runs on the queue, age of the oldest finished row),
#             one row per relation in relations.csv; at the end soak.png
#             (gnuplot) and the verdicts on the issue's targets.
#   history   peak throughput and SELECT * FROM webhooks.webhook_stats on a
#             fresh install (database bench_fresh) and with SOAK_HISTORY_ROWS
#             rows of history (database bench) inserted directly
#             (webhooks.delivery_history when it exists, else delivered/dead
#             rows of webhooks.deliveries), spread over SOAK_HISTORY_RETENTION
#             (the retention set for this phase); each database has its
#             worker, and the runs alternate between them (fresh first in odd
#             runs, second in even ones), so neither side gets the machine's
#             better minutes or drains the other has already run
#   snapshot  the same steady load; a REPEATABLE READ transaction that has
#             read the queue holds its snapshot for SOAK_SNAPSHOT_MINUTES,
#             then commits; throughput every 10 s around it (snapshot.csv,
#             snapshot.png), the time until it recovers (a 10 s window at
#             >= 85 % of the pre-snapshot rate, and the first minute's median
#             too) and, reported apart, until the backlog built while held
#             has drained
#
# Results go to SOAK_OUT (default /tmp/soak-YYYYmmdd-HHMMSS): soak.log (all
# output), summary.txt (the verdicts), the CSVs, the PNGs, server.log.
# It exits 0 when it ran; a missed target is a FAIL line in the summary, not
# an exit status.
#
# Environment (defaults): PG_CONFIG (pg_config), SOAK_OUT, SOAK_PHASES
# ("soak history snapshot"), SOAK_MINUTES (20), SOAK_LOAD (0.5),
# SOAK_RETENTION (3min), SOAK_PARTITION_WIDTH (max(retention/24, 10s)),
# SOAK_PEAK_EVENTS (300000), SOAK_EMIT_INTERVAL_MS (10), SOAK_FLAKY_EVERY (5),
# SOAK_FAIL_SHARE (30, per cent), SOAK_HISTORY_ROWS (10000000), SOAK_HISTORY_RETENTION
# (7d), SOAK_HISTORY_RUNS (3), SOAK_STATS_RUNS (5), SOAK_SNAPSHOT_MINUTES (5),
# SOAK_SNAPSHOT_BEFORE (2: minutes of load before the snapshot),
# SOAK_SNAPSHOT_AFTER (3: minutes after its release), EXTRA_CONF (lines added
# to postgresql.conf), KEEP=1 (keep the throwaway directory).
#
# gnuplot: from Debian's gnuplot-nox package; installed when missing and the
# script runs as root, else: sudo apt-get install gnuplot-nox (without it the
# CSVs are written and the charts skipped).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
command -v "$PG_CONFIG" >/dev/null || { echo "soak: no pg_config ($PG_CONFIG)" >&2; exit 1; }
PGBIN=$("$PG_CONFIG" --bindir)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$top/test/lib.sh"

SOAK_OUT=${SOAK_OUT:-/tmp/soak-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$SOAK_OUT"
SOAK_OUT=$(cd "$SOAK_OUT" && pwd)
exec > >(tee -a "$SOAK_OUT/soak.log") 2>&1

echo "== set-up =="
echo "results in $SOAK_OUT"
echo "source: $(git -C "$top" log -1 --format='%h %s' 2>/dev/null || echo '(no git)')$(git -C "$top" status --porcelain -- src sql 2>/dev/null | grep -q . && echo ', plus uncommitted changes in src/ or sql/')"
echo "PostgreSQL: $PGBIN ($("$PG_CONFIG" --version))"
build_and_install "$top" --bench
if nm -D "$("$PGBIN/pg_config" --pkglibdir)/webhooks.so" 2>/dev/null | grep -q __asan_; then
	echo "the installed webhooks.so is built with AddressSanitizer: its figures would mean nothing" >&2
	exit 1
fi
if ! command -v gnuplot >/dev/null; then
	if [ "$(id -u)" = 0 ]; then
		echo "installing gnuplot-nox (Debian) for the charts"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; } ||
			echo "could not install gnuplot-nox: the charts will be skipped"
	else
		echo "gnuplot is missing: the charts will be skipped (sudo apt-get install gnuplot-nox)"
	fi
fi

tmp=$(mktemp -d /tmp/webhooks-soak.XXXXXX)
chmod 755 "$tmp"
nginx_pid=""
receiver_pid=""
pg_started=""

cleanup() {
	local rc=$?
	set +e
	# stop only what this script started, by pid
	[ -n "$receiver_pid" ] && { kill "$receiver_pid" 2>/dev/null; wait "$receiver_pid" 2>/dev/null; }
	[ -n "$nginx_pid" ] && { kill -QUIT "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; }
	[ -n "$pg_started" ] && as_pg "$PGBIN/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1
	cp "$tmp/server.log" "$SOAK_OUT/server.log" 2>/dev/null
	if [ $rc -ne 0 ]; then
		echo "soak FAILED (exit $rc); server log tail:" >&2
		tail -30 "$tmp/server.log" 2>/dev/null >&2
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $tmp"
	else
		rm -rf "$tmp"
	fi
	echo "results in $SOAK_OUT"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail_share=${SOAK_FAIL_SHARE:-30}
fail_share=${fail_share%\%}%

free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

make_test_certs "$tmp/certs"

gcc -O2 -Wall -o "$tmp/pgclient" "$here/pgclient.c" -I"$("$PGBIN/pg_config" --includedir)" \
	-L"$("$PGBIN/pg_config" --libdir)" -lpq

# nginx: sink, flaky target, stub_status
nginx_port=$(free_port)
flaky_port=$(free_port)
status_port=$(free_port)
mkdir -p "$tmp/nginx/www"
echo ok >"$tmp/nginx/www/index.html"
sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$nginx_port|g" -e "s|@FLAKYPORT@|$flaky_port|g" \
	-e "s|@STATUSPORT@|$status_port|g" -e "s|@FAILSHARE@|$fail_share|g" \
	-e "s|@CERT@|$tmp/certs/server.crt|g" -e "s|@KEY@|$tmp/certs/server.key|g" \
	"$here/soak-nginx.conf.in" >"$tmp/nginx/nginx.conf"
nginx -t -q -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/nginx-error.log"
nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/nginx-error.log" &
nginx_pid=$!
for _ in $(seq 100); do
	curl -s "http://127.0.0.1:$status_port/status" >/dev/null 2>&1 && break
	sleep 0.05
done
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///') on https://127.0.0.1:$nginx_port/ (worker_processes 1)," \
	"flaky target https://127.0.0.1:$flaky_port/ (500 to $fail_share of requests)"

# the latency sink
start_receiver "latency sink" sink "$here/lat_sink.py" --log "$tmp/sink.jsonl"

start_cluster "webhooks soak" "webhooks.database_name = 'bench'
webhooks.databases = 'bench, bench_fresh'
webhooks.ca_file = '$tmp/certs/ca.crt'
webhooks.allow_private_targets = on
webhooks.retry_schedule = '250ms, 1s, 5s'
webhooks.log_retention = '${SOAK_RETENTION:-3min}'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
log_autovacuum_min_duration = 0
log_checkpoints = on
${EXTRA_CONF:-}"
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') in $tmp/data (fsync and synchronous_commit on, shared_buffers 512MB)"

sink_port=$(cat "$tmp/sink.port")
export SOAK_TMP=$tmp SOAK_SOCK=$tmp/sock SOAK_PSQL=$PGBIN/psql SOAK_PGCLIENT=$tmp/pgclient \
	SOAK_NGINX_URL="https://127.0.0.1:$nginx_port/" SOAK_NGINX_PID=$nginx_pid \
	SOAK_FLAKY_URL="https://127.0.0.1:$flaky_port/" SOAK_FLAKY_LOG=$tmp/nginx/flaky.log \
	SOAK_STATUS_URL="http://127.0.0.1:$status_port/status" \
	SOAK_RECEIVER_URL="https://127.0.0.1:$sink_port" SOAK_RECEIVER_LOG=$tmp/sink.jsonl \
	SOAK_SINK_PID=$receiver_pid SOAK_PGDATA=$tmp/data SOAK_OUT
"$PYTHON" "$here/soak.py"
