#!/usr/bin/python3
"""The measurements of test/bench/run.sh (which sets up the cluster, nginx,
the receiver and the libpq client, and passes them in BENCH_* variables).

Standard library only.  Talks to PostgreSQL through psql (control queries)
and pgclient (timed commits).  Prints each run as it goes, then a summary of
medians beside the targets, then the raw per-run figures.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time

ENV = os.environ
TMP = ENV["BENCH_TMP"]
SOCK = ENV["BENCH_SOCK"]
PSQL = ENV["BENCH_PSQL"]
PGCLIENT = ENV["BENCH_PGCLIENT"]
PGCTL = ENV["BENCH_PGCTL"]
PGDATA = ENV["BENCH_PGDATA"]
AS_PG = ENV.get("BENCH_AS_PG", "").split()
NGINX_URL = ENV["BENCH_NGINX_URL"]
NGINX_PORT = NGINX_URL.rstrip("/").rsplit(":", 1)[1]
NGINX_MASTER = int(ENV["BENCH_NGINX_PID"])
SINK_PID = int(ENV.get("BENCH_SINK_PID", "0"))
RECEIVER_URL = ENV["BENCH_RECEIVER_URL"]
RECEIVER_LOG = ENV["BENCH_RECEIVER_LOG"]
NGINX_LAT_URL = ENV["BENCH_NGINX_LAT_URL"]
NGINX_LAT_LOG = ENV["BENCH_NGINX_LAT_LOG"]
LUA = ENV["BENCH_LUA"]

RUNS = int(ENV.get("RUNS", "3"))
EVENTS = int(ENV.get("EVENTS", "100000"))
CONFIGS = [tuple(int(x) for x in c.split("/")) for c in ENV.get("CONFIGS", "128/64 64/32 64/64 256/256").split()]
WRK_CONCURRENCY = [int(c) for c in ENV.get("WRK_CONCURRENCY", "64 128 256").split()]
LAT_EVENTS = int(ENV.get("LAT_EVENTS", "200"))
WRK_SECONDS = int(ENV.get("WRK_SECONDS", "10"))
DRAIN_TIMEOUT = int(ENV.get("DRAIN_TIMEOUT", "300"))
SECTIONS = ENV.get("SECTIONS", "throughput wrk latency enqueue fairness").split()
FAIR_SLOW_MS = int(ENV.get("FAIR_SLOW_MS", "1000"))
FAIR_SLOW_EVENTS = int(ENV.get("FAIR_SLOW_EVENTS", "3000"))   # per slow webhook
FAIR_WINDOW_S = float(ENV.get("FAIR_WINDOW_S", "8"))
FAIR_INTERVAL_MS = int(ENV.get("FAIR_INTERVAL_MS", "5"))
# the third webhook: h1 (HTTP/1.1 to lat_sink.py) or h2 (HTTP/2 to nginx)
FAIR_TARGET = ENV.get("FAIR_TARGET", "h1")
SLOW_MS = 3000
SLOW_INTERVAL_MS = 150          # one slow event every 150 ms: about 20 in flight at 3 s each
DB = "bench"
CONNINFO = "host=%s port=5432 user=postgres dbname=%s" % (SOCK, DB)
HZ = os.sysconf("SC_CLK_TCK")

TARGET_TPUT = 10000
TARGET_P50 = 5.0
TARGET_P99 = 50.0
TARGET_RATIO = 1.5             # 100,000-row INSERT, row trigger vs none (issue 11)
TARGET_STMT_RATIO = 1.3        # the same with the statement trigger
TARGET_SINGLE_RATIO = 1.15     # single-row INSERT per transaction (pgbench), row trigger vs none
PGBENCH = os.path.join(os.path.dirname(PSQL), "pgbench")
PGBENCH_SECONDS = int(ENV.get("PGBENCH_SECONDS", "20"))
PGBENCH_CLIENTS = int(ENV.get("PGBENCH_CLIENTS", "4"))
# times each 100,000-row INSERT is repeated per run (plain, statement, row in turn): one
# INSERT takes 0.2-0.5 s, which this machine's noise moves by tens of per cent
ENQ_REPS = int(ENV.get("ENQ_REPS", "5"))


def log(*a):
    print(*a, flush=True)


class Crash(Exception):
    pass


class Stall(Exception):
    pass


# Before 1.3 finished deliveries stayed in the queue table, and there was no
# view over queue and history: the same figures come from webhooks.deliveries,
# so that this script measures an older version too (before/after runs).
_LAYOUT = {}


def _for_layout(sql):
    if "webhooks.all_deliveries" not in sql:
        return sql
    if not _LAYOUT.get("view"):     # (asked again until it exists: the extension may not yet)
        _LAYOUT["view"] = _psql("SELECT to_regclass('webhooks.all_deliveries') IS NOT NULL") == "t"
    return sql if _LAYOUT["view"] else sql.replace("webhooks.all_deliveries", "webhooks.deliveries")


def psql(sql, db=DB, check=True):
    return _psql(_for_layout(sql), db, check)


def _psql(sql, db=DB, check=True):
    r = subprocess.run([PSQL, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-h", SOCK, "-p", "5432",
                        "-U", "postgres", "-d", db, "-c", sql],
                       capture_output=True, text=True)
    if r.returncode != 0:
        if check:
            raise RuntimeError("psql failed: %s\n%s" % (sql, r.stderr))
        return None
    return r.stdout.strip()


def pgclient(*args):
    r = subprocess.run([PGCLIENT, args[0], CONNINFO] + list(args[1:]), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("pgclient failed: %s" % r.stderr)
    return r.stdout


def server_up():
    return psql("SELECT 1", check=False) == "1"


def set_gucs(**kv):
    for k, v in kv.items():
        psql("ALTER SYSTEM SET webhooks.%s = '%s'" % (k, v))
    psql("SELECT pg_reload_conf()")
    time.sleep(0.5)             # the worker reloads at its next loop iteration


def reset_gucs(*names):
    for k in names:
        psql("ALTER SYSTEM RESET webhooks.%s" % k)
    psql("SELECT pg_reload_conf()")
    time.sleep(0.5)


_BATCHES = []


def batch_table():
    """The extension may keep the events of a multi-row statement as batch rows
    (webhooks.event_batches) that its worker splits into deliveries; the
    benchmark counts and empties both."""
    if not _BATCHES:
        _BATCHES.append(psql("SELECT to_regclass('webhooks.event_batches') IS NOT NULL") == "t")
    return _BATCHES[0]


def truncate_queue(*more):
    tables = ["webhooks.deliveries", "webhooks.webhook_logs", "webhooks.delivery_history",
              "webhooks.history_latency", "webhooks.history_counts"] + (["webhooks.event_batches"] if batch_table() else [])
    tables = [t for t in tables if psql("SELECT to_regclass('%s') IS NOT NULL" % t) == "t"]
    psql("TRUNCATE " + ", ".join(tables + list(more)))


def queued_events():
    n = int(psql("SELECT count(*) FROM webhooks.all_deliveries"))
    if batch_table():
        n += int(psql("SELECT coalesce(sum(events), 0) FROM webhooks.event_batches"))
    return n


def undelivered():
    """Events not yet delivered or dead: pending or held deliveries, plus events still in batches."""
    n = int(psql("SELECT count(*) FROM webhooks.deliveries WHERE state IN ('pending', 'held')"))
    if batch_table():
        n += int(psql("SELECT coalesce(sum(events), 0) FROM webhooks.event_batches"))
    return n


def worker_pid(timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = '%s'" % DB,
                 check=False)
        if p:
            return int(p)
        time.sleep(0.1)
    raise RuntimeError("no webhooks worker")


def fresh_worker():
    """Restart the worker (it is restarted 5 s after it exits), so each
    throughput run starts from a fresh process and its memory figures are its own."""
    old = worker_pid()
    psql("SELECT pg_terminate_backend(%d)" % old)
    deadline = time.time() + 30
    while time.time() < deadline:
        p = psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = '%s'" % DB,
                 check=False)
        if p and int(p) != old:
            time.sleep(0.3)     # let it finish its start-up (extension check, lease release)
            return int(p)
        time.sleep(0.1)
    raise RuntimeError("the webhooks worker did not come back")


def recover_after_crash():
    """The cluster runs with restart_after_crash = off: after a worker crash it
    is down.  Drop the ALTER SYSTEM settings (the crash may depend on them),
    start it again and empty the queue (leased rows would crash it again)."""
    subprocess.run(AS_PG + [PGCTL, "-D", PGDATA, "-m", "immediate", "-w", "stop"],
                   capture_output=True, cwd="/")
    with open(os.path.join(PGDATA, "postgresql.auto.conf"), "w") as f:
        f.write("# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n")
    # the worker would claim the leftover queue at start, before we can truncate
    # it: start with the worker paused
    subprocess.run(AS_PG + [PGCTL, "-D", PGDATA, "-l", os.path.join(TMP, "server.log"), "-w",
                            "-o", "-c webhooks.enabled=off", "start"],
                   capture_output=True, cwd="/", check=True)
    truncate_queue()
    subprocess.run(AS_PG + [PGCTL, "-D", PGDATA, "-m", "fast", "-w", "stop"], capture_output=True, cwd="/",
                   check=True)
    subprocess.run(AS_PG + [PGCTL, "-D", PGDATA, "-l", os.path.join(TMP, "server.log"), "-w", "start"],
                   capture_output=True, cwd="/", check=True)
    worker_pid()


def crash_lines(since_bytes):
    with open(os.path.join(TMP, "server.log"), errors="replace") as f:
        f.seek(since_bytes)
        return [l.strip() for l in f if "terminated by signal" in l or "PANIC" in l]


def log_size():
    return os.path.getsize(os.path.join(TMP, "server.log"))


def nginx_worker_pid():
    with open("/proc/%d/task/%d/children" % (NGINX_MASTER, NGINX_MASTER)) as f:
        return int(f.read().split()[0])


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields after the command: state is field 3 of stat(5), utime 14, stime 15
    return (int(fields[11]) + int(fields[12])) / HZ


def status_kb(pid, keys=("VmRSS", "RssAnon", "RssShmem", "VmHWM")):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


def proc_cpu(pid, children=False):
    """utime+stime of pid (plus its reaped children's when asked), 0 if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    n = int(v[11]) + int(v[12]) + ((int(v[13]) + int(v[14])) if children else 0)
    return n / HZ


def own_cpu_s():
    """CPU used by everything this benchmark runs: the cluster (postmaster,
    its live and reaped children), nginx, the latency sink, bench.py and the
    psql/pgclient processes it waited for."""
    with open(os.path.join(PGDATA, "postmaster.pid")) as f:
        pm = int(f.readline())
    total = proc_cpu(pm, children=True) + proc_cpu(NGINX_MASTER, children=True) + proc_cpu(SINK_PID)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    v = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(v[1]) in (pm, NGINX_MASTER):
                total += (int(v[11]) + int(v[12])) / HZ
    t = os.times()
    return total + t.user + t.system + t.children_user + t.children_system


def cpu_mark():
    return (time.time(), system_busy_s(), own_cpu_s())


def foreign_report(res, section, mark):
    t, sys_, own = mark
    wall = time.time() - t
    foreign = max(0.0, (system_busy_s() - sys_) - (own_cpu_s() - own))
    res.setdefault("foreign_cpu", {})[section] = (round(foreign, 1), round(wall, 1))
    if foreign > 0.1 * wall:
        log("  WARNING: processes outside the benchmark used %.1f CPU s of the %.1f s of this section"
            " (the machine has 2 cores): its figures are disturbed" % (foreign, wall))


def system_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / HZ


class Sampler(threading.Thread):
    """VmRSS / RssAnon / RssShmem of the worker every 100 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        t0 = time.time()
        while not self.stop.is_set():
            try:
                s = status_kb(self.pid)
            except OSError:
                return          # the worker is gone
            self.samples.append((time.time() - t0, s["VmRSS"], s["RssAnon"], s["RssShmem"]))
            self.stop.wait(0.1)


def pct(values, p):
    """Percentile by linear interpolation between closest ranks."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(v) - 1)
    return v[f] + (v[c] - v[f]) * (k - f)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------

# throughput: bulk insert, statement trigger -> EmailOpens -> nginx
BENCH_OPENS_DDL = """
CREATE SCHEMA app;
CREATE TABLE app.bench_opens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id bigint NOT NULL, subscriber_id bigint NOT NULL,
    subscriber_email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TRIGGER bench_opens_webhook AFTER INSERT ON app.bench_opens
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
"""


def setup_schema():
    psql("CREATE DATABASE %s" % DB, db="postgres")
    psql("CREATE EXTENSION webhooks")
    worker_pid()
    psql(BENCH_OPENS_DDL + """
-- enqueue cost: the same table without trigger, with a statement trigger, with a row trigger
CREATE TABLE app.enq_plain (LIKE app.bench_opens INCLUDING ALL);
CREATE TABLE app.enq_stmt (LIKE app.bench_opens INCLUDING ALL);
CREATE TABLE app.enq_row (LIKE app.bench_opens INCLUDING ALL);
CREATE TRIGGER enq_stmt_webhook AFTER INSERT ON app.enq_stmt
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
CREATE TRIGGER enq_row_webhook AFTER INSERT ON app.enq_row
    FOR EACH ROW EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
""")
    psql("SELECT 1 FROM webhooks.create_webhook('nginx-sink', 'EmailOpens', '%s')" % NGINX_URL)
    psql("SELECT 1 FROM webhooks.create_webhook('receiver-fast', 'EmailDeliveries', '%s/ok')" % RECEIVER_URL)
    psql("SELECT 1 FROM webhooks.create_webhook('nginx-latency', 'EmailClicks', '%s')" % NGINX_LAT_URL)
    psql("SELECT 1 FROM webhooks.create_webhook('receiver-slow', 'EmailSends', '%s/ok')" % RECEIVER_URL)
    # the wizard's connection test would wait 3 s: point it at /slow afterwards
    psql("SELECT webhooks.deactivate_webhook('receiver-slow')")
    psql("SELECT webhooks.update_webhook('receiver-slow', target_url => '%s/slow/%d')" % (RECEIVER_URL, SLOW_MS))
    psql("UPDATE webhooks.webhooks SET is_active = true WHERE name = 'receiver-slow'")
    # fairness: two webhooks whose endpoint takes FAIR_SLOW_MS per request,
    # inactive until their section runs
    for name, et in FAIR_SLOW:
        psql("SELECT 1 FROM webhooks.create_webhook('%s', '%s', '%s/ok')" % (name, et, RECEIVER_URL))
        psql("SELECT webhooks.deactivate_webhook('%s')" % name)
        psql("SELECT webhooks.update_webhook('%s', target_url => '%s/slow/%d')" % (name, RECEIVER_URL, FAIR_SLOW_MS))


INSERT_SQL = ("INSERT INTO {table} (message_id, subscriber_id, subscriber_email) "
              "SELECT g, 1000000 + g, 'subscriber' || g || '@example.com' "
              "FROM generate_series(1, {n}) g")


# ---------------------------------------------------------------------------
# 1. throughput
# ---------------------------------------------------------------------------

def nginx_connections():
    out = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%s )" % NGINX_PORT],
                         capture_output=True, text=True).stdout
    return len(out.strip().splitlines())


def xact_commits():
    """Transactions committed in the benchmark database so far (pg_stat_database:
    the worker's claim, record and batch-split transactions, plus a few of ours)."""
    return int(psql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


def throughput_run(conc):
    truncate_queue("app.bench_opens")
    psql("VACUUM ANALYZE webhooks.deliveries")
    psql("CHECKPOINT")
    wpid = fresh_worker()
    npid = nginx_worker_pid()
    logpos = log_size()
    xact0 = xact_commits()
    mem0 = status_kb(wpid)
    cpu0, ncpu0, sys0, own0 = cpu_s(wpid), cpu_s(npid), system_busy_s(), own_cpu_s()
    sampler = Sampler(wpid)
    sampler.start()
    perf = None
    if ENV.get("PERF_DIR"):
        # development aid: profile the worker during the drain (perf record -g)
        if ENV.get("PERF_STAT"):
            # syscall counts instead of a profile
            perf = subprocess.Popen(["perf", "stat", "-e", ENV["PERF_STAT"], "-p", str(wpid), "-o",
                                     os.path.join(ENV["PERF_DIR"], "stat-%d.txt" % wpid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            perf = subprocess.Popen(["perf", "record", "--call-graph", "dwarf,16384", "-F", "397", "-q", "-p",
                                     str(wpid), "-o", os.path.join(ENV["PERF_DIR"], "perf-%d.data" % wpid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_ins = time.time()
    # one autocommit INSERT; the statement trigger enqueues all rows; the
    # client reads its clock right after the commit returns
    out = pgclient("commits", "1", INSERT_SQL.format(table="app.bench_opens", n=EVENTS))
    commit_ts = float(out.split()[1])
    deadline = time.time() + DRAIN_TIMEOUT
    done = None
    conns = 0
    last_done, last_progress = None, time.time()
    stalled = None
    while time.time() < deadline:
        if not os.path.exists("/proc/%d" % wpid):
            break
        done = psql("SELECT count(*) FROM webhooks.all_deliveries WHERE state IN ('delivered', 'dead')", check=False)
        if done is None:
            break
        conns = max(conns, nginx_connections())
        if int(done) >= EVENTS:
            break
        if done != last_done:
            last_done, last_progress = done, time.time()
        elif time.time() - last_progress > 10:
            # no progress for 10 s: is the worker idle with rows leased to it?
            st = psql("SELECT (SELECT query FROM pg_stat_activity WHERE pid = %d), "
                      "(SELECT count(*) FROM webhooks.all_deliveries WHERE state = 'pending' AND lease_until > now())"
                      % wpid).split("|")
            if st[0] == "idle" and int(st[1]) > 0:
                stalled = ("%s deliveries are leased but were never sent, and the worker is idle "
                           "(they wait for their lease to end)" % st[1])
                break
        time.sleep(0.25)
    sampler.stop.set()
    sampler.join()
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    crashes = crash_lines(logpos)
    if crashes or not server_up():
        raise Crash("; ".join(crashes) or "server down")
    if stalled:
        done = int(psql("SELECT count(*) FROM webhooks.all_deliveries WHERE state = 'delivered'"))
        raise Stall("%s; %d delivered in the first %.1f s" % (stalled, done, last_progress - commit_ts))
    if int(done) < EVENTS:
        raise RuntimeError("only %s of %d events delivered or dead after %d s" % (done, EVENTS, DRAIN_TIMEOUT))
    cpu1, ncpu1, sys1, own1 = cpu_s(wpid), cpu_s(npid), system_busy_s(), own_cpu_s()
    mem1 = status_kb(wpid)
    row = psql("SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state = 'dead'), "
               "extract(epoch FROM min(last_attempt_at)), extract(epoch FROM max(finished_at)), "
               "(SELECT count(*) FROM webhooks.webhook_logs), max(attempts) FROM webhooks.all_deliveries").split("|")
    delivered, dead, first_ts, last_ts, nlogs = int(row[0]), int(row[1]), float(row[2]), float(row[3]), int(row[4])
    time.sleep(1.2)             # the worker's last statistics reach pg_stat_database (at most 1 s late)
    xacts = xact_commits() - xact0
    kinds = psql("SELECT string_agg(format('%s x %s', n, e), '; ') FROM (SELECT coalesce(status::text, error_content) e, "
                 "count(*) n FROM webhooks.webhook_logs GROUP BY 1 ORDER BY 2 DESC) s")
    drain_s = last_ts - commit_ts
    rss = [s[1] for s in sampler.samples] + [mem0["VmRSS"], mem1["VmRSS"]]
    anon = [s[2] for s in sampler.samples] + [mem0["RssAnon"], mem1["RssAnon"]]
    r = {
        "concurrency": conc,
        "delivered": delivered, "dead": dead, "failed_attempts": nlogs, "max_attempts": int(row[5]),
        "failure_kinds": kinds,
        "transactions": xacts,
        "insert_s": round(commit_ts - t_ins, 3),
        "first_claim_after_commit_ms": round((first_ts - commit_ts) * 1000, 1),
        "drain_s": round(drain_s, 3),
        "deliveries_per_s": round(delivered / drain_s, 1),
        "worker_cpu_s": round(cpu1 - cpu0, 2),
        "nginx_cpu_s": round(ncpu1 - ncpu0, 2),
        "system_busy_s": round(sys1 - sys0, 2),
        "foreign_cpu_s": round(max(0.0, (sys1 - sys0) - (own1 - own0)), 2),
        "wall_s": round(time.time() - t_ins, 2),
        "worker_vmhwm_kb": mem1["VmHWM"],
        "worker_rss_kb_start": mem0["VmRSS"], "worker_rss_kb_max": max(rss), "worker_rss_kb_end": mem1["VmRSS"],
        "worker_anon_kb_start": mem0["RssAnon"], "worker_anon_kb_max": max(anon),
        "worker_anon_kb_end": mem1["RssAnon"],
        "worker_shmem_kb_end": mem1["RssShmem"],
        # after the first quarter of the drain (warm-up: connection, caches,
        # plans), a leak-free worker should not grow any more
        "worker_anon_kb_q1": sampler.samples[len(sampler.samples) // 4][2] if sampler.samples else mem0["RssAnon"],
        "rss_samples": len(sampler.samples),
        "max_connections_to_nginx": conns,
    }
    if delivered != EVENTS or dead != 0:
        log("  WARNING: %d delivered, %d dead (expected %d, 0)" % (delivered, dead, EVENTS))
    return r, sampler.samples


# ---------------------------------------------------------------------------
# 2. wrk
# ---------------------------------------------------------------------------

def wrk_run(conc):
    out = subprocess.run(["wrk", "-t1", "-c%d" % conc, "-d%ds" % WRK_SECONDS, "-s", LUA, NGINX_URL],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        log("  WARNING: wrk saw %s non-2xx answers" % errors.group(1))
    return float(m.group(1))


# ---------------------------------------------------------------------------
# 3. latency
# ---------------------------------------------------------------------------

def sink_arrivals(lo, hi):
    """messageId -> arrival time at lat_sink.py, for EmailDeliveries deliveries with lo <= messageId < hi."""
    out = {}
    with open(RECEIVER_LOG) as f:
        for line in f:
            if not line.endswith("\n"):
                break           # still being written
            r = json.loads(line)
            if (r["id"] or "").startswith("msg_test_"):
                continue
            try:
                b = json.loads(r["body"])
            except ValueError:
                continue
            if b.get("eventType") == "EmailDeliveries" and lo <= b.get("messageId", -1) < hi:
                out.setdefault(b["messageId"], (r["t"], r["conn"], r["n"]))
    return out


def nginx_arrivals(lo, hi):
    """messageId -> the time nginx logged the request ($msec), for EmailClicks deliveries."""
    ids = {}
    for line in psql("SELECT msg_id, (body::json->>'messageId')::bigint FROM webhooks.all_deliveries "
                     "WHERE event_type = 'EmailClicks' AND (body::json->>'messageId')::bigint >= %d "
                     "AND (body::json->>'messageId')::bigint < %d" % (lo, hi)).splitlines():
        d, m = line.split("|")
        ids[d] = int(m)
    out = {}
    with open(NGINX_LAT_LOG) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1] in ids:
                out.setdefault(ids[parts[1]], (float(parts[0]), None, None))
    return out


# the fast webhook: HTTP/1.1 to lat_sink.py, or HTTP/2 to nginx
TARGETS = {
    "h1": ("EmailDeliveries", sink_arrivals),
    "h2": ("EmailClicks", nginx_arrivals),
}
EMIT = ("SELECT webhooks.emit('{et}', jsonb_build_object('messageId', {base} + %d, "
        "'subscriberId', 42, 'subscriberEmail', 'latency@example.com'))")
EMIT_SLOW = ("SELECT webhooks.emit('EmailSends', jsonb_build_object('messageId', {base} + %d, "
             "'subscriberId', 43, 'subscriberEmail', 'slow@example.com'))")


def slow_in_flight():
    return int(psql("SELECT count(*) FROM webhooks.pending_deliveries WHERE webhook_name = 'receiver-slow' AND in_flight"))


def wait_arrivals(target, lo, hi, n, timeout=60):
    deadline = time.time() + timeout
    got = {}
    while time.time() < deadline:
        got = TARGETS[target][1](lo, hi)
        if len(got) >= n:
            return got
        time.sleep(0.2)
    raise RuntimeError("only %d of %d %s events arrived" % (len(got), n, target))


LAT_SEQ = [0]


def latency_run(target, with_slow):
    LAT_SEQ[0] += 1
    base = LAT_SEQ[0] * 100000 + 10000000
    et = TARGETS[target][0]
    stream = None
    inflight = {}
    if with_slow:
        # a steady stream to the slow webhook: about 20 requests in flight
        stream = subprocess.Popen([PGCLIENT, "stream", CONNINFO, str(SLOW_INTERVAL_MS),
                                   EMIT_SLOW.format(base=base + 50000)], stdout=subprocess.PIPE, text=True)
        time.sleep(SLOW_MS / 1000.0 + 0.7)
        inflight["before"] = slow_in_flight()
    # warm-up: one event, not counted (it may open a fresh TLS connection)
    pgclient("commits", "1", EMIT.format(et=et, base=base))
    wait_arrivals(target, base, base + 2, 1)
    out = pgclient("commits", str(LAT_EVENTS), EMIT.format(et=et, base=base + 1000))
    commits = {}
    for line in out.strip().splitlines():
        i, t = line.split()
        commits[base + 1000 + int(i)] = float(t)
    if with_slow:
        inflight["after"] = slow_in_flight()
    got = wait_arrivals(target, base + 1001, base + 1001 + LAT_EVENTS, LAT_EVENTS)
    if stream is not None:
        stream.terminate()
        inflight["slow_events_sent"] = int(stream.communicate()[0].strip() or 0)
    # where the time goes, from the queue's own timestamps: last_attempt_at is
    # the start of the worker's claim transaction, finished_at the time its
    # record transaction started
    seg = {"commit_to_claim": [], "claim_to_arrival": [], "arrival_to_recorded": []}
    rows = psql("SELECT (body::json->>'messageId')::bigint, extract(epoch FROM last_attempt_at), "
                "extract(epoch FROM finished_at) FROM webhooks.all_deliveries "
                "WHERE event_type = '%s' AND state = 'delivered' AND attempts = 1 "
                "AND (body::json->>'messageId')::bigint BETWEEN %d AND %d"
                % (et, base + 1001, base + 1000 + LAT_EVENTS)).splitlines()
    for line in rows:
        m, claim, fin = line.split("|")
        m = int(m)
        seg["commit_to_claim"].append((float(claim) - commits[m]) * 1000)
        seg["claim_to_arrival"].append((got[m][0] - float(claim)) * 1000)
        seg["arrival_to_recorded"].append((float(fin) - got[m][0]) * 1000)
    if stream is not None:
        # let the slow webhook's queue drain before the next run
        deadline = time.time() + 60
        while time.time() < deadline and undelivered() > 0:
            time.sleep(0.25)
    lat = [(got[k][0] - commits[k]) * 1000 for k in sorted(commits)]
    new_conns = sum(1 for k in commits if got[k][2] == 1) if target == "h1" else None
    return {
        "target": target,
        "with_slow_endpoint": with_slow,
        "events": len(lat),
        "p50_ms": round(pct(lat, 50), 2), "p90_ms": round(pct(lat, 90), 2),
        "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2), "min_ms": round(min(lat), 2),
        "mean_ms": round(statistics.mean(lat), 2),
        "commit_span_s": round(max(commits.values()) - min(commits.values()), 3),
        "slow_in_flight": inflight,
        "new_connections": new_conns,
        "median_segments_ms": {k: round(med(v), 2) for k, v in seg.items()},
    }


# ---------------------------------------------------------------------------
# 4. enqueue cost
# ---------------------------------------------------------------------------

def pgbench_tps(table):
    """Single-row INSERTs, one per transaction, PGBENCH_CLIENTS clients for
    PGBENCH_SECONDS: transactions per second."""
    script = os.path.join(TMP, "single_%s.sql" % table)
    with open(script, "w") as f:
        f.write("\\set g random(1, 1000000000)\n"
                "INSERT INTO app.enq_%s (message_id, subscriber_id, subscriber_email) "
                "VALUES (:g, 1000000 + :g, 'subscriber' || :g || '@example.com');\n" % table)
    r = subprocess.run([PGBENCH, "-n", "-f", script, "-c", str(PGBENCH_CLIENTS), "-j", str(min(PGBENCH_CLIENTS, 2)),
                        "-T", str(PGBENCH_SECONDS), "-h", SOCK, "-p", "5432", "-U", "postgres", DB],
                       capture_output=True, text=True)
    m = re.search(r"^tps = ([0-9.]+)", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError("pgbench failed: %s\n%s" % (r.stdout, r.stderr))
    return float(m.group(1))


def enqueue_run(run=0):
    """The 100,000-row INSERT into the plain table, under the statement trigger and under
    the row trigger, ENQ_REPS times in turn (medians); then single-row INSERTs with
    pgbench, plain and row trigger, in the order of the run's parity (plain first in odd
    runs) so that drift during the run does not always favour the same side."""
    reps = {table: [] for table in ("plain", "stmt", "row")}
    for _ in range(ENQ_REPS):
        for table in ("plain", "stmt", "row"):
            truncate_queue("app.enq_" + table)
            psql("CHECKPOINT")
            reps[table].append(float(pgclient("time", INSERT_SQL.format(table="app.enq_" + table, n=EVENTS))))
            if table != "plain":
                queued = queued_events()
                if queued != EVENTS:
                    log("  WARNING: the %s trigger queued %d deliveries, not %d" % (table, queued, EVENTS))
    times = {table: med(v) for table, v in reps.items()}
    # single-row INSERTs per transaction: plain table and row trigger
    tps = {}
    for table in (("plain", "row") if run % 2 == 0 else ("row", "plain")):
        truncate_queue("app.enq_" + table)
        psql("CHECKPOINT")
        tps[table] = pgbench_tps(table)
        if table == "row":
            queued, rows = queued_events(), int(psql("SELECT count(*) FROM app.enq_row"))
            if queued != rows:
                log("  WARNING: the row trigger queued %d deliveries for %d single-row INSERTs" % (queued, rows))
    return {
        "plain_ms": round(times["plain"], 1), "stmt_ms": round(times["stmt"], 1), "row_ms": round(times["row"], 1),
        "stmt_ratio": round(times["stmt"] / times["plain"], 2),
        "row_ratio": round(times["row"] / times["plain"], 2),
        "single_plain_tps": round(tps["plain"], 1), "single_row_tps": round(tps["row"], 1),
        # time per transaction, row trigger / plain
        "single_ratio": round(tps["plain"] / tps["row"], 3),
        "reps_ms": {table: [round(x, 1) for x in v] for table, v in reps.items()},
    }


# ---------------------------------------------------------------------------
# 5. fairness
# ---------------------------------------------------------------------------

FAIR_SLOW = (("fair-slow-1", "EmailBounces"), ("fair-slow-2", "EmailComplaints"))
FAIR_SEQ = [0]


def trickle_start(base):
    """Single-event transactions to the fast webhook (receiver-fast, HTTP/1.1
    to lat_sink.py), one every FAIR_INTERVAL_MS, each commit time-stamped."""
    return subprocess.Popen([PGCLIENT, "trickle", CONNINFO, str(FAIR_INTERVAL_MS),
                             EMIT.format(et=TARGETS[FAIR_TARGET][0], base=base)], stdout=subprocess.PIPE, text=True)


def trickle_stop(proc, base):
    proc.terminate()
    out = proc.communicate()[0]
    commits = {}
    for line in out.strip().splitlines():
        i, t = line.split()
        commits[base + int(i)] = float(t)
    return commits


def trickle_latency(commits, since, until, timeout):
    """Commit -> arrival (ms) of the trickle events committed in [since, until].
    Events that have not arrived after timeout count with the time they waited."""
    keep = {k: t for k, t in commits.items() if since <= t <= until}
    lo, hi = min(keep), max(keep) + 1
    deadline = time.time() + timeout
    got = {}
    while True:
        got = TARGETS[FAIR_TARGET][1](lo, hi)
        if all(k in got for k in keep) or time.time() > deadline:
            break
        time.sleep(0.5)
    now = time.time()
    lat = [((got[k][0] if k in got else now) - t) * 1000 for k, t in keep.items()]
    missing = sum(1 for k in keep if k not in got)
    return lat, missing


def delivered_between(names, t0, t1):
    return int(psql("SELECT count(*) FROM webhooks.all_deliveries d JOIN webhooks.webhooks w ON w.id = d.webhook_id "
                    "WHERE w.name IN (%s) AND d.state = 'delivered' AND d.finished_at >= to_timestamp(%f) "
                    "AND d.finished_at < to_timestamp(%f)" % (", ".join("'%s'" % n for n in names), t0, t1)))


def fair_slow_run():
    """Two saturated slow webhooks; the third webhook's trickle beside them."""
    FAIR_SEQ[0] += 1
    base = 30000000 + FAIR_SEQ[0] * 100000
    truncate_queue()
    names = [n for n, _ in FAIR_SLOW]
    for name, _ in FAIR_SLOW:
        psql("UPDATE webhooks.webhooks SET is_active = true WHERE name = '%s'" % name)
    # both backlogs in one transaction
    psql("BEGIN; " + " ".join(
        "SELECT count(webhooks.emit('%s', jsonb_build_object('messageId', g, 'subscriberId', 7, "
        "'subscriberEmail', 'slow@example.com'))) FROM generate_series(1, %d) g;" % (et, FAIR_SLOW_EVENTS)
        for _, et in FAIR_SLOW) + " COMMIT")
    time.sleep(FAIR_SLOW_MS / 1000.0 * 2 + 1)     # both saturated, the first round over
    in_flight = int(psql("SELECT count(*) FROM webhooks.pending_deliveries WHERE in_flight"))
    t0 = time.time()
    time.sleep(FAIR_WINDOW_S)
    t1 = time.time()
    proc = trickle_start(base)
    time.sleep(FAIR_WINDOW_S)
    t2 = time.time()
    commits = trickle_stop(proc, base)
    left = int(psql("SELECT count(*) FROM webhooks.pending_deliveries WHERE webhook_name IN (%s)"
                    % ", ".join("'%s'" % n for n in names)))
    lat, missing = trickle_latency(commits, t1, t2, 120)
    alone = delivered_between(names, t0, t1) / (t1 - t0)
    beside = delivered_between(names, t1, t2) / (t2 - t1)
    # the rest of the backlogs is dropped
    for name, _ in FAIR_SLOW:
        psql("UPDATE webhooks.webhooks SET is_active = false WHERE name = '%s'" % name)
    deadline = time.time() + FAIR_SLOW_MS / 1000.0 * 3 + 30
    while time.time() < deadline and int(psql("SELECT count(*) FROM webhooks.pending_deliveries WHERE in_flight")):
        time.sleep(0.25)
    truncate_queue()
    return {
        "events": len(lat), "not_arrived": missing,
        "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2),
        "slow_per_s_alone": round(alone, 1), "slow_per_s_with_trickle": round(beside, 1),
        "slow_in_flight": in_flight, "slow_left": left,
    }


def fair_drain_run(trickle):
    """A cold drain of EVENTS to nginx (fresh worker), with or without the trickle."""
    FAIR_SEQ[0] += 1
    base = 30000000 + FAIR_SEQ[0] * 100000
    truncate_queue("app.bench_opens")
    psql("VACUUM ANALYZE webhooks.deliveries")
    psql("CHECKPOINT")
    fresh_worker()
    proc = None
    if trickle:
        proc = trickle_start(base)
        time.sleep(1)           # the fast webhook's connection is warm
    out = pgclient("commits", "1", INSERT_SQL.format(table="app.bench_opens", n=EVENTS))
    commit_ts = float(out.split()[1])
    deadline = time.time() + DRAIN_TIMEOUT
    while time.time() < deadline:
        n = int(psql("SELECT count(*) FROM webhooks.all_deliveries WHERE event_type = 'EmailOpens' "
                     "AND state IN ('delivered', 'dead')"))
        if n >= EVENTS:
            break
        time.sleep(0.1)
    end = float(psql("SELECT extract(epoch FROM max(finished_at)) FROM webhooks.all_deliveries "
                     "WHERE event_type = 'EmailOpens'"))
    r = {"drain_s": round(end - commit_ts, 3), "deliveries_per_s": round(EVENTS / (end - commit_ts), 1)}
    if proc is not None:
        commits = trickle_stop(proc, base)
        lat, missing = trickle_latency(commits, commit_ts, end, 60)
        r.update({"events": len(lat), "not_arrived": missing, "p50_ms": round(pct(lat, 50), 2),
                  "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2)})
        # where the trickle's time went: enqueue -> claim (last attempt) -> recorded
        q = psql("SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY w)::numeric, 1), "
                 "       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY w)::numeric, 1), "
                 "       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 1), "
                 "       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 1) "
                 "  FROM (SELECT extract(epoch FROM last_attempt_at - created_at) * 1000 AS w, "
                 "               extract(epoch FROM finished_at - last_attempt_at) * 1000 AS s "
                 "          FROM webhooks.all_deliveries WHERE event_type = '%s' "
                 "           AND state = 'delivered') x" % TARGETS[FAIR_TARGET][0]).split("|")
        r.update({"enqueue_to_claim_p50_ms": q[0], "enqueue_to_claim_p99_ms": q[1],
                  "claim_to_recorded_p50_ms": q[2], "claim_to_recorded_p99_ms": q[3]})
        log("    trickle: enqueue -> claim p50 %s ms p99 %s ms; claim -> recorded p50 %s ms p99 %s ms" % tuple(q))
        if FAIR_TARGET == "h1":
            # the slowest 1 %: were their requests the first on a new connection?
            got = TARGETS["h1"][1](min(commits), max(commits) + 1)
            slow = sorted((k for k in commits if k in got and commit_ts <= commits[k] <= end),
                          key=lambda k: got[k][0] - commits[k])[-max(1, len(lat) // 100):]
            fresh = sum(1 for k in slow if got[k][2] == 1)
            r.update({"slowest_1pct_on_new_connection": fresh, "slowest_1pct": len(slow)})
            log("    trickle: of the slowest 1 %% (%d), %d were the first request on a new connection"
                % (len(slow), fresh))
    truncate_queue("app.bench_opens")
    return r


def fairness_section(res):
    log("\n== 5. fairness: a third webhook's single events (one every %d ms, HTTP/1.1 to lat_sink.py) "
        "beside busy webhooks, defaults (128/64) ==" % FAIR_INTERVAL_MS)
    log("  a: two webhooks at %d ms per request (lat_sink.py /slow), %d queued events each; %.0f s without,"
        " then %.0f s with the trickle" % (FAIR_SLOW_MS, FAIR_SLOW_EVENTS, FAIR_WINDOW_S, FAIR_WINDOW_S))
    log("  b: a cold drain of %d events to nginx (fresh worker), without and with the trickle" % EVENTS)
    res["fairness"] = {"slow": [], "drain_alone": [], "drain_trickle": []}
    if "fairness" not in SECTIONS:
        return
    mark = cpu_mark()
    for i in range(RUNS):
        r = fair_slow_run()
        res["fairness"]["slow"].append(r)
        log("  a run %d: trickle p50 %8.2f ms  p99 %8.2f  max %8.2f  (%d events, %d not arrived)  slow webhooks:"
            " %.1f/s without, %.1f/s with the trickle, %d in flight, %d left"
            % (i + 1, r["p50_ms"], r["p99_ms"], r["max_ms"], r["events"], r["not_arrived"],
               r["slow_per_s_alone"], r["slow_per_s_with_trickle"], r["slow_in_flight"], r["slow_left"]))
    for i in range(RUNS):
        a = fair_drain_run(False)
        t = fair_drain_run(True)
        res["fairness"]["drain_alone"].append(a)
        res["fairness"]["drain_trickle"].append(t)
        log("  b run %d: drain alone %.2f s (%.0f/s), with the trickle %.2f s (%.0f/s);"
            " trickle p50 %8.2f ms  p99 %8.2f  max %8.2f  (%d events, %d not arrived)"
            % (i + 1, a["drain_s"], a["deliveries_per_s"], t["drain_s"], t["deliveries_per_s"],
               t["p50_ms"], t["p99_ms"], t["max_ms"], t["events"], t["not_arrived"]))
    foreign_report(res, "fairness", mark)


# ---------------------------------------------------------------------------

def lat_key(target, slow):
    return "%s_%s" % (target, "slow" if slow else "alone")


def cfg_name(c):
    return "%d/%d" % c


def main():
    t_start = time.time()
    setup_schema()
    res = {"runs": RUNS, "events": EVENTS, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "throughput": {}, "crashes": {}, "stalls": {}, "wrk": {}, "latency": {lat_key(t, s): [] for t in ("h1", "h2") for s in (False, True)},
           "enqueue": []}

    log("\n== 1. throughput: %d events in one transaction -> nginx (max_concurrency/max_concurrency_per_webhook) =="
        % EVENTS)
    mark = cpu_mark()
    for cfg in CONFIGS:
        name = cfg_name(cfg)
        res["throughput"][name] = []
        for i in range(RUNS if "throughput" in SECTIONS else 0):
            set_gucs(max_concurrency=cfg[0], max_concurrency_per_webhook=cfg[1])
            try:
                r, samples = throughput_run(cfg[0])
            except Crash as e:
                log("  %-8s run %d: THE WORKER CRASHED: %s" % (name, i + 1, e))
                res["crashes"].setdefault(name, []).append(str(e))
                recover_after_crash()
                continue
            except Stall as e:
                log("  %-8s run %d: DELIVERY STALLED: %s" % (name, i + 1, e))
                res["stalls"].setdefault(name, []).append(str(e))
                continue
            res["throughput"][name].append(r)
            log("  %-8s run %d: %6.0f deliveries/s  drain %.2f s  (insert %.2f s, first claim %+.0f ms after commit)"
                "  CPU s: worker %.2f, nginx %.2f, whole machine %.2f in %.2f s"
                % (name, i + 1, r["deliveries_per_s"], r["drain_s"], r["insert_s"], r["first_claim_after_commit_ms"],
                   r["worker_cpu_s"], r["nginx_cpu_s"], r["system_busy_s"], r["wall_s"]))
            if r["foreign_cpu_s"] > 0.1 * r["wall_s"]:
                log("      WARNING: processes outside the benchmark used %.1f CPU s during this run:"
                    " the machine was not quiet, this figure is disturbed" % r["foreign_cpu_s"])
            log("      worker kB: VmRSS %d -> max %d -> %d, RssAnon %d -> max %d -> %d, VmHWM %d;"
                " %d connection(s) to nginx; %d failed attempts (retried)%s"
                % (r["worker_rss_kb_start"], r["worker_rss_kb_max"], r["worker_rss_kb_end"],
                   r["worker_anon_kb_start"], r["worker_anon_kb_max"], r["worker_anon_kb_end"],
                   r["worker_vmhwm_kb"], r["max_connections_to_nginx"], r["failed_attempts"],
                   (": " + r["failure_kinds"]) if r["failure_kinds"] else ""))
            res.setdefault("rss_series", {})["%s_r%d" % (name, i + 1)] = [
                (round(s[0], 1), s[1], s[2]) for s in samples[::10]]
    if server_up():
        reset_gucs("max_concurrency", "max_concurrency_per_webhook")
    foreign_report(res, "throughput", mark)

    log("\n== 2. the sink's ceiling: wrk -t1 -cN -d%ds, POST of a 153-byte JSON body (HTTP/1.1) ==" % WRK_SECONDS)
    mark = cpu_mark()
    for conc in WRK_CONCURRENCY:
        res["wrk"][conc] = []
        for i in range(RUNS if "wrk" in SECTIONS else 0):
            rps = wrk_run(conc)
            res["wrk"][conc].append(rps)
            log("  -c%d run %d: %.0f requests/s" % (conc, i + 1, rps))
    foreign_report(res, "wrk", mark)

    log("\n== 3. latency: commit -> arrival, %d events back to back, defaults (128/64) ==" % LAT_EVENTS)
    log("  h1: HTTP/1.1 to lat_sink.py (arrival stamped when the body is read, microseconds)")
    log("  h2: HTTP/2 to nginx (arrival = nginx's $msec when it logs the request: milliseconds, cached clock)")
    if "latency" in SECTIONS:
        fresh_worker()
    mark = cpu_mark()
    for i in range(RUNS if "latency" in SECTIONS else 0):
        for target in ("h1", "h2"):
            for slow in (False, True):
                r = latency_run(target, slow)
                res["latency"][lat_key(target, slow)].append(r)
                s = r["median_segments_ms"]
                log("  %s %-24s run %d: p50 %6.2f ms  p90 %6.2f  p99 %6.2f  max %6.2f  (%d commits in %.2f s)%s%s"
                    % (target, "with a 3 s endpoint busy" if slow else "alone", i + 1, r["p50_ms"], r["p90_ms"],
                       r["p99_ms"], r["max_ms"], r["events"], r["commit_span_s"],
                       ("  slow in flight before/after: %s/%s" % (r["slow_in_flight"].get("before"),
                                                                 r["slow_in_flight"].get("after"))) if slow else "",
                       ("  new connections: %d" % r["new_connections"]) if r["new_connections"] is not None else ""))
                log("      median segments: commit -> claim xact start %.2f ms, claim -> arrival %.2f ms,"
                    " arrival -> recorded %.2f ms" % (s["commit_to_claim"], s["claim_to_arrival"],
                                                      s["arrival_to_recorded"]))

    foreign_report(res, "latency", mark)

    log("\n== 4. enqueue cost: INSERT of %d rows, webhooks.enabled = off ==" % EVENTS)
    set_gucs(enabled="off")
    mark = cpu_mark()
    for i in range(RUNS if "enqueue" in SECTIONS else 0):
        r = enqueue_run(i)
        res["enqueue"].append(r)
        log("  run %d: plain %.0f ms, statement trigger %.0f ms (x%.2f), row trigger %.0f ms (x%.2f)"
            " (medians of %d: %s);" % (i + 1, r["plain_ms"], r["stmt_ms"], r["stmt_ratio"], r["row_ms"],
                                       r["row_ratio"], ENQ_REPS, r["reps_ms"]))
        log("    "
            "single-row INSERTs (pgbench -c%d -T%d): plain %.0f tps, row trigger %.0f tps (x%.3f)"
            % (PGBENCH_CLIENTS, PGBENCH_SECONDS, r["single_plain_tps"], r["single_row_tps"], r["single_ratio"]))
    foreign_report(res, "enqueue", mark)
    reset_gucs("enabled")
    if "enqueue" in SECTIONS:
        truncate_queue()

    fairness_section(res)

    summary(res)
    log("\nbenchmark took %.0f s" % (time.time() - t_start))
    if ENV.get("RESULTS_JSON"):
        with open(ENV["RESULTS_JSON"], "w") as f:
            json.dump(res, f, indent=1)


def summary(res):
    log("\n== summary: medians of %d runs (%s) ==" % (RUNS, res["date"]))
    rows = []

    def row(name, value, target="", ok=None):
        rows.append((name, value, target, "" if ok is None else ("ok" if ok else "MISSED")))

    for cfg in CONFIGS:
        name = cfg_name(cfg)
        rs = res["throughput"][name]
        ncrash = len(res["crashes"].get(name, []))
        nstall = len(res["stalls"].get(name, []))
        label = "throughput %s%s" % (name, " (defaults)" if cfg == (128, 64) else "")
        trouble = ", ".join(x for x in (("worker CRASHED in %d of %d runs" % (ncrash, RUNS)) if ncrash else "",
                                        ("delivery STALLED in %d of %d runs" % (nstall, RUNS)) if nstall else "")
                            if x)
        if not rs:
            row(label, trouble, ">= %d /s" % TARGET_TPUT, False)
            continue
        tput = med([r["deliveries_per_s"] for r in rs])
        row(label, "%.0f deliveries/s%s" % (tput, (" (%s)" % trouble) if trouble else ""),
            ">= %d /s" % TARGET_TPUT, tput >= TARGET_TPUT and not trouble)
        row("  drain time of %d events" % EVENTS, "%.2f s" % med([r["drain_s"] for r in rs]))
        wcpu = med([r["worker_cpu_s"] for r in rs])
        row("  worker CPU", "%.2f s (%.0f us/delivery)" % (wcpu, wcpu / EVENTS * 1e6))
        row("  nginx worker CPU", "%.2f s" % med([r["nginx_cpu_s"] for r in rs]))
        row("  transactions committed (approx.)", "%.0f (%.0f deliveries each)" % (
            med([r["transactions"] for r in rs]), EVENTS / max(1, med([r["transactions"] for r in rs]))))
        ceiling = med(res["wrk"].get(cfg[0], [])) if res["wrk"].get(cfg[0]) else None
        if ceiling:
            row("  sink ceiling, wrk -c%d" % cfg[0], "%.0f requests/s" % ceiling)
            row("  our fraction of the ceiling", "%.0f %%" % (100 * tput / ceiling))
        row("  worker VmHWM (peak RSS)", "%.0f MB" % (med([r["worker_vmhwm_kb"] for r in rs]) / 1024))
        row("  worker VmRSS start -> end", "%.0f -> %.0f MB" % (
            med([r["worker_rss_kb_start"] for r in rs]) / 1024, med([r["worker_rss_kb_end"] for r in rs]) / 1024))
        growth = med([r["worker_anon_kb_end"] - r["worker_anon_kb_start"] for r in rs])
        late = med([r["worker_anon_kb_end"] - r["worker_anon_kb_q1"] for r in rs])
        row("  worker private memory (RssAnon), whole drain", "%+.1f MB (%.2f kB/delivery)" % (growth / 1024,
                                                                                            growth / EVENTS))
        row("  RssAnon growth after the first quarter", "%+.1f MB" % (late / 1024), "flat (< 2 MB)", late < 2048)
    for kind, label in (("h1_alone", "latency HTTP/1.1 alone"), ("h1_slow", "latency HTTP/1.1, 3 s endpoint busy"),
                        ("h2_alone", "latency HTTP/2 alone"), ("h2_slow", "latency HTTP/2, 3 s endpoint busy")):
        rs = res["latency"][kind]
        p50 = med([r["p50_ms"] for r in rs])
        p99 = med([r["p99_ms"] for r in rs])
        row(label + " p50", "%.2f ms" % p50, "< %g ms" % TARGET_P50, p50 < TARGET_P50)
        row(label + " p99", "%.2f ms" % p99, "< %g ms" % TARGET_P99, p99 < TARGET_P99)
    fr = res.get("fairness", {})
    if fr.get("slow"):
        rs = fr["slow"]
        p99 = med([r["p99_ms"] for r in rs])
        row("fairness a: third webhook p50, beside two %d ms webhooks" % FAIR_SLOW_MS,
            "%.2f ms" % med([r["p50_ms"] for r in rs]))
        row("fairness a: third webhook p99", "%.2f ms" % p99, "< %g ms" % TARGET_P99, p99 < TARGET_P99)
        a, b = med([r["slow_per_s_alone"] for r in rs]), med([r["slow_per_s_with_trickle"] for r in rs])
        row("fairness a: slow webhooks' deliveries/s without / with", "%.1f / %.1f (%+.0f %%)" % (
            a, b, 100 * (b - a) / a), ">= -30 %", b >= 0.7 * a)
    if fr.get("drain_trickle"):
        rs = fr["drain_trickle"]
        p99 = med([r["p99_ms"] for r in rs])
        row("fairness b: third webhook p50, beside a cold drain", "%.2f ms" % med([r["p50_ms"] for r in rs]))
        row("fairness b: third webhook p99", "%.2f ms" % p99, "< %g ms" % TARGET_P99, p99 < TARGET_P99)
        a, b = med([r["drain_s"] for r in fr["drain_alone"]]), med([r["drain_s"] for r in rs])
        row("fairness b: drain time without / with", "%.2f / %.2f s (%+.0f %%)" % (a, b, 100 * (b - a) / a),
            "<= +30 %", b <= 1.3 * a)
    rs = res["enqueue"]
    sr = med([r["stmt_ratio"] for r in rs])
    rr = med([r["row_ratio"] for r in rs])
    row("enqueue, statement trigger", "x%.2f (%.0f ms vs %.0f ms)" % (sr, med([r["stmt_ms"] for r in rs]),
                                                                    med([r["plain_ms"] for r in rs])),
        "<= x%.1f" % TARGET_STMT_RATIO, sr <= TARGET_STMT_RATIO)
    row("enqueue, row trigger", "x%.2f (%.0f ms)" % (rr, med([r["row_ms"] for r in rs])),
        "<= x%.1f" % TARGET_RATIO, rr <= TARGET_RATIO)
    qr = med([r["single_ratio"] for r in rs])
    row("enqueue, single-row INSERT, row trigger", "x%.3f (%.0f vs %.0f tps, pgbench -c%d)" % (
        qr, med([r["single_row_tps"] for r in rs]), med([r["single_plain_tps"] for r in rs]), PGBENCH_CLIENTS),
        "<= x%.2f" % TARGET_SINGLE_RATIO, qr <= TARGET_SINGLE_RATIO)

    w = [max(len(r[i]) for r in rows + [("figure", "median", "target")]) for i in range(3)]
    log("%-*s  %-*s  %-*s  %s" % (w[0], "figure", w[1], "median", w[2], "target", "verdict"))
    log("%s  %s  %s  %s" % ("-" * w[0], "-" * w[1], "-" * w[2], "-------"))
    for r in rows:
        log("%-*s  %-*s  %-*s  %s" % (w[0], r[0], w[1], r[1], w[2], r[2], r[3]))

    log("\n== raw per-run figures ==")
    for cfg in CONFIGS:
        name = cfg_name(cfg)
        rs = res["throughput"][name]
        if res["crashes"].get(name):
            log("throughput %s: worker crashes: %s" % (name, res["crashes"][name]))
        if res["stalls"].get(name):
            log("throughput %s: stalls: %s" % (name, res["stalls"][name]))
        if not rs:
            continue
        log("throughput %s deliveries/s: %s" % (name, [r["deliveries_per_s"] for r in rs]))
        log("  drain s: %s  worker CPU s: %s  nginx CPU s: %s  machine busy CPU s: %s  of which foreign: %s" % (
            [r["drain_s"] for r in rs], [r["worker_cpu_s"] for r in rs],
            [r["nginx_cpu_s"] for r in rs], [r["system_busy_s"] for r in rs], [r["foreign_cpu_s"] for r in rs]))
        log("  failed attempts (retried): %s" % ["%d%s" % (r["failed_attempts"], (" (" + r["failure_kinds"] + ")")
                                                          if r["failure_kinds"] else "") for r in rs])
        log("  worker VmHWM kB: %s  VmRSS kB start/max/end: %s" % (
            [r["worker_vmhwm_kb"] for r in rs],
            ["%d/%d/%d" % (r["worker_rss_kb_start"], r["worker_rss_kb_max"], r["worker_rss_kb_end"]) for r in rs]))
        log("  RssAnon kB start/after 1st quarter/max/end: %s  RssShmem kB end: %s" % (
            ["%d/%d/%d/%d" % (r["worker_anon_kb_start"], r["worker_anon_kb_q1"], r["worker_anon_kb_max"],
                              r["worker_anon_kb_end"]) for r in rs],
            [r["worker_shmem_kb_end"] for r in rs]))
        log("  transactions committed during the run (worker's, plus about %d of the benchmark's): %s" % (
            4 * max(r["drain_s"] for r in rs) + 10, [r["transactions"] for r in rs]))
        log("  connections to nginx: %s  insert+commit s: %s  first claim after commit ms: %s" % (
            [r["max_connections_to_nginx"] for r in rs], [r["insert_s"] for r in rs],
            [r["first_claim_after_commit_ms"] for r in rs]))
    for conc in WRK_CONCURRENCY:
        log("wrk -c%d requests/s: %s" % (conc, [round(x) for x in res["wrk"][conc]]))
    for kind in ("h1_alone", "h1_slow", "h2_alone", "h2_slow"):
        log("latency %s p50/p90/p99/max ms: %s" % (kind, ["%.2f/%.2f/%.2f/%.2f" % (
            r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"]) for r in res["latency"][kind]]))
        log("  median segments commit->claim / claim->arrival / arrival->recorded ms: %s" % (
            ["%.2f/%.2f/%.2f" % tuple(r["median_segments_ms"][k] for k in
                                      ("commit_to_claim", "claim_to_arrival", "arrival_to_recorded"))
             for r in res["latency"][kind]]))
        if kind.startswith("h1"):
            log("  new connections opened: %s" % [r["new_connections"] for r in res["latency"][kind]])
        if kind.endswith("slow"):
            log("  slow requests in flight before/after, slow events sent: %s" % (
                ["%s/%s, %s" % (r["slow_in_flight"].get("before"), r["slow_in_flight"].get("after"),
                                r["slow_in_flight"].get("slow_events_sent")) for r in res["latency"][kind]]))
    log("enqueue plain/stmt/row ms: %s" % (["%.0f/%.0f/%.0f" % (r["plain_ms"], r["stmt_ms"], r["row_ms"])
                                             for r in res["enqueue"]]))
    log("enqueue ratios stmt/row: %s" % (["%.2f/%.2f" % (r["stmt_ratio"], r["row_ratio"]) for r in res["enqueue"]]))
    log("single-row INSERT tps plain/row (ratio): %s" % (["%.0f/%.0f (%.3f)" % (
        r["single_plain_tps"], r["single_row_tps"], r["single_ratio"]) for r in res["enqueue"]]))
    for r in res.get("fairness", {}).get("slow", []):
        log("fairness a: %s" % r)
    for a, t in zip(res.get("fairness", {}).get("drain_alone", []), res.get("fairness", {}).get("drain_trickle", [])):
        log("fairness b: alone %s; with the trickle %s" % (a, t))
    log("CPU used by processes outside the benchmark, per section (CPU s, wall s): %s" % res.get("foreign_cpu"))


if __name__ == "__main__":
    main()
