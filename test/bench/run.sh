#!/usr/bin/env bash
# test/bench/run.sh: the webhooks benchmark (not part of the test suite).
#
#   bash test/bench/run.sh                       # RUNS=3: about 8-10 minutes
#   RUNS=5 CONFIGS="128/64 64/64" bash test/bench/run.sh
#
# Builds and installs the extension, then in a throwaway directory sets up
#   - a PostgreSQL cluster (the version test/setup.sh picks) preloading the
#     library (as the postgres user when run as root), fsync on,
#     shared_buffers 512MB, restart_after_crash off,
#   - nginx (Debian's nginx-light) on 127.0.0.1 as a keep-alive HTTPS sink
#     answering 200 "ok" to every POST, HTTP/1.1 and HTTP/2 (ALPN),
#     worker_processes 1 (2 cores: one for nginx, one for the worker; both
#     share them with PostgreSQL's other processes), keepalive_requests 100000;
#     a second server block logs each request's time for the HTTP/2 latency runs,
#   - test/bench/lat_sink.py on 127.0.0.1 for the HTTP/1.1 latency runs: a
#     small asyncio HTTPS server that stamps each request with its arrival
#     time and answers in one write (test/receiver.py answers in two writes,
#     and the Nagle / delayed-ACK stall that follows, about 40 ms, would be
#     measured as the extension's latency),
#   - the libpq client test/bench/pgclient.c (timed commits),
# and runs test/bench/bench.py, which measures and prints medians of RUNS runs:
#   1. throughput: 100,000 events committed in one INSERT ... SELECT under the
#      statement trigger, commit -> max(finished_at) of the deliveries, for each
#      webhooks.max_concurrency/max_concurrency_per_webhook pair in CONFIGS;
#      worker CPU seconds (/proc/PID/stat) and memory (VmHWM; VmRSS, RssAnon
#      sampled every 100 ms) of a freshly restarted worker per run.  A worker
#      crash or a stalled queue is recorded, the cluster recovered, and the
#      benchmark goes on.
#   2. the sink's own ceiling: wrk -t1 -cN -d10s -s post.lua (HTTP/1.1)
#   3. latency commit -> arrival over 200 back-to-back events, to an HTTP/1.1
#      receiver (lat_sink.py) and to an HTTP/2 one (nginx), alone and while
#      another webhook's endpoint takes 3 s per request (about 20 in flight)
#   4. enqueue cost: INSERT of 100,000 rows under the statement trigger and
#      under the row trigger, vs the same INSERT without trigger (each
#      ENQ_REPS (5) times in turn per run, medians)
#      (webhooks.enabled = off, a webhook active for the event type); and
#      single-row INSERTs, one per transaction, with pgbench (PGBENCH_CLIENTS
#      4, PGBENCH_SECONDS 20): the plain table's tps vs the row trigger's
#   5. fairness (issue 8, point 11), defaults 128/64: single-event
#      transactions to a third webhook (HTTP/1.1 to lat_sink.py), one every
#      FAIR_INTERVAL_MS (5), commit -> arrival p50/p99,
#      a. beside two webhooks whose endpoint takes FAIR_SLOW_MS (1000) per
#         request, FAIR_SLOW_EVENTS (3000) queued each (the issue's 50,000
#         scaled down: the backlogs outlast the measurement); their
#         deliveries/s in FAIR_WINDOW_S (8 s) without, then 8 s with the trickle,
#      b. beside a cold drain of EVENTS to nginx (fresh worker); the drain
#         time without and with the trickle (alternating runs)
# then a summary table beside the targets, and the raw per-run figures.
# Everything is removed at the end (trap EXIT).
#
# Environment: RUNS (3), EVENTS (100000), CONFIGS ("128/64 64/32 64/64 256/256":
# webhooks.max_concurrency/webhooks.max_concurrency_per_webhook; 128/64 is the
# default), WRK_CONCURRENCY ("64 128 256"), LAT_EVENTS (200), WRK_SECONDS (10),
# DRAIN_TIMEOUT (300 s per throughput run), RESULTS_JSON (a path to keep the
# raw figures as JSON), KEEP=1 (keep the directory, for post-mortems),
# BENCH_CMD (run this instead of bench.py in the set-up, e.g. BENCH_CMD=bash),
# EXTRA_CONF (lines added to postgresql.conf, e.g. EXTRA_CONF="webhooks.http2 = off"),
# SECTIONS ("throughput wrk latency enqueue fairness": run only some),
# PGBENCH_CLIENTS (4), PGBENCH_SECONDS (20), ENQ_REPS (5) (section 4),
# FAIR_SLOW_MS, FAIR_SLOW_EVENTS, FAIR_WINDOW_S, FAIR_INTERVAL_MS (section 5),
# PERF_DIR (a directory: perf record -g of the worker during each drain; with
# PERF_STAT="event,..." perf stat of those events instead).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/$(bash "$top/test/setup.sh" --which)/bin}
. "$top/test/lib.sh"

echo "== set-up =="
echo "source: $(git -C "$top" log -1 --format='%h %s' 2>/dev/null || echo '(no git)')$(git -C "$top" status --porcelain -- src sql 2>/dev/null | grep -q . && echo ', plus uncommitted changes in src/ or sql/')"
build_and_install "$top" --bench
if nm -D "$($PGBIN/pg_config --pkglibdir)/webhooks.so" 2>/dev/null | grep -q __asan_; then
	echo "the installed webhooks.so is built with AddressSanitizer: its figures would mean nothing" >&2
	echo "(rebuild without it: make clean && make && make install)" >&2
	exit 1
fi

tmp=$(mktemp -d /tmp/webhooks-bench.XXXXXX)
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
	if [ $rc -ne 0 ]; then
		echo "bench FAILED (exit $rc); server log tail:" >&2
		tail -30 "$tmp/server.log" 2>/dev/null >&2
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $tmp"
	else
		rm -rf "$tmp"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# TLS material: a test CA and a server certificate for 127.0.0.1
make_test_certs "$tmp/certs"

# the libpq client
gcc -O2 -Wall -o "$tmp/pgclient" "$here/pgclient.c" -I"$($PGBIN/pg_config --includedir)" \
	-L"$($PGBIN/pg_config --libdir)" -lpq

# nginx sink
nginx_port=$(free_port)
nginx_lat_port=$(free_port)
mkdir -p "$tmp/nginx/www"
echo ok >"$tmp/nginx/www/index.html"
sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$nginx_port|g" -e "s|@LATPORT@|$nginx_lat_port|g" \
	-e "s|@CERT@|$tmp/certs/server.crt|g" -e "s|@KEY@|$tmp/certs/server.key|g" \
	"$here/nginx.conf.in" >"$tmp/nginx/nginx.conf"
nginx -t -q -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/nginx-error.log"
nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/nginx-error.log" &
nginx_pid=$!
for _ in $(seq 100); do
	curl -s --cacert "$tmp/certs/ca.crt" -X POST -d x "https://127.0.0.1:$nginx_port/" >/dev/null 2>&1 && break
	sleep 0.05
done
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///') on https://127.0.0.1:$nginx_port/ (worker_processes 1)," \
	"protocol negotiated by curl: $(curl -s --cacert "$tmp/certs/ca.crt" -o /dev/null -w '%{http_version}' -X POST -d x "https://127.0.0.1:$nginx_port/")"

# the latency sink: stamps each request's arrival, answers in one write
start_receiver "latency sink" sink "$here/lat_sink.py" --log "$tmp/sink.jsonl"

# the cluster
start_cluster "webhooks benchmark" "webhooks.database_name = 'bench'
webhooks.ca_file = '$tmp/certs/ca.crt'
webhooks.allow_private_targets = on
# a short first retry: about 1 request in 30,000 to nginx over HTTP/2 fails
# with libcurl error 92 (see RESULTS.md); its retry should not add seconds
# to a drain time
webhooks.retry_schedule = '250ms, 1s, 5s'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
# a crashing worker would otherwise restart the cluster in a loop; bench.py
# notices, records the crash and starts the cluster again
restart_after_crash = off
${EXTRA_CONF:-}"
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') in $tmp/data (fsync and synchronous_commit on, shared_buffers 512MB)"

export BENCH_TMP=$tmp BENCH_SOCK=$tmp/sock BENCH_PSQL=$PGBIN/psql BENCH_PGCLIENT=$tmp/pgclient \
	BENCH_NGINX_URL="https://127.0.0.1:$nginx_port/" BENCH_NGINX_PID=$nginx_pid \
	BENCH_NGINX_LAT_URL="https://127.0.0.1:$nginx_lat_port/" BENCH_NGINX_LAT_LOG=$tmp/nginx/lat.log \
	BENCH_RECEIVER_URL="https://127.0.0.1:$(cat "$tmp/sink.port")" BENCH_RECEIVER_LOG=$tmp/sink.jsonl \
	BENCH_LUA=$here/post.lua BENCH_PGDATA=$tmp/data BENCH_PGCTL=$PGBIN/pg_ctl BENCH_SINK_PID=$receiver_pid \
	BENCH_AS_PG=$([ "$(id -u)" = 0 ] && echo "runuser -u postgres --" || true)
if [ -n "${BENCH_CMD:-}" ]; then
	# development aid: run something else in the set-up (e.g. BENCH_CMD=bash)
	export BENCH_ENV_FILE=$tmp/env
	env | grep '^BENCH_' >"$tmp/env"
	eval "$BENCH_CMD"
else
	"$PYTHON" "$here/bench.py"
fi
