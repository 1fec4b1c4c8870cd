#!/usr/bin/python3
"""The measurements of test/bench/soak.sh (which sets up the cluster, nginx,
the latency sink and the libpq client, and passes them in SOAK_* variables).

Standard library only.  Talks to PostgreSQL through psql (control queries) and
pgclient (paced load, timed commits).  Phases: soak, history, snapshot (see
soak.sh).  Writes CSVs, gnuplot charts and summary.txt into SOAK_OUT.

How things are counted:
- deliveries/s: answers 2xx at the sinks, i.e. nginx's stub_status request
  counter (less our own status requests and the flaky server's requests),
  plus the flaky server's 200s (its access log), plus the arrivals logged by
  lat_sink.py.  Independent of the schema (the queue's rows may be gone).
- commit -> arrival latency: as bench.py measures it: pgclient ("trickle")
  stamps each single-row emit() transaction after its COMMIT returns
  (CLOCK_REALTIME), lat_sink.py stamps its arrival with the same clock; the
  event is matched by the messageId in its body.  A minute's p50/p99 are
  those of the events committed in that minute (read 5 s after its end; an
  event not arrived by then counts with the time it has waited so far and
  is counted as late).
"""

import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

ENV = os.environ
TMP = ENV["SOAK_TMP"]
SOCK = ENV["SOAK_SOCK"]
PSQL = ENV["SOAK_PSQL"]
PGCLIENT = ENV["SOAK_PGCLIENT"]
PGDATA = ENV["SOAK_PGDATA"]
OUT = ENV["SOAK_OUT"]
NGINX_URL = ENV["SOAK_NGINX_URL"]
NGINX_MASTER = int(ENV["SOAK_NGINX_PID"])
FLAKY_URL = ENV["SOAK_FLAKY_URL"]
FLAKY_LOG = ENV["SOAK_FLAKY_LOG"]
STATUS_URL = ENV["SOAK_STATUS_URL"]
RECEIVER_URL = ENV["SOAK_RECEIVER_URL"]
RECEIVER_LOG = ENV["SOAK_RECEIVER_LOG"]
SINK_PID = int(ENV.get("SOAK_SINK_PID", "0") or 0)

# the database the phases work in; the history phase alternates between two
CUR = {"db": "bench"}
FRESH_DB = "bench_fresh"


def conninfo():
    return "host=%s port=5432 user=postgres dbname=%s" % (SOCK, CUR["db"])


HZ = os.sysconf("SC_CLK_TCK")
BATCH = 1000                    # rows per INSERT statement (the 1,000-row batches)


def duration_s(text):
    """'3min', '180s', '1h', '7d', '500ms', '90' (seconds) -> seconds (float)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|sec|min|m|h|d)?\s*", text)
    if not m:
        raise SystemExit("soak: cannot read the duration %r (write e.g. 3min, 180s, 1h, 7d)" % text)
    return float(m.group(1)) * {"ms": 0.001, None: 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600,
                                "d": 86400}[m.group(2)]


def guc_duration(seconds):
    return "%ds" % int(round(seconds))


PHASES = ENV.get("SOAK_PHASES", "soak history snapshot").split()
MINUTES = int(ENV.get("SOAK_MINUTES", "20"))
LOAD = float(ENV.get("SOAK_LOAD", "0.5"))
RETENTION = duration_s(ENV.get("SOAK_RETENTION", "3min"))
WIDTH = duration_s(ENV["SOAK_PARTITION_WIDTH"]) if ENV.get("SOAK_PARTITION_WIDTH") else max(RETENTION / 24, 10.0)
PEAK_EVENTS = int(ENV.get("SOAK_PEAK_EVENTS", "300000")) // BATCH * BATCH
EMIT_INTERVAL_MS = int(ENV.get("SOAK_EMIT_INTERVAL_MS", "10"))
FLAKY_EVERY = int(ENV.get("SOAK_FLAKY_EVERY", "5"))
HISTORY_ROWS = int(ENV.get("SOAK_HISTORY_ROWS", "10000000"))
HISTORY_RETENTION = duration_s(ENV.get("SOAK_HISTORY_RETENTION", "7d"))
HISTORY_RUNS = int(ENV.get("SOAK_HISTORY_RUNS", "3"))
STATS_RUNS = int(ENV.get("SOAK_STATS_RUNS", "5"))
SNAP_MINUTES = float(ENV.get("SOAK_SNAPSHOT_MINUTES", "5"))
SNAP_BEFORE = float(ENV.get("SOAK_SNAPSHOT_BEFORE", "2"))
SNAP_AFTER = float(ENV.get("SOAK_SNAPSHOT_AFTER", "3"))
COUNT_MAX_BYTES = int(float(ENV.get("SOAK_COUNT_MAX_MB", "64")) * 1024 * 1024)
P99_RATIO = float(ENV.get("SOAK_P99_RATIO", "1.5"))
P99_SLACK_MS = float(ENV.get("SOAK_P99_SLACK_MS", "5"))
TPUT_BAND = 0.15
SIZE_BAND = 0.10
HISTORY_BAND = float(ENV.get("SOAK_HISTORY_BAND", "0.15"))
STATS_TARGET_MS = float(ENV.get("SOAK_STATS_TARGET_MS", "100"))
RECOVERY_TARGET_S = 60

SUMMARY = []                    # lines of summary.txt


def log(*a):
    print(*a, flush=True)


def say(line=""):
    """A line of the summary (printed now, and written to summary.txt at the end)."""
    SUMMARY.append(line)
    log(line)


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def psql(sql, check=True, db=None):
    r = subprocess.run([PSQL, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-h", SOCK, "-p", "5432",
                        "-U", "postgres", "-d", db or CUR["db"], "-c", sql], capture_output=True, text=True)
    if r.returncode != 0:
        if check:
            raise RuntimeError("psql failed: %s\n%s" % (sql, r.stderr))
        return None
    return r.stdout.strip()


def pgclient(*args):
    r = subprocess.run([PGCLIENT, args[0], conninfo()] + list(args[1:]), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("pgclient failed: %s" % r.stderr)
    return r.stdout


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(v) - 1)
    return v[f] + (v[c] - v[f]) * (k - f)


def med(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else float("nan")


def iround(x):
    return int(x + 0.5)


# ---------------------------------------------------------------------------
# the schema as it is: today's (deliveries keeps finished rows) or the coming
# one (webhooks.delivery_history, partitioned; webhook_logs partitioned)
# ---------------------------------------------------------------------------

def regclass_exists(name):
    return psql("SELECT to_regclass('%s') IS NOT NULL" % name) == "t"


def has_column(table, column):
    return psql("SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('%s') AND attname = '%s' "
                "AND NOT attisdropped" % (table, column)) == "1"


class Schema:
    def refresh(self):
        self.history = regclass_exists("webhooks.delivery_history")
        self.deliveries_finished = has_column("webhooks.deliveries", "finished_at")
        self.deliveries_state = has_column("webhooks.deliveries", "state")
        self.logs = regclass_exists("webhooks.webhook_logs")
        self.batches = regclass_exists("webhooks.event_batches") and has_column("webhooks.event_batches", "events")
        self.version = psql("SELECT extversion FROM pg_extension WHERE extname = 'webhooks'")

    def describe(self):
        if self.history:
            return "version %s: partitioned history (webhooks.delivery_history)" % self.version
        return "version %s: finished deliveries stay in webhooks.deliveries (no delivery_history)" % self.version


SCHEMA = Schema()


def backlog():
    """Events not yet delivered or dead: the queue's pending/held rows plus events still in batches."""
    if SCHEMA.deliveries_state and SCHEMA.deliveries_finished:
        q = "SELECT count(*) FROM webhooks.deliveries WHERE state IN ('pending', 'held')"
    else:
        q = "SELECT count(*) FROM webhooks.deliveries"
    if SCHEMA.batches:
        q = "SELECT (%s) + (SELECT coalesce(sum(events), 0) FROM webhooks.event_batches)" % q
    return int(psql(q))


def oldest_ages():
    """Age (s) of the oldest finished delivery and of the oldest log row still present (None when none)."""
    parts = []
    if SCHEMA.history:
        parts.append("SELECT min(finished_at) FROM webhooks.delivery_history")
    if SCHEMA.deliveries_finished:
        parts.append("SELECT min(finished_at) FROM webhooks.deliveries WHERE finished_at IS NOT NULL")
    dq = ("SELECT extract(epoch FROM now() - min(m)) FROM (%s) s(m)" % " UNION ALL ".join(parts)) if parts else \
        "SELECT NULL"
    lq = "SELECT extract(epoch FROM now() - min(occurrence_date)) FROM webhooks.webhook_logs" if SCHEMA.logs else \
        "SELECT NULL"
    row = psql("SELECT (%s), (%s)" % (dq, lq)).split("|")
    return tuple(float(x) if x else None for x in row)


# every relation of the extension: its tables (members of the extension or in
# schema webhooks), their partitions (recursively, wherever they live, also
# those created after the install), the indexes of all these, their TOAST
# tables and TOAST indexes
RELATIONS_SQL = """
WITH RECURSIVE
ext AS (SELECT oid FROM pg_extension WHERE extname = 'webhooks'),
base AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'webhooks' AND c.relkind IN ('r', 'p')
    UNION
    SELECT d.objid FROM pg_depend d JOIN ext ON d.refobjid = ext.oid JOIN pg_class c ON c.oid = d.objid
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
       AND d.deptype = 'e' AND c.relkind IN ('r', 'p')),
tabs AS (
    SELECT b.oid, b.oid AS top FROM base b
     WHERE NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = b.oid)
    UNION
    SELECT i.inhrelid, t.top FROM pg_inherits i JOIN tabs t ON i.inhparent = t.oid),
rels AS (
    SELECT t.oid, t.top FROM tabs t
    UNION ALL
    SELECT x.indexrelid, t.top FROM tabs t JOIN pg_index x ON x.indrelid = t.oid
    UNION ALL
    SELECT c.reltoastrelid, t.top FROM tabs t JOIN pg_class c ON c.oid = t.oid WHERE c.reltoastrelid <> 0
    UNION ALL
    SELECT x.indexrelid, t.top FROM tabs t JOIN pg_class c ON c.oid = t.oid
      JOIN pg_index x ON x.indrelid = c.reltoastrelid WHERE c.reltoastrelid <> 0)
SELECT r.oid, r.oid::regclass::text, c.relkind, r.top::regclass::text,
       pg_relation_size(r.oid, 'main') + pg_relation_size(r.oid, 'fsm') + pg_relation_size(r.oid, 'vm'),
       CASE WHEN c.relkind IN ('r', 't', 'm') THEN pg_total_relation_size(r.oid) END,
       coalesce(s.n_live_tup, c.reltuples::bigint), s.n_live_tup IS NOT NULL
  FROM rels r JOIN pg_class c ON c.oid = r.oid LEFT JOIN pg_stat_all_tables s ON s.relid = r.oid
 ORDER BY 4, 2
"""

KIND = {"r": "table", "p": "partitioned table", "i": "index", "I": "partitioned index", "t": "toast",
        "m": "matview"}


def relations():
    """[{oid, name, kind, top, bytes, total_bytes, rows}] for every relation of the extension;
    rows: count(*) for tables under SOAK_COUNT_MAX_MB, else n_live_tup (the statistics'
    estimate); for indexes reltuples (-1: never analyzed)."""
    for attempt in range(3):
        rows = []
        for line in psql(RELATIONS_SQL).splitlines():
            oid, name, kind, top, nbytes, total, tuples, live = line.split("|")
            label = KIND.get(kind, kind)
            if kind == "i" and name.startswith("pg_toast."):
                label = "toast index"
            rows.append({"oid": int(oid), "name": name, "kind": label, "relkind": kind, "top": top,
                         "bytes": int(nbytes), "total_bytes": int(total) if total else None,
                         "rows": int(tuples), "rows_source": "n_live_tup" if live == "t" else "reltuples"})
        small = [r for r in rows if r["relkind"] in ("r", "t") and r["bytes"] < COUNT_MAX_BYTES]
        if small:
            # one statement; a partition dropped meanwhile makes it fail: list again
            out = psql(" UNION ALL ".join("SELECT %d, count(*) FROM %s" % (r["oid"], r["name"]) for r in small),
                       check=False)
            if out is None:
                continue
            counts = dict(tuple(int(x) for x in l.split("|")) for l in out.splitlines())
            for r in small:
                r["rows"] = counts[r["oid"]]
                r["rows_source"] = "count"
        # a partitioned parent: the sum of its partitions
        for r in rows:
            if r["relkind"] == "p":
                r["rows"] = sum(max(0, x["rows"]) for x in rows
                                if x["top"] == r["top"] and x["relkind"] == "r")
        return rows
    raise RuntimeError("could not list the extension's relations (partitions kept changing)")


def top_totals(rels):
    """bytes of each top-level table with everything that belongs to it (partitions, indexes, TOAST)."""
    out = {}
    for r in rels:
        out[r["top"]] = out.get(r["top"], 0) + r["bytes"]
    return out


# ---------------------------------------------------------------------------
# counting at the sinks
# ---------------------------------------------------------------------------

class Sinks:
    """Cumulative 2xx answers at the sinks, and lat_sink.py's arrival stamps."""

    def __init__(self):
        self.status_polls = 0
        self.flaky_pos = 0
        self.flaky_total = 0
        self.flaky_ok = 0
        self.lat_pos = 0
        self.lat_count = 0
        self.arrivals = {}      # messageId -> arrival time (EmailDeliveries)
        self.nginx0 = self._nginx_requests()

    def _nginx_requests(self):
        with urllib.request.urlopen(STATUS_URL, timeout=10) as f:
            text = f.read().decode()
        self.status_polls += 1
        return int(text.splitlines()[2].split()[2])

    def _read_flaky(self):
        try:
            with open(FLAKY_LOG) as f:
                f.seek(self.flaky_pos)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind("\n") + 1
        self.flaky_pos += len(data[:end].encode())
        for line in data[:end].splitlines():
            parts = line.split()
            if len(parts) == 2:
                self.flaky_total += 1
                if parts[1].startswith("2"):
                    self.flaky_ok += 1

    def _read_lat(self):
        with open(RECEIVER_LOG, "rb") as f:
            f.seek(self.lat_pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.lat_pos += end
        for line in data[:end].splitlines():
            r = json.loads(line)
            if (r.get("id") or "").startswith("msg_test_"):
                continue        # the wizard's connection test
            self.lat_count += 1
            try:
                b = json.loads(r["body"])
            except ValueError:
                continue
            if b.get("eventType") == "EmailDeliveries" and "messageId" in b:
                self.arrivals.setdefault(b["messageId"], r["t"])

    def sample(self):
        """(time, cumulative 2xx answers, cumulative failed attempts at the flaky target)."""
        n = self._nginx_requests()
        self._read_flaky()
        self._read_lat()
        # the status requests so far, this one included, are counted by nginx
        nginx_sink = (n - self.nginx0) - (self.status_polls - 1) - self.flaky_total
        return time.time(), nginx_sink + self.flaky_ok + self.lat_count, self.flaky_total - self.flaky_ok


# ---------------------------------------------------------------------------
# CPU: the machine's, and how much of it was not ours
# ---------------------------------------------------------------------------

def _stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return v


def own_cpu_s():
    """CPU used by the soak's processes: the cluster, nginx, the latency sink, this
    script and its children (pgclient, psql), live or reaped."""
    try:
        with open(os.path.join(PGDATA, "postmaster.pid")) as f:
            pm = int(f.readline())
    except OSError:
        pm = -1
    roots = {pm, NGINX_MASTER, os.getpid()}
    total = 0.0
    for pid in (pm, NGINX_MASTER, SINK_PID):
        v = _stat(pid) if pid > 0 else None
        if v:
            total += sum(int(x) for x in v[11:15]) / HZ if pid != SINK_PID else (int(v[11]) + int(v[12])) / HZ
    for d in os.listdir("/proc"):
        if d.isdigit():
            v = _stat(int(d))
            if v and int(v[1]) in roots:
                total += (int(v[11]) + int(v[12])) / HZ
    t = os.times()
    return total + t.user + t.system + t.children_user + t.children_system


def busy_cpu_s():
    """(all busy CPU s, user+nice+system CPU s) of the machine: the first adds
    irq, softirq and steal (the hypervisor's), which no process is charged with."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / HZ, (v[0] + v[1] + v[2]) / HZ


class CpuMark:
    def __init__(self):
        (self.busy, self.proc), self.own = busy_cpu_s(), own_cpu_s()

    def since(self):
        """(machine busy CPU s, CPU s of processes outside the soak) since the mark; re-marks.
        Outside: user+system time not charged to the soak's processes (other
        people's tests, kernel threads)."""
        (b, p), o = busy_cpu_s(), own_cpu_s()
        busy, foreign = b - self.busy, max(0.0, (p - self.proc) - (o - self.own))
        self.busy, self.proc, self.own = b, p, o
        return busy, foreign


# ---------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------

def worker_pid(timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = '%s'" % CUR["db"],
                 check=False)
        if p:
            return int(p.splitlines()[0])
        time.sleep(0.2)
    raise RuntimeError("no webhooks worker")


def set_retention(seconds):
    psql("ALTER SYSTEM SET webhooks.log_retention = '%s'" % guc_duration(seconds))
    psql("SELECT pg_reload_conf()")
    time.sleep(0.5)


def fresh_install(retention):
    """A fresh install of the extension in the database (DROP EXTENSION ... CASCADE when
    it exists), the application table with the statement trigger, and three webhooks:
    EmailOpens -> nginx, EmailDeliveries -> lat_sink.py, EmailBounces -> the flaky target."""
    if psql("SELECT count(*) FROM pg_database WHERE datname = '%s'" % CUR["db"], db="postgres") == "0":
        psql("CREATE DATABASE %s" % CUR["db"], db="postgres")
    set_retention(retention)
    psql("DROP SCHEMA IF EXISTS app CASCADE")
    psql("DROP EXTENSION IF EXISTS webhooks CASCADE")
    psql("CREATE EXTENSION webhooks")
    SCHEMA.refresh()
    psql("""
CREATE SCHEMA app;
CREATE TABLE app.soak_opens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id bigint NOT NULL, subscriber_id bigint NOT NULL,
    subscriber_email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TRIGGER soak_opens_webhook AFTER INSERT ON app.soak_opens
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
""")
    psql("SELECT 1 FROM webhooks.create_webhook('soak-nginx', 'EmailOpens', '%s')" % NGINX_URL)
    psql("SELECT 1 FROM webhooks.create_webhook('soak-latency', 'EmailDeliveries', '%s/ok')" % RECEIVER_URL)
    # the wizard's connection test could meet a planned 500: create it on the
    # sink, then point it at the flaky target
    psql("SELECT 1 FROM webhooks.create_webhook('soak-flaky', 'EmailBounces', '%s')" % NGINX_URL)
    psql("SELECT webhooks.deactivate_webhook('soak-flaky')")
    psql("SELECT webhooks.update_webhook('soak-flaky', target_url => '%s')" % FLAKY_URL)
    psql("UPDATE webhooks.webhooks SET is_active = true WHERE name = 'soak-flaky'")
    worker_pid()
    psql("VACUUM ANALYZE")
    psql("CHECKPOINT")


def wait_backlog_empty(timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if backlog() == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("the queue did not drain in %d s" % timeout)


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------

BATCH_SQL = ("INSERT INTO app.soak_opens (message_id, subscriber_id, subscriber_email) "
             "SELECT %d::bigint * 1000 + g, 1000000 + g, 'subscriber' || g || '@example.com' "
             "FROM generate_series(1, 1000) g")
EMIT_SQL = ("SELECT webhooks.emit(CASE WHEN %d %% {every} = 0 THEN 'EmailBounces' ELSE 'EmailDeliveries' END, "
            "jsonb_build_object('messageId', {base} + %d, 'subscriberId', 42, "
            "'subscriberEmail', 'soak@example.com'))")


def peak(sinks, events=PEAK_EVENTS):
    """Deliveries/s draining a backlog of `events` events, committed in one
    transaction as 1,000-row statements under the statement trigger:
    events / (last arrival at the sink - commit)."""
    wait_backlog_empty()
    psql("CHECKPOINT")
    _, c0, _ = sinks.sample()
    sql = ("DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO app.soak_opens (message_id, subscriber_id, "
           "subscriber_email) SELECT i * 1000 + g, 1000000 + g, 'subscriber' || g || '@example.com' "
           "FROM generate_series(1, 1000) g; END LOOP; END $$" % (events // BATCH))
    t_ins = time.time()
    commit = float(pgclient("commits", "1", sql).split()[1])
    deadline = time.time() + max(300, events / 1000)
    while time.time() < deadline:
        t, c, _ = sinks.sample()
        if c - c0 >= events:
            return {"per_s": round(events / (t - commit), 1), "drain_s": round(t - commit, 2),
                    "insert_s": round(commit - t_ins, 2)}
        time.sleep(0.2)
    raise RuntimeError("only %d of %d events arrived in time" % (c - c0, events))


class Load:
    """The steady offered load: 1,000-row INSERTs paced by pgclient (stream), and
    single-row emit() transactions by a second pgclient (trickle), commit-stamped."""

    def __init__(self, rate, base, name):
        self.emit_rate = 1000.0 / EMIT_INTERVAL_MS
        batch_rate = (rate - self.emit_rate) / BATCH
        if batch_rate <= 0:
            raise RuntimeError("offered load %.0f/s is below the emit client's %.0f/s" % (rate, self.emit_rate))
        self.batch_interval_ms = max(1, iround(1000.0 / batch_rate))
        self.offered = self.emit_rate + BATCH * 1000.0 / self.batch_interval_ms
        self.base = base
        self.commits_path = os.path.join(TMP, "commits-%s.txt" % name)
        self.pos = 0
        self.commits = []       # (commit time, messageId) of the emit() events to lat_sink.py
        self.procs = []

    def start(self):
        self.batch_out = open(os.path.join(TMP, "batches.out"), "w")
        self.emit_out = open(self.commits_path, "w")
        self.procs = [
            subprocess.Popen([PGCLIENT, "stream", conninfo(), str(self.batch_interval_ms), BATCH_SQL],
                             stdout=self.batch_out),
            subprocess.Popen([PGCLIENT, "trickle", conninfo(), str(EMIT_INTERVAL_MS),
                              EMIT_SQL.format(every=FLAKY_EVERY, base=self.base)], stdout=self.emit_out),
        ]
        self.t0 = time.time()

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()
        self.batch_out.close()
        self.emit_out.close()
        self.read_commits()
        for p in self.procs:
            if p.returncode not in (0, -15):
                log("  WARNING: a load client exited with status %s" % p.returncode)

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def read_commits(self):
        with open(self.commits_path) as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind("\n") + 1
        self.pos += len(data[:end].encode())
        for line in data[:end].splitlines():
            i, t = line.split()
            if int(i) % FLAKY_EVERY != 0:
                self.commits.append((float(t), self.base + int(i)))

    def latency(self, sinks, lo, hi):
        """p50, p99 (ms), events, late: the emit() events committed in [lo, hi)."""
        self.read_commits()
        now = time.time()
        lat, late = [], 0
        for t, m in self.commits:
            if lo <= t < hi:
                a = sinks.arrivals.get(m)
                if a is None:
                    late += 1
                    a = now
                lat.append((a - t) * 1000)
        return pct(lat, 50), pct(lat, 99), len(lat), late


def rss_anon_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def queue_stats():
    r = psql("SELECT autovacuum_count, n_dead_tup, n_live_tup FROM pg_stat_user_tables "
             "WHERE relid = 'webhooks.deliveries'::regclass").split("|")
    return int(r[0]), int(r[1]), int(r[2])


# ---------------------------------------------------------------------------
# phase: soak
# ---------------------------------------------------------------------------

def scaled_windows(minutes):
    """The issue's windows for a 20-minute soak (reference: the 10th minute; the last 5
    minutes; the first 5), scaled by minutes/20 for a shorter or longer run."""
    ref = max(1, iround(10 * minutes / 20.0))
    width = max(1, iround(5 * minutes / 20.0))
    ref = min(ref, minutes - width)
    return ref, width


def soak_phase(sinks, res):
    log("\n== soak: peak, then %d minutes at %.0f %% of it; log_retention %s, partition width %s ==" % (
        MINUTES, LOAD * 100, guc_duration(RETENTION), guc_duration(WIDTH)))
    fresh_install(RETENTION)
    log("  schema: " + SCHEMA.describe())
    p = peak(sinks)
    log("  peak: %.0f deliveries/s (%d events drained in %.2f s; inserted and committed in %.2f s)" % (
        p["per_s"], PEAK_EVENTS, p["drain_s"], p["insert_s"]))
    res["peak"] = p["per_s"]
    wait_backlog_empty()

    load = Load(LOAD * p["per_s"], 100000000, "soak")
    log("  offered load: %.0f events/s = one 1,000-row INSERT every %d ms + %.0f emit()/s (every %d-th to the"
        " flaky webhook)" % (load.offered, load.batch_interval_ms, load.emit_rate, FLAKY_EVERY))
    rels0 = relations()
    tops = sorted(top_totals(rels0))
    fields = (["minute", "t_end", "offered_per_s", "deliveries_per_s", "failed_attempts_per_s",
               "p50_ms", "p99_ms", "latency_events", "latency_late", "backlog", "worker_pid", "rss_anon_kb",
               "autovacuum_count_deliveries", "n_dead_tup_deliveries", "n_live_tup_deliveries",
               "oldest_delivery_age_s", "oldest_log_age_s", "oldest_finished_age_s", "total_bytes"]
              + ["bytes:" + t for t in tops] + ["machine_busy_cpu_s", "foreign_cpu_s", "loadavg1"])
    f = open(os.path.join(OUT, "soak.csv"), "w", newline="")
    w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    rf = open(os.path.join(OUT, "relations.csv"), "w", newline="")
    rw = csv.writer(rf)
    rw.writerow(["minute", "relation", "kind", "table", "rows", "rows_from", "bytes", "total_relation_bytes"])
    log("  %3s %9s %9s %8s %8s %8s %9s %9s %6s %8s %8s" % (
        "min", "deliv/s", "failed/s", "p50 ms", "p99 ms", "backlog", "total MB", "RssAnon", "autov",
        "oldest s", "foreign"))
    rows = []
    cpu = CpuMark()
    load.start()
    t0 = load.t0
    t_prev, c_prev, f_prev = sinks.sample()
    for minute in range(1, MINUTES + 1):
        t_end = t0 + 60 * minute
        time.sleep(max(0.0, t_end - time.time()))
        t, c, fails = sinks.sample()
        if not load.alive():
            raise RuntimeError("a load client died")
        # the minute's latency: events committed in it, read 5 s after its end
        time.sleep(5)
        p50, p99, nlat, late = load.latency(sinks, t_end - 60, t_end)
        busy, foreign = cpu.since()
        wpid = worker_pid()
        av, ndead, nlive = queue_stats()
        dage, lage = oldest_ages()
        rels = relations()
        totals = top_totals(rels)
        row = {"minute": minute, "t_end": round(t, 1), "offered_per_s": round(load.offered, 1),
               "deliveries_per_s": round((c - c_prev) / (t - t_prev), 1),
               "failed_attempts_per_s": round((fails - f_prev) / (t - t_prev), 2),
               "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "latency_events": nlat, "latency_late": late,
               "backlog": backlog(), "worker_pid": wpid, "rss_anon_kb": rss_anon_kb(wpid),
               "autovacuum_count_deliveries": av, "n_dead_tup_deliveries": ndead, "n_live_tup_deliveries": nlive,
               "oldest_delivery_age_s": "" if dage is None else round(dage, 1),
               "oldest_log_age_s": "" if lage is None else round(lage, 1),
               "oldest_finished_age_s": "" if dage is None and lage is None else round(
                   max(x for x in (dage, lage) if x is not None), 1),
               "total_bytes": sum(totals.values()),
               "machine_busy_cpu_s": round(busy, 1), "foreign_cpu_s": round(foreign, 1),
               "loadavg1": os.getloadavg()[0]}
        for top in tops:
            row["bytes:" + top] = totals.get(top, 0)
        new_tops = set(totals) - set(tops)
        if new_tops:
            log("  note: tables appeared during the run (in relations.csv, not in soak.csv's columns): %s"
                % ", ".join(sorted(new_tops)))
        t_prev, c_prev, f_prev = t, c, fails
        w.writerow(row)
        f.flush()
        for r in rels:
            rw.writerow([minute, r["name"], r["kind"], r["top"], r["rows"], r["rows_source"], r["bytes"],
                         "" if r["total_bytes"] is None else r["total_bytes"]])
        rf.flush()
        rows.append(row)
        log("  %3d %9.0f %9.2f %8.2f %8.2f %8d %9.1f %9.1f %6d %8s %8.1f" % (
            minute, row["deliveries_per_s"], row["failed_attempts_per_s"], p50, p99, row["backlog"],
            row["total_bytes"] / 1048576.0, (row["rss_anon_kb"] or 0) / 1024.0, av,
            row["oldest_finished_age_s"], foreign))
        # the next minute's counts start at this sample; the 5 s of latency
        # reading and the size queries fall into it
    load.stop()
    f.close()
    rf.close()
    write_wide_relations()
    res["soak"] = {"rows": rows, "tops": tops, "offered": load.offered}
    plot_soak(rows, tops, load.offered)
    judge_soak(res, rows, tops)


def write_wide_relations():
    """relations.csv again, one row per minute and two columns (rows, bytes) per relation."""
    with open(os.path.join(OUT, "relations.csv")) as f:
        recs = list(csv.DictReader(f))
    names = []
    for r in recs:
        if r["relation"] not in names:
            names.append(r["relation"])
    by_min = {}
    for r in recs:
        by_min.setdefault(int(r["minute"]), {})[r["relation"]] = r
    with open(os.path.join(OUT, "relations-wide.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["minute"] + [x for n in names for x in ("rows:" + n, "bytes:" + n)])
        for m in sorted(by_min):
            w.writerow([m] + [x for n in names for x in ((by_min[m][n]["rows"], by_min[m][n]["bytes"])
                                                         if n in by_min[m] else ("", ""))])


def judge_soak(res, rows, tops):
    s = res["soak"]
    say("")
    say("== soak: %d minutes at %.0f events/s offered (%.0f %% of the peak %.0f/s), log_retention %s ==" % (
        MINUTES, s["offered"], LOAD * 100, res["peak"], guc_duration(RETENTION)))
    say("schema: " + SCHEMA.describe())
    if MINUTES < 2:
        say("(too short to judge: SOAK_MINUTES >= 2)")
        return
    ref, width = scaled_windows(MINUTES)
    say("windows (the issue's 10th minute and last 5 minutes of 20, scaled by %d/20): reference minute %d,"
        " last %d minute(s), first %d minute(s)" % (MINUTES, ref, width, width))
    by = {r["minute"]: r for r in rows}
    last = [by[m] for m in range(MINUTES - width + 1, MINUTES + 1)]
    first = [by[m] for m in range(1, width + 1)]

    # 1. sizes plateau
    ok_all = True
    for key, label in [("total_bytes", "all relations of the extension")] + [("bytes:" + t, t) for t in tops]:
        refb = by[ref][key]
        mx = max(r[key] for r in last)
        if key != "total_bytes" and refb < 1048576 and mx < 1048576:
            continue            # tiny tables: a page more is not growth
        ok = mx <= refb * (1 + SIZE_BAND)
        ok_all = ok_all and ok
        say("  %-4s size %-40s minute %d: %8.1f MB, last %d max: %8.1f MB (%+.0f %%; target <= +%d %%)" % (
            verdict(ok), label, ref, refb / 1048576.0, width, mx / 1048576.0,
            100.0 * (mx - refb) / refb if refb else float("inf"), SIZE_BAND * 100))
    res["size_ok"] = ok_all
    say("  (tables below 1 MB are not judged: relations.csv has them)")

    # 2. throughput
    tp = [r["deliveries_per_s"] for r in rows]
    m = med(tp)
    worst = max(tp, key=lambda x: abs(x - m))
    ok = all(abs(x - m) <= TPUT_BAND * m for x in tp)
    say("  %-4s throughput per minute: median %.0f/s, min %.0f, max %.0f (worst %+.1f %%; target within +-%d %%);"
        " offered %.0f/s" % (verdict(ok), m, min(tp), max(tp), 100.0 * (worst - m) / m, TPUT_BAND * 100,
                             s["offered"]))

    # 3. p99 flat
    p_first, p_last = med([r["p99_ms"] for r in first]), med([r["p99_ms"] for r in last])
    ok = p_last <= P99_RATIO * p_first or p_last - p_first <= P99_SLACK_MS
    say("  %-4s p99 flat: median p99 of the first %d minute(s) %.2f ms, of the last %d %.2f ms (x%.2f; target:"
        " <= x%.1f, or at most %.0f ms more)" % (verdict(ok), width, p_first, width, p_last,
                                                p_last / p_first if p_first else float("nan"), P99_RATIO,
                                                P99_SLACK_MS))
    say("       p50 median %.2f ms; p99 per minute min %.2f max %.2f ms; events not arrived 5 s after their"
        " minute: %d" % (med([r["p50_ms"] for r in rows]), min(r["p99_ms"] for r in rows),
                         max(r["p99_ms"] for r in rows), sum(r["latency_late"] for r in rows)))

    # 4. expired rows
    ages = [r["oldest_finished_age_s"] for r in rows if r["oldest_finished_age_s"] != ""]
    limit = RETENTION + WIDTH
    if not ages:
        say("  n/a  oldest finished row: no finished rows seen")
    elif SCHEMA.history:
        ok = max(ages) <= limit
        say("  %-4s oldest finished row (delivery or log) at any minute: %.0f s (target <= retention %.0f s +"
            " partition width %.0f s = %.0f s)" % (verdict(ok), max(ages), RETENTION, WIDTH, limit))
    else:
        say("  n/a  oldest finished row (delivery or log) at any minute: %.0f s; at the end %.0f s (retention"
            " %.0f s; today's schema: reported only)" % (max(ages), ages[-1], RETENTION))
    ds = [r["oldest_delivery_age_s"] for r in rows if r["oldest_delivery_age_s"] != ""]
    ls = [r["oldest_log_age_s"] for r in rows if r["oldest_log_age_s"] != ""]
    say("       oldest delivery at the end %s s, oldest log row %s s" % (ds[-1] if ds else "-", ls[-1] if ls else "-"))

    # memory, vacuum, machine
    anon = [r["rss_anon_kb"] for r in rows if r["rss_anon_kb"]]
    pids = sorted(set(r["worker_pid"] for r in rows))
    say("       worker RssAnon: minute 1 %.1f MB, reference minute %.1f MB, end %.1f MB (max %.1f MB)%s" % (
        anon[0] / 1024.0, by[ref]["rss_anon_kb"] / 1024.0, anon[-1] / 1024.0, max(anon) / 1024.0,
        "" if len(pids) == 1 else "; THE WORKER CHANGED: pids %s" % pids))
    say("       autovacuum runs on webhooks.deliveries (pg_stat_user_tables.autovacuum_count): %d after minute 1,"
        " %d at the end; backlog at the end %d events" % (rows[0]["autovacuum_count_deliveries"],
                                                           rows[-1]["autovacuum_count_deliveries"],
                                                           rows[-1]["backlog"]))
    fc = [r["foreign_cpu_s"] for r in rows]
    say("       machine: busy CPU %.0f-%.0f s per minute (of 120); processes outside the soak used %.1f CPU s in"
        " all (max %.1f in a minute)" % (min(r["machine_busy_cpu_s"] for r in rows),
                                         max(r["machine_busy_cpu_s"] for r in rows), sum(fc), max(fc)))


# ---------------------------------------------------------------------------
# phase: history
# ---------------------------------------------------------------------------

def history_range(span):
    """[lo, hi) (epoch s) for the history rows: the retention window, within the
    partitions of webhooks.delivery_history when it has range partitions."""
    now = float(psql("SELECT extract(epoch FROM now())"))
    lo, hi = now - span, now
    if SCHEMA.history:
        r = psql("""
SELECT extract(epoch FROM min(b[1]::timestamptz)), extract(epoch FROM max(b[2]::timestamptz))
  FROM (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') b
          FROM pg_partition_tree('webhooks.delivery_history') t JOIN pg_class c ON c.oid = t.relid
         WHERE t.isleaf) s WHERE b IS NOT NULL""")
        plo, phi = (float(x) if x else None for x in r.split("|"))
        has_default = psql("SELECT count(*) FROM pg_partition_tree('webhooks.delivery_history') t "
                           "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf "
                           "AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'") != "0"
        if plo is not None and not has_default:
            lo2, hi2 = max(lo, plo), min(hi, phi - 0.001)
            if lo2 < hi2:
                if (lo2, hi2) != (lo, hi):
                    log("  the partitions cover %s .. %s: the rows go there (%.0f s of the %.0f s window)" % (
                        time.strftime("%H:%M:%S", time.localtime(plo)), time.strftime("%H:%M:%S",
                                                                                      time.localtime(phi)),
                        hi2 - lo2, span))
                lo, hi = lo2, hi2
            else:
                log("  WARNING: no partition of webhooks.delivery_history covers the last %.0f s: inserting"
                    " anyway (it will fail if nothing takes the rows)" % span)
    return lo, hi


def insert_history(n, span):
    """n rows of finished deliveries, spread evenly over the retention window, 1 % dead."""
    wid = psql("SELECT id FROM webhooks.webhooks WHERE name = 'soak-nginx'")
    if SCHEMA.history:
        # partitions for the whole window, as an install that ran that long has
        psql("SELECT webhooks._maintain_history(%d, now() - make_interval(secs => %f))" % (round(span), span))
    lo, hi = history_range(span)
    chunk = 1000000
    t0 = time.time()
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        body = ("'{\"eventType\":\"EmailOpens\",\"messageId\":' || g || ',\"subscriberId\":' || (1000000 + g) || "
                "',\"subscriberEmail\":\"subscriber' || g || '@example.com\",\"eventDate\":\"' || "
                "to_char(f, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') || '\"}'")
        cols = ("webhook_id, event_type, body, state, attempts, created_at, last_attempt_at, finished_at, "
                "last_status, last_error, msg_id")
        vals = ("%s, 'EmailOpens', %s, CASE WHEN g %% 100 = 0 THEN 'dead' ELSE 'delivered' END, "
                "CASE WHEN g %% 100 = 0 THEN 4 ELSE 1 END, f - interval '5 ms', f - interval '2 ms', f, "
                "CASE WHEN g %% 100 = 0 THEN 500 ELSE 200 END, CASE WHEN g %% 100 = 0 THEN 'HTTP 500' END, "
                "'msg_' || md5(g::text)") % (wid, body)
        if SCHEMA.history:
            table, cols, vals = "webhooks.delivery_history", "id, " + cols, "1000000000000 + g, " + vals
        else:
            table, cols, vals = "webhooks.deliveries", cols + ", next_attempt_at", vals + ", f"
        psql("INSERT INTO %s (%s) SELECT %s FROM (SELECT g, to_timestamp(%f + (g - 1) * %f) AS f "
             "FROM generate_series(%d, %d) g) s" % (table, cols, vals, lo, (hi - lo) / n, start + 1, start + k))
        log("  %d of %d history rows in %.0f s" % (start + k, n, time.time() - t0))
    return table, time.time() - t0


def stats_ms():
    return [float(pgclient("time", "SELECT * FROM webhooks.webhook_stats")) for _ in range(STATS_RUNS)]


def history_phase(sinks, res):
    """Peak throughput on a fresh install and with HISTORY_ROWS rows of history, in two
    databases of the same server (each with its worker), runs alternating between them so
    that neither gets the machine's better minutes or the other's earlier drains."""
    log("\n== history: peak and webhook_stats, fresh install vs %d rows of history (log_retention %s) ==" % (
        HISTORY_ROWS, guc_duration(HISTORY_RETENTION)))
    log("  database %s: fresh install; database %s: with history; runs alternate" % (FRESH_DB, CUR["db"]))
    home = CUR["db"]
    CUR["db"] = FRESH_DB
    fresh_install(HISTORY_RETENTION)
    CUR["db"] = home
    fresh_install(HISTORY_RETENTION)
    log("  schema: " + SCHEMA.describe())
    table, secs = insert_history(HISTORY_ROWS, HISTORY_RETENTION)
    t = time.time()
    psql("VACUUM ANALYZE")
    psql("CHECKPOINT")
    log("  %d rows inserted into %s in %.0f s; VACUUM ANALYZE and CHECKPOINT %.0f s" % (
        HISTORY_ROWS, table, secs, time.time() - t))
    rels = relations()
    totals = top_totals(rels)
    log("  sizes now: " + ", ".join("%s %.0f MB" % (k, v / 1048576.0) for k, v in sorted(totals.items())))
    fresh, with_h = [], []
    for i in range(HISTORY_RUNS):
        # the fresh one first in odd runs, second in even ones
        order = [(FRESH_DB, fresh, "fresh install"), (home, with_h, "with history")]
        for db, into, what in (order if i % 2 == 0 else order[::-1]):
            CUR["db"] = db
            p = peak(sinks)
            into.append(p["per_s"])
            log("  %s, run %d: %.0f deliveries/s (drain %.2f s)" % (what, i + 1, p["per_s"], p["drain_s"]))
    CUR["db"] = FRESH_DB
    st_fresh = stats_ms()
    log("  fresh install: SELECT * FROM webhooks.webhook_stats: %s ms" % ["%.1f" % x for x in st_fresh])
    CUR["db"] = home
    st_hist = stats_ms()
    log("  with history: SELECT * FROM webhooks.webhook_stats: %s ms" % ["%.1f" % x for x in st_hist])
    psql("DROP DATABASE %s WITH (FORCE)" % FRESH_DB, db="postgres")
    a, b = med(fresh), med(with_h)
    say("")
    say("== history: %d rows of history (%s, spread over log_retention %s) ==" % (
        HISTORY_ROWS, table, guc_duration(HISTORY_RETENTION)))
    say("schema: " + SCHEMA.describe())
    # the history must not cost throughput: a median more than the band below the fresh one fails
    # (one above it is the machine's noise in the history's favour, reported as such)
    ok = b >= (1.0 - HISTORY_BAND) * a
    say("  %-4s peak, median of %d: fresh install %.0f/s %s, with history %.0f/s %s (%+.1f %%; target: the"
        " history costs nothing, taken as a median no more than %d %% below the fresh one)%s" % (
            verdict(ok), HISTORY_RUNS, a, fresh, b, with_h, 100.0 * (b - a) / a, HISTORY_BAND * 100,
            "; faster than fresh by more than the band: noise" if b > (1.0 + HISTORY_BAND) * a else ""))
    sa, sb = med(st_fresh), med(st_hist)
    ok = sb <= STATS_TARGET_MS
    say("  %-4s SELECT * FROM webhooks.webhook_stats, median of %d: fresh %.1f ms, with history %.1f ms (target:"
        " milliseconds, taken as <= %.0f ms)" % (verdict(ok), STATS_RUNS, sa, sb, STATS_TARGET_MS))
    res["history"] = {"fresh": fresh, "with_history": with_h, "stats_fresh_ms": st_fresh,
                      "stats_history_ms": st_hist}


# ---------------------------------------------------------------------------
# phase: snapshot
# ---------------------------------------------------------------------------

def snapshot_phase(sinks, res):
    log("\n== snapshot: steady load; a REPEATABLE READ snapshot held %.0f min after %.0f min, then %.0f min more"
        " ==" % (SNAP_MINUTES, SNAP_BEFORE, SNAP_AFTER))
    fresh_install(RETENTION)
    log("  schema: " + SCHEMA.describe())
    if res.get("peak"):
        pk = res["peak"]
        log("  peak of the soak phase: %.0f/s" % pk)
    else:
        pk = peak(sinks)["per_s"]
        log("  peak: %.0f/s" % pk)
        wait_backlog_empty()
    load = Load(LOAD * pk, 200000000, "snapshot")
    log("  offered load: %.0f events/s" % load.offered)
    f = open(os.path.join(OUT, "snapshot.csv"), "w", newline="")
    w = csv.writer(f)
    w.writerow(["t_s", "snapshot", "deliveries_per_s", "p50_ms", "p99_ms", "backlog", "n_dead_tup_deliveries",
                "bytes_deliveries"])
    env = dict(os.environ, PGAPPNAME="soak-snapshot")
    snap = None
    t_open = SNAP_BEFORE * 60
    t_release = t_open + SNAP_MINUTES * 60
    t_stop = t_release + SNAP_AFTER * 60
    rows = []
    load.start()
    t0 = load.t0
    _, c_prev, _ = sinks.sample()
    k = 0
    released_at = opened_at = None
    while True:
        k += 1
        t_end = t0 + 10 * k
        time.sleep(max(0.0, t_end - time.time()))
        el = time.time() - t0
        if snap is None and opened_at is None and el >= t_open:
            snap = subprocess.Popen([PSQL, "-X", "-q", "-h", SOCK, "-p", "5432", "-U", "postgres", "-d", CUR["db"]],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
            snap.stdin.write("BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT count(*) FROM webhooks.deliveries;\n")
            snap.stdin.flush()
            opened_at = time.time() - t0
            dl = time.time() + 30
            while time.time() < dl and psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                            "'soak-snapshot' AND backend_xmin IS NOT NULL "
                                            "AND state = 'idle in transaction'") != "1":
                time.sleep(0.1)
            log("  %5.0f s: snapshot taken (backend_xmin %s)" % (opened_at, psql(
                "SELECT backend_xmin FROM pg_stat_activity WHERE application_name = 'soak-snapshot'")))
        if snap is not None and el >= t_release:
            snap.stdin.write("COMMIT;\n")
            snap.stdin.close()
            snap.wait()
            snap = None
            released_at = time.time() - t0
            log("  %5.0f s: snapshot released" % released_at)
        t, c, _ = sinks.sample()
        state = "before" if opened_at is None else ("held" if released_at is None else "after")
        p50, p99, _, _ = load.latency(sinks, t - 15, t - 5)
        _, ndead, _ = queue_stats()
        row = [round(t - t0, 1), state, round((c - c_prev) / (t - (t0 + 10 * (k - 1))), 1), round(p50, 2),
               round(p99, 2), backlog(), ndead,
               int(psql("SELECT pg_total_relation_size('webhooks.deliveries')"))]
        c_prev = c
        w.writerow(row)
        f.flush()
        rows.append(row)
        if el >= t_stop:
            break
    load.stop()
    f.close()
    before = [r for r in rows if r[1] == "before"][1:] or [r for r in rows if r[1] == "before"]
    held = [r for r in rows if r[1] == "held"]
    after = [r for r in rows if r[1] == "after"]
    pre_rate = med([r[2] for r in before])
    pre_backlog = max([r[5] for r in before] or [0])
    backlog_ok = 2 * max(pre_backlog, 500)
    # throughput recovered: the first 10 s window after the release delivering >= 85 % of the
    # pre-snapshot rate, and the first minute after the release doing so in the median
    rec = None
    for r in after:
        if r[2] >= 0.85 * pre_rate:
            rec = max(0.0, r[0] - released_at)
            break
    first_minute = [r[2] for r in after if r[0] - released_at <= 60]
    first_minute_rate = med(first_minute) if first_minute else 0.0
    # the backlog built while held: drained when back to 2 x max(pre-snapshot backlog, 500)
    drained = None
    for r in after:
        if r[5] <= backlog_ok:
            drained = max(0.0, r[0] - released_at)
            break
    at_release = held[-1][5] if held else 0
    surplus = pk - load.offered
    say("")
    say("== snapshot: REPEATABLE READ snapshot held %.0f min under %.0f events/s offered ==" % (
        SNAP_MINUTES, load.offered))
    say("schema: " + SCHEMA.describe())
    say("  deliveries/s (10 s windows), median: before %.0f, while held %.0f, after %.0f; backlog max: before %d,"
        " while held %d, after %d" % (pre_rate, med([r[2] for r in held]), med([r[2] for r in after]),
                                      pre_backlog, max([r[5] for r in held] or [0]),
                                      max([r[5] for r in after] or [0])))
    say("  dead tuples in webhooks.deliveries: before %d, at the release %d; its size %.1f -> %.1f MB" % (
        before[-1][6] if before else -1, held[-1][6] if held else -1,
        (before[-1][7] if before else 0) / 1048576.0, (held[-1][7] if held else 0) / 1048576.0))
    say("  throughput recovered: the first 10 s window after the release delivering >= 85 %% of the"
        " pre-snapshot rate (%.0f/s), and the median of the first minute's windows doing so" % (0.85 * pre_rate))
    if rec is None:
        say("  FAIL throughput not recovered within the %.0f minutes observed after the release" % SNAP_AFTER)
    else:
        ok = rec <= RECOVERY_TARGET_S and first_minute_rate >= 0.85 * pre_rate
        say("  %-4s throughput recovered %.0f s after the release (window end; target <= %d s); first minute's"
            " median %.0f/s (%.0f %% of the pre-snapshot rate)" % (
                verdict(ok), rec, RECOVERY_TARGET_S, first_minute_rate, 100.0 * first_minute_rate / pre_rate))
    # the backlog: reported, not a target (it cannot drain faster than peak - offered)
    if surplus > 0:
        say("  (backlog %d at the release: at the peak rate minus the offered load (%.0f/s) it takes at least"
            " %.0f s to drain)" % (at_release, surplus, at_release / surplus))
    if drained is None:
        say("  backlog not back to <= %d within the %.0f minutes observed (at the end: %d)" % (
            backlog_ok, SNAP_AFTER, after[-1][5] if after else -1))
    else:
        say("  backlog back to <= %d events %.0f s after the release" % (backlog_ok, drained))
    say("  around the release (t s, state, deliveries/s, p50 ms, p99 ms, backlog):")
    for r in rows:
        if released_at - 60 <= r[0] <= released_at + 120:
            say("    %6.0f %-6s %7.0f %8.2f %8.2f %8d" % (r[0], r[1], r[2], r[3], r[4], r[5]))
    plot_snapshot(opened_at, released_at)


# ---------------------------------------------------------------------------
# charts
# ---------------------------------------------------------------------------

def gnuplot(script, name):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        f.write(script)
    try:
        r = subprocess.run(["gnuplot", path], capture_output=True, text=True)
    except FileNotFoundError:
        log("  (no gnuplot: chart skipped; sudo apt-get install gnuplot-nox, then: gnuplot %s)" % path)
        return
    if r.returncode != 0:
        log("  gnuplot failed: %s" % r.stderr)
    else:
        log("  chart: %s" % path.replace(".gp", ".png"))


def plot_soak(rows, tops, offered):
    with open(os.path.join(OUT, "soak.csv")) as f:
        header = f.readline().strip().split(",")
    col = {h: i + 1 for i, h in enumerate(header)}
    shown = [t for t in tops if max(r["bytes:" + t] for r in rows) >= 1048576]
    size_lines = ["'soak.csv' skip 1 using 1:($%d/1048576) with linespoints lw 2 title 'all relations'"
                  % col["total_bytes"]]
    size_lines += ["'' skip 1 using 1:($%d/1048576) with linespoints title '%s'" % (col["bytes:" + t], t)
                   for t in shown]
    script = """set terminal pngcairo noenhanced size 1200,1400 font ',10'
set output 'soak.png'
set datafile separator ','
set multiplot layout 4,1 title 'webhooks soak: %(minutes)d min at %(offered).0f events/s offered, log_retention %(ret)s (%(schema)s)'
set grid
set xlabel 'minute'
set xrange [0:%(xmax)d]
set key top left
set lmargin 12
set rmargin 4
set arrow from %(ret_min)g, graph 0 to %(ret_min)g, graph 1 nohead dt 3
set label 'retention' at %(ret_min)g, graph 0.06 offset 0.5,0
set arrow from %(ref)d, graph 0 to %(ref)d, graph 1 nohead dt 2
set label 'reference minute' at %(ref)d, graph 0.16 offset 0.5,0
set yrange [0:*]
set ylabel 'deliveries/s'
plot 'soak.csv' skip 1 using 1:%(tp)d with linespoints lw 2 title 'delivered (2xx at the sinks)', \\
     '' skip 1 using 1:%(off)d with lines dt 2 title 'offered'
set ylabel 'commit -> arrival, ms'
set logscale y
set yrange [*:*]
plot 'soak.csv' skip 1 using 1:%(p50)d with linespoints title 'p50', '' skip 1 using 1:%(p99)d with linespoints title 'p99'
unset logscale y
set yrange [0:*]
set ylabel 'MB'
plot %(sizes)s
set ylabel 'worker RssAnon, MB'
plot 'soak.csv' skip 1 using 1:($%(anon)d/1024) with linespoints title 'RssAnon'
unset multiplot
""" % {"minutes": MINUTES, "offered": offered, "ret": guc_duration(RETENTION), "xmax": MINUTES + 1,
       "schema": ("version %s, " % SCHEMA.version) + ("delivery_history" if SCHEMA.history else
                                                      "no delivery_history"),
       "tp": col["deliveries_per_s"], "off": col["offered_per_s"], "p50": col["p50_ms"], "p99": col["p99_ms"],
       "sizes": ", \\\n     ".join(size_lines), "anon": col["rss_anon_kb"],
       "ret_min": RETENTION / 60.0, "ref": scaled_windows(MINUTES)[0] if MINUTES >= 2 else 1}
    gnuplot(script, "soak.gp")


def plot_snapshot(opened, released):
    script = """set terminal pngcairo noenhanced size 1200,800 font ',10'
set output 'snapshot.png'
set datafile separator ','
set multiplot layout 2,1 title 'webhooks: a REPEATABLE READ snapshot held from %(o).0f s to %(r).0f s'
set grid
set xlabel 's'
set key top left
set lmargin 12
set rmargin 4
set arrow from %(o).0f, graph 0 to %(o).0f, graph 1 nohead dt 2
set arrow from %(r).0f, graph 0 to %(r).0f, graph 1 nohead dt 2
set yrange [0:*]
set ylabel 'deliveries/s (10 s)'
plot 'snapshot.csv' skip 1 using 1:3 with linespoints title 'delivered'
set ylabel 'events'
plot 'snapshot.csv' skip 1 using 1:6 with linespoints title 'backlog', '' skip 1 using 1:7 with lines title 'dead tuples in deliveries'
unset multiplot
""" % {"o": opened, "r": released}
    gnuplot(script, "snapshot.gp")


# ---------------------------------------------------------------------------

def main():
    os.chdir(OUT)
    t_start = time.time()
    res = {}
    psql("SELECT 1", db="postgres")
    sinks = None
    say("webhooks soak, %s; phases: %s" % (time.strftime("%Y-%m-%d %H:%M:%S %Z"), " ".join(PHASES)))
    say("load average at the start: %.2f %.2f %.2f (2 cores)" % os.getloadavg())
    for phase in PHASES:
        if phase not in ("soak", "history", "snapshot"):
            raise SystemExit("soak: unknown phase %r (soak, history, snapshot)" % phase)
    for phase in PHASES:
        if sinks is None:
            fresh_install(RETENTION)
            sinks = Sinks()
        cpu = CpuMark()
        t = time.time()
        {"soak": soak_phase, "history": history_phase, "snapshot": snapshot_phase}[phase](sinks, res)
        busy, foreign = cpu.since()
        say("  machine during this phase: %.0f s, busy CPU %.0f s (of %.0f on 2 cores), processes outside the soak"
            " %.1f CPU s; load average now %.2f" % (time.time() - t, busy, 2 * (time.time() - t), foreign,
                                                    os.getloadavg()[0]))
    say("")
    say("soak took %.0f s" % (time.time() - t_start))
    with open(os.path.join(OUT, "summary.txt"), "w") as f:
        f.write("\n".join(SUMMARY) + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
