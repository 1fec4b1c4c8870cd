# test/lib.sh: shell helpers shared by test/demo.sh and test/bench/run.sh.
# Sourced, after the caller has set PGBIN and, before it calls as_pg or
# start_cluster, tmp (its throwaway directory).

lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

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
