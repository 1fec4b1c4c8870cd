#!/usr/bin/env bash
# test/bench/run.sh: the webhooks benchmark (not part of the test suite).
#
#   bash test/bench/run.sh                 # RUNS=3 by default
#   RUNS=5 CONCURRENCY="64 256" bash test/bench/run.sh
#
# Builds and installs the extension, then in a throwaway directory sets up
#   - a PostgreSQL 15 cluster preloading the library (as the postgres user
#     when run as root),
#   - nginx (Debian's nginx-light) on 127.0.0.1 as a keep-alive HTTPS sink
#     answering 200 "ok" to every POST, HTTP/1.1 and HTTP/2, worker_processes 1,
#   - test/receiver.py on 127.0.0.1 for the latency runs (it stamps each
#     request with its arrival time),
#   - the libpq client test/bench/pgclient.c,
# and runs test/bench/bench.py, which measures and prints medians of RUNS runs:
#   1. throughput: 100,000 events committed in one transaction (statement
#      trigger), commit -> last recorded delivered, at each max_concurrency;
#      worker CPU seconds and memory (VmHWM, VmRSS / RssAnon sampled every 100 ms)
#   2. the sink's own ceiling with wrk at the same concurrency
#   3. latency commit -> arrival, p50/p99 over 200 back-to-back events, alone
#      and while another webhook's endpoint takes 3 s per request
#   4. enqueue cost of the statement and row triggers vs a plain INSERT
# Everything is removed at the end (trap EXIT).  About 10 minutes with RUNS=3.
#
# Environment: RUNS (3), EVENTS (100000), CONCURRENCY ("64 256"),
# LAT_EVENTS (200), WRK_SECONDS (10), RESULTS_JSON (a path to keep the raw
# figures as JSON), KEEP=1 (keep the directory, for post-mortems),
# BENCH_CMD (run this instead of bench.py in the set-up, e.g. BENCH_CMD=bash).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3

echo "== set-up =="
bash "$top/test/setup.sh"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
make -s -C "$top" >/dev/null
$SUDO make -s -C "$top" install >/dev/null

tmp=$(mktemp -d /tmp/webhooks-bench.XXXXXX)
chmod 755 "$tmp"
nginx_pid=""
receiver_pid=""
pg_started=""

as_pg() {
	if [ "$(id -u)" = 0 ]; then
		(cd "$tmp" && runuser -u postgres -- "$@")
	else
		(cd "$tmp" && "$@")
	fi
}

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
bash "$top/test/make_certs.sh" "$tmp/certs"
chmod 755 "$tmp/certs"
chmod 644 "$tmp/certs"/*.crt

# the libpq client
gcc -O2 -Wall -o "$tmp/pgclient" "$here/pgclient.c" -I"$($PGBIN/pg_config --includedir)" \
	-L"$($PGBIN/pg_config --libdir)" -lpq

# nginx sink
nginx_port=$(free_port)
mkdir -p "$tmp/nginx"
sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$nginx_port|g" \
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

# the receiver for latency runs
"$PYTHON" "$top/test/receiver.py" --cert "$tmp/certs/server.crt" --key "$tmp/certs/server.key" \
	--port-file "$tmp/receiver.port" --log "$tmp/receiver.jsonl" --exit-with-parent 2>"$tmp/receiver.err" &
receiver_pid=$!
for _ in $(seq 100); do [ -s "$tmp/receiver.port" ] && break; sleep 0.05; done
[ -s "$tmp/receiver.port" ] || { echo "receiver did not start" >&2; exit 1; }

# the cluster
mkdir "$tmp/sock"
if [ "$(id -u)" = 0 ]; then chown postgres: "$tmp" "$tmp/sock"; fi
as_pg "$PGBIN/initdb" -D "$tmp/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
cat >>"$tmp/data/postgresql.conf" <<EOF

# --- webhooks benchmark ---
listen_addresses = ''
unix_socket_directories = '$tmp/sock'
port = 5432
shared_preload_libraries = 'webhooks'
webhooks.database_name = 'bench'
webhooks.ca_file = '$tmp/certs/ca.crt'
webhooks.allow_private_targets = on
webhooks.retry_schedule = '2s, 5s'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
as_pg "$PGBIN/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w start >/dev/null
pg_started=1
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') in $tmp/data (fsync and synchronous_commit on, shared_buffers 512MB)"

export BENCH_TMP=$tmp BENCH_SOCK=$tmp/sock BENCH_PSQL=$PGBIN/psql BENCH_PGCLIENT=$tmp/pgclient \
	BENCH_NGINX_URL="https://127.0.0.1:$nginx_port/" BENCH_NGINX_PID=$nginx_pid \
	BENCH_RECEIVER_URL="https://127.0.0.1:$(cat "$tmp/receiver.port")" BENCH_RECEIVER_LOG=$tmp/receiver.jsonl \
	BENCH_LUA=$here/post.lua
if [ -n "${BENCH_CMD:-}" ]; then
	# development aid: run something else in the set-up (e.g. BENCH_CMD=bash)
	export BENCH_ENV_FILE=$tmp/env
	env | grep '^BENCH_' >"$tmp/env"
	eval "$BENCH_CMD"
else
	"$PYTHON" "$here/bench.py"
fi
