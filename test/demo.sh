#!/usr/bin/env bash
# test/demo.sh: the webhooks extension end to end, in one command.
#
#   bash test/demo.sh
#
# On a fresh Debian 12 or 13 machine: installs what is missing (test/setup.sh),
# builds and installs the extension, then, in a throwaway directory:
#   - a PostgreSQL cluster (the version test/setup.sh picks) that preloads
#     the library (as the postgres user when run as root: initdb refuses root),
#   - an HTTPS receiver on 127.0.0.1 with a certificate from a test CA
#     (test/make_certs.sh, test/receiver.py),
#   - webhooks defined with the wizard, application tables with the trigger,
#     events committed (and one transaction rolled back),
#   - what the receiver got, with each signature checked here with python3
#     against the secret stored in webhooks.webhooks,
#   - the operator's view: webhook_stats, webhook_logs, pending and dead
#     deliveries.
# Everything is removed at the end (receiver stopped, cluster stopped,
# directory deleted), also on failure or Ctrl-C.  Takes about 20 seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/$(bash "$here/setup.sh" --which)/bin}
. "$here/lib.sh"

bold=""; dim=""; off=""
if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; fi
section() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$off"; }
say() { printf '%s\n' "$*"; }

# ---------------------------------------------------------------------------
section "Build and install"
# ---------------------------------------------------------------------------
build_and_install "$top"
say "built and installed: $(ls "$($PGBIN/pg_config --pkglibdir)/webhooks.so")"

# ---------------------------------------------------------------------------
# throwaway directory, and cleanup whatever happens
# ---------------------------------------------------------------------------
tmp=$(mktemp -d /tmp/webhooks-demo.XXXXXX)
chmod 755 "$tmp"
receiver_pid=""
pg_started=""

cleanup() {
	local rc=$?
	set +e
	if [ -n "$receiver_pid" ]; then
		kill "$receiver_pid" 2>/dev/null
		wait "$receiver_pid" 2>/dev/null
	fi
	if [ -n "$pg_started" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1
	fi
	if [ $rc -ne 0 ]; then
		echo "demo FAILED (exit $rc); the server log's tail:" >&2
		tail -30 "$tmp/server.log" 2>/dev/null >&2
	fi
	rm -rf "$tmp"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
section "Test CA and HTTPS receiver"
# ---------------------------------------------------------------------------
make_test_certs "$tmp/certs"
start_receiver receiver receiver "$here/receiver.py" --log "$tmp/requests.jsonl" --exit-with-parent
rport=$(cat "$tmp/receiver.port")
base="https://127.0.0.1:$rport"
say "test CA:  $tmp/certs/ca.crt (server certificate for 127.0.0.1 / localhost)"
say "receiver: $base  (/ok answers 200, /status/503 answers 503)"

# ---------------------------------------------------------------------------
section "Throwaway PostgreSQL $("$PGBIN/pg_config" --version | sed 's/^PostgreSQL //') cluster"
# ---------------------------------------------------------------------------
start_cluster "webhooks demo" "webhooks.ca_file = '$tmp/certs/ca.crt'
webhooks.allow_private_targets = on     # the receiver is on 127.0.0.1
webhooks.retry_schedule = '2s, 5s'      # three attempts in all, to see a dead delivery quickly"
sed -n '/--- webhooks demo ---/,$p' "$tmp/data/postgresql.conf"

psql_() { as_pg "$PGBIN/psql" -h "$tmp/sock" -p 5432 -U postgres -X -v ON_ERROR_STOP=1 "$@"; }
q() { psql_ -d app -Atq -c "$1"; }

# Show a statement the way a psql user sees it, then its output.
show() {
	local sql=$1
	printf '%sapp=# %s%s\n' "$dim" "$sql" "$off"
	psql_ -d app -q -P pager=off -c "$sql" 2>&1 | sed 's/^/  /'
}
# Same, for a statement that is expected to fail: show the error and go on.
show_error() {
	local sql=$1
	printf '%sapp=# %s%s\n' "$dim" "$sql" "$off"
	if psql_ -d app -q -P pager=off -v VERBOSITY=default -c "$sql" >"$tmp/out" 2>&1; then
		sed 's/^/  /' "$tmp/out"
		echo "expected an error here" >&2
		exit 1
	fi
	sed 's/^/  /' "$tmp/out"
}

psql_ -d postgres -q -c "CREATE DATABASE app"
show "CREATE EXTENSION webhooks"
# wait until the worker serves the database
for _ in $(seq 100); do
	[ "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = 'app'")" = 1 ] && break
	sleep 0.1
done
show "SELECT pid, backend_type, state, query FROM pg_stat_activity WHERE backend_type = 'webhooks worker'"

# ---------------------------------------------------------------------------
section "The wizard: webhooks.create_webhook(name, event_type, target_url)"
# ---------------------------------------------------------------------------
say "Each call checks the URL, runs a signed connection test against it, and stores"
say "the webhook already active only when the target answered 2xx."
show "SELECT id, name, event_type, target_url, is_active FROM webhooks.create_webhook('opens-to-crm', 'EmailOpens', '$base/ok')"
show "SELECT id, name, event_type, target_url, is_active FROM webhooks.create_webhook('subscriptions-to-crm', 'Subscriptions', '$base/ok')"
say ""
say "A target that fails the connection test is refused, and nothing is stored:"
show_error "SELECT * FROM webhooks.create_webhook('bounces-to-crm', 'EmailBounces', '$base/status/503')"
say ""
say "So for the demo, a webhook whose endpoint breaks later: created against /ok,"
say "then deactivated, pointed at /status/503, and switched on again by direct DML"
say "(which, unlike activate_webhook(), does not re-run the connection test):"
show "SELECT name, is_active FROM webhooks.create_webhook('bounces-to-crm', 'EmailBounces', '$base/ok')"
show "SELECT name, is_active, deactivated_reason FROM webhooks.deactivate_webhook('bounces-to-crm')"
show "SELECT name, target_url, is_active FROM webhooks.update_webhook('bounces-to-crm', target_url => '$base/status/503')"
show "UPDATE webhooks.webhooks SET is_active = true WHERE name = 'bounces-to-crm'"
show "SELECT id, name, event_type, target_url, is_active, left(secret, 12) || '...' AS secret FROM webhooks.webhooks ORDER BY id"

# ---------------------------------------------------------------------------
section "Application tables with the trigger"
# ---------------------------------------------------------------------------
cat <<'SQL' | tee "$tmp/app.sql" | sed 's/^/  /'
CREATE SCHEMA app;
CREATE TABLE app.email_opens (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       bigint NOT NULL,
    subscriber_id    bigint NOT NULL,
    subscriber_email text   NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- one event per inserted row
CREATE TRIGGER email_opens_webhook AFTER INSERT ON app.email_opens
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');

CREATE TABLE app.subscriptions (
    list_id          bigint NOT NULL,
    subscriber_id    bigint NOT NULL,
    subscriber_email text   NOT NULL,
    PRIMARY KEY (list_id, subscriber_id)
);
-- bulk inserts: one trigger call per statement, over the transition table
CREATE TRIGGER subscriptions_webhook AFTER INSERT ON app.subscriptions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.enqueue_event('Subscriptions');
SQL
psql_ -d app -q -f "$tmp/app.sql"

# ---------------------------------------------------------------------------
section "Events: one committed transaction, one rolled back"
# ---------------------------------------------------------------------------
cat <<'SQL' | tee "$tmp/events.sql" | sed 's/^/  /'
BEGIN;
INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
VALUES (1001, 501, 'ada@example.com'),
       (1001, 502, 'grace@example.com');
INSERT INTO app.subscriptions (list_id, subscriber_id, subscriber_email)
VALUES (7, 501, 'ada@example.com'),
       (7, 503, 'edsger@example.com'),
       (8, 504, 'barbara@example.com');
SELECT webhooks.emit('EmailBounces',
       '{"messageId": 1001, "subscriberId": 505, "subscriberEmail": "nobody@example.com"}');
COMMIT;

BEGIN;
INSERT INTO app.email_opens (message_id, subscriber_id, subscriber_email)
VALUES (9999, 999, 'rolled-back@example.com');
ROLLBACK;   -- nothing of this transaction is ever sent
SQL
psql_ -d app -q -At -f "$tmp/events.sql" >/dev/null
say ""
queued=$(q "SELECT string_agg(event_type || ' x' || pending, ', ' ORDER BY event_type) FROM webhooks.webhook_stats WHERE pending > 0")
say "Right after COMMIT, webhook_stats shows pending: ${queued:-nothing (the worker was quicker)}"

# ---------------------------------------------------------------------------
section "Waiting for the worker"
# ---------------------------------------------------------------------------
say "5 deliveries to /ok, and 1 to /status/503 that is tried 3 times (now, +2s, +5s) and then dead."
t0=$(date +%s%N)
for _ in $(seq 300); do
	left=$(q "SELECT coalesce(sum(pending), 0) FROM webhooks.webhook_stats")
	[ "$left" = 0 ] && break
	sleep 0.1
done
[ "$left" = 0 ] || { echo "deliveries still pending after 30 s" >&2; exit 1; }
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
say "queue drained in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s:" \
	"$(q "SELECT string_agg(state || ' ' || n, ', ' ORDER BY state) FROM (SELECT state, count(*) n FROM webhooks.all_deliveries GROUP BY 1) s")"

# ---------------------------------------------------------------------------
section "What the receiver got"
# ---------------------------------------------------------------------------
q "SELECT json_object_agg(name, secret) FROM webhooks.webhooks" >"$tmp/secrets.json"
"$PYTHON" - "$tmp/requests.jsonl" "$tmp/secrets.json" <<'PY'
import base64, hashlib, hmac, json, sys

reqs = [json.loads(l) for l in open(sys.argv[1])]
secrets = json.load(open(sys.argv[2]))      # webhook name -> whsec_...

def verify(r):
    """Standard Webhooks v1: HMAC-SHA256(key, id.timestamp.body), base64."""
    h = r["headers"]
    body = base64.b64decode(r["body_b64"])
    signed = b"%s.%s.%s" % (h["webhook-id"].encode(), h["webhook-timestamp"].encode(), body)
    given = [p[3:] for p in h["webhook-signature"].split() if p.startswith("v1,")]
    for name, secret in secrets.items():
        key = base64.b64decode(secret[len("whsec_"):])
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(want, g) for g in given):
            return name
    return None

t0 = reqs[0]["t"] if reqs else 0
tests = [r for r in reqs if r["headers"].get("webhook-id", "").startswith("msg_test_")]
real = [r for r in reqs if r not in tests]
print("%d requests: %d connection tests from the wizard, %d deliveries\n" % (len(reqs), len(tests), len(real)))
fmt = "%-6s %-13s %-6s %-16s %-6s %-29s %s"
print(fmt % ("t (s)", "event type", "answer", "webhook-id", "sig ok", "signed with the secret of", "body"))
bad = 0
for r in reqs:
    body = json.loads(r["body"])
    who = verify(r)
    if r in tests:
        # the wizard signs a test with the secret it is about to store; the
        # refused webhook's secret was never stored, so it cannot be checked
        kind = "test"
    else:
        kind = ""
        if who is None:
            bad += 1
    print(fmt % ("%.2f" % (r["t"] - t0), body["eventType"], r["status"],
                 r["headers"]["webhook-id"][:16], "yes" if who else ("n/a" if kind else "NO"),
                 (who or "-") + (" (test)" if kind else ""), r["body"]))
print()
ids = {}
for r in real:
    ids.setdefault(r["headers"]["webhook-id"], []).append(r["status"])
for k, v in ids.items():
    if len(v) > 1:
        print("%s was sent %d times (answers %s): retries keep the same webhook-id" % (k, len(v), v))
sample = real[0] if real else None
if sample:
    print("\nheaders of the first delivery:")
    for k in ("content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"):
        print("  %s: %s" % (k, sample["headers"].get(k)))
rolled = [r for r in reqs if "rolled-back@example.com" in r["body"]]
print("\nthe rolled-back transaction's row (rolled-back@example.com): %s"
      % ("SENT (wrong!)" if rolled else "never sent, as it should be"))
print("signatures of deliveries verified here with python3: %s"
      % ("all good" if bad == 0 else "%d FAILED" % bad))
sys.exit(1 if bad or rolled else 0)
PY

# ---------------------------------------------------------------------------
section "The operator's view (psql)"
# ---------------------------------------------------------------------------
show "SELECT * FROM webhooks.webhook_stats"
show "SELECT occurrence_date, webhook_name, status, error_content, webhook_payload FROM webhooks.webhook_logs ORDER BY id"
show "SELECT * FROM webhooks.pending_deliveries"
show "SELECT delivery_id, webhook_name, event_type, attempts, died_at, last_status, last_error, payload FROM webhooks.dead_deliveries"
say ""
say "A dead delivery can be queued again once the endpoint is fixed:"
say "  SELECT webhooks.redeliver(delivery_id) / webhooks.redeliver_dead('bounces-to-crm')"

section "Done"
say "Cleaning up: receiver stopped, cluster stopped, $tmp removed."
