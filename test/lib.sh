# test/lib.sh: shell helpers shared by test/demo.sh and test/bench/run.sh.
# Sourced, after the caller has set PGBIN and, before it calls as_pg,
# start_receiver or start_cluster, tmp (its throwaway directory).

lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3

# build_and_install TOP [setup.sh arguments]: install what is missing, then
# build and install the extension for $PGBIN's PostgreSQL
build_and_install() {
	local top=$1
	shift
	bash "$lib_dir/setup.sh" "$@"
	local sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	make -s -C "$top" PG_CONFIG="$PGBIN/pg_config" >/dev/null
	$sudo make -s -C "$top" PG_CONFIG="$PGBIN/pg_config" install >/dev/null
}

# run a command as the cluster's OS user (postgres when we are root:
# initdb refuses root), in $tmp
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		(cd "$tmp" && runuser -u postgres -- "$@")
	else
		(cd "$tmp" && "$@")
	fi
}

# make_test_certs DIR: a test CA and the certificates of test/make_certs.sh,
# the public parts readable by the cluster's user (webhooks.ca_file)
make_test_certs() {
	bash "$lib_dir/make_certs.sh" "$1"
	chmod 755 "$1"
	chmod 644 "$1"/*.crt
}

# start_receiver LABEL NAME SCRIPT [ARGS]: run the Python HTTPS server SCRIPT
# (test/receiver.py, test/bench/lat_sink.py) in the background with the
# certificate of make_test_certs in $tmp/certs, its port file $tmp/NAME.port,
# its stderr in $tmp/NAME.err, and ARGS; wait until it has written its port
# (exit, saying LABEL did not start, after 5 s).  Sets receiver_pid (for the
# caller's clean-up).
start_receiver() {
	local label=$1 name=$2 script=$3
	shift 3
	"$PYTHON" "$script" --cert "$tmp/certs/server.crt" --key "$tmp/certs/server.key" \
		--port-file "$tmp/$name.port" "$@" 2>"$tmp/$name.err" &
	receiver_pid=$!
	for _ in $(seq 100); do [ -s "$tmp/$name.port" ] && break; sleep 0.05; done
	[ -s "$tmp/$name.port" ] || { echo "$label did not start" >&2; cat "$tmp/$name.err" >&2; exit 1; }
}

# start_cluster LABEL CONF: initdb in $tmp/data; socket only, in $tmp/sock,
# port 5432; shared_preload_libraries = 'webhooks' plus the lines of CONF,
# under a "# --- LABEL ---" comment; started with its log in
# $tmp/server.log.  Sets pg_started=1 (for the caller's clean-up).
start_cluster() {
	local label=$1 conf=$2
	mkdir "$tmp/sock"
	if [ "$(id -u)" = 0 ]; then chown postgres: "$tmp" "$tmp/sock"; fi
	as_pg "$PGBIN/initdb" -D "$tmp/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
	cat >>"$tmp/data/postgresql.conf" <<CONF

# --- $label ---
listen_addresses = ''
unix_socket_directories = '$tmp/sock'
port = 5432
shared_preload_libraries = 'webhooks'
$conf
CONF
	as_pg "$PGBIN/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w start >/dev/null
	pg_started=1
}
