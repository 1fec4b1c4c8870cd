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
import statistics
import subprocess
import sys
import threading
import time

ENV = os.environ
TMP = ENV["BENCH_TMP"]
SOCK = ENV["BENCH_SOCK"]
PSQL = ENV["BENCH_PSQL"]
PGCLIENT = ENV["BENCH_PGCLIENT"]
NGINX_URL = ENV["BENCH_NGINX_URL"]
NGINX_MASTER = int(ENV["BENCH_NGINX_PID"])
RECEIVER_URL = ENV["BENCH_RECEIVER_URL"]
RECEIVER_LOG = ENV["BENCH_RECEIVER_LOG"]
LUA = ENV["BENCH_LUA"]

RUNS = int(ENV.get("RUNS", "3"))
EVENTS = int(ENV.get("EVENTS", "100000"))
CONCURRENCY = [int(c) for c in ENV.get("CONCURRENCY", "64 256").split()]
LAT_EVENTS = int(ENV.get("LAT_EVENTS", "200"))
WRK_SECONDS = int(ENV.get("WRK_SECONDS", "10"))
SLOW_MS = 3000
SLOW_INTERVAL_MS = 150          # one slow event every 150 ms: about 20 in flight at 3 s each
DB = "bench"
CONNINFO = "host=%s port=5432 user=postgres dbname=%s" % (SOCK, DB)
HZ = os.sysconf("SC_CLK_TCK")

TARGET_TPUT = 10000
TARGET_P50 = 5.0
TARGET_P99 = 50.0
TARGET_RATIO = 1.5


def log(*a):
    print(*a, flush=True)


def psql(sql, db=DB):
    r = subprocess.run([PSQL, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-h", SOCK, "-p", "5432",
                        "-U", "postgres", "-d", db, "-c", sql],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("psql failed: %s\n%s" % (sql, r.stderr))
    return r.stdout.strip()


def pgclient(*args):
    r = subprocess.run([PGCLIENT, args[0], CONNINFO] + list(args[1:]), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("pgclient failed: %s" % r.stderr)
    return r.stdout


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


def worker_pid():
    for _ in range(100):
        p = psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = '%s'" % DB)
        if p:
            return int(p)
        time.sleep(0.1)
    raise RuntimeError("no webhooks worker")


def nginx_worker_pid():
    with open("/proc/%d/task/%d/children" % (NGINX_MASTER, NGINX_MASTER)) as f:
        kids = [int(x) for x in f.read().split()]
    return kids[0]


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command: state is field 3, utime 14, stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / HZ


def status_kb(pid, keys=("VmRSS", "RssAnon", "VmHWM")):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


def system_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / HZ


class Sampler(threading.Thread):
    """VmRSS / RssAnon of the worker every 100 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        t0 = time.time()
        while not self.stop.is_set():
            s = status_kb(self.pid)
            self.samples.append((time.time() - t0, s["VmRSS"], s["RssAnon"]))
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
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------

def setup_schema():
    psql("CREATE DATABASE %s" % DB, db="postgres")
    psql("CREATE EXTENSION webhooks")
    worker_pid()
    psql("""
CREATE SCHEMA app;
-- throughput: bulk insert, statement trigger -> EmailOpens -> nginx
CREATE TABLE app.bench_opens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id bigint NOT NULL, subscriber_id bigint NOT NULL,
    subscriber_email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TRIGGER bench_opens_webhook AFTER INSERT ON app.bench_opens
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION webhooks.enqueue_event('EmailOpens');
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
    psql("SELECT 1 FROM webhooks.create_webhook('receiver-slow', 'EmailSends', '%s/ok')" % RECEIVER_URL)
    # the wizard's connection test would wait 3 s: point it at /slow afterwards
    psql("SELECT webhooks.deactivate_webhook('receiver-slow')")
    psql("SELECT webhooks.update_webhook('receiver-slow', target_url => '%s/slow/%d')" % (RECEIVER_URL, SLOW_MS))
    psql("UPDATE webhooks.webhooks SET is_active = true WHERE name = 'receiver-slow'")


INSERT_SQL = ("INSERT INTO {table} (message_id, subscriber_id, subscriber_email) "
              "SELECT g, 1000000 + g, 'subscriber' || g || '@example.com' "
              "FROM generate_series(1, {n}) g")


# ---------------------------------------------------------------------------
# 1. throughput
# ---------------------------------------------------------------------------

def throughput_run(conc):
    psql("TRUNCATE webhooks.deliveries, webhooks.webhook_logs, app.bench_opens")
    psql("VACUUM ANALYZE webhooks.deliveries")
    psql("CHECKPOINT")
    wpid = worker_pid()
    npid = nginx_worker_pid()
    mem0 = status_kb(wpid)
    cpu0, ncpu0, sys0 = cpu_s(wpid), cpu_s(npid), system_busy_s()
    sampler = Sampler(wpid)
    sampler.start()
    t_ins = time.time()
    # one autocommit INSERT (the statement trigger enqueues all rows), then
    # the server's clock right after that commit, in the same session
    out = subprocess.run([PSQL, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-h", SOCK, "-p", "5432",
                          "-U", "postgres", "-d", DB,
                          "-c", INSERT_SQL.format(table="app.bench_opens", n=EVENTS),
                          "-c", "SELECT extract(epoch FROM clock_timestamp())"],
                         capture_output=True, text=True, check=True).stdout.split()
    commit_ts = float(out[-1])
    insert_s = commit_ts - t_ins
    deadline = time.time() + 600
    pending = None
    while time.time() < deadline:
        pending = int(psql("SELECT count(*) FROM webhooks.deliveries WHERE state = 'pending'"))
        if pending == 0:
            break
        time.sleep(0.25)
    sampler.stop.set()
    sampler.join()
    cpu1, ncpu1, sys1 = cpu_s(wpid), cpu_s(npid), system_busy_s()
    mem1 = status_kb(wpid)
    if pending != 0:
        raise RuntimeError("throughput run: %s deliveries still pending after 600 s" % pending)
    row = psql("SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state = 'dead'), "
               "extract(epoch FROM min(last_attempt_at)), extract(epoch FROM max(finished_at)), "
               "(SELECT count(*) FROM webhooks.webhook_logs) FROM webhooks.deliveries").split("|")
    delivered, dead, first_ts, last_ts, nlogs = int(row[0]), int(row[1]), float(row[2]), float(row[3]), int(row[4])
    conns = subprocess.run(["ss", "-Htn", "state", "established", "dst", NGINX_URL.split("/")[2]],
                           capture_output=True, text=True).stdout.strip().splitlines()
    drain_s = last_ts - commit_ts
    rss = [s[1] for s in sampler.samples]
    anon = [s[2] for s in sampler.samples]
    r = {
        "concurrency": conc,
        "delivered": delivered, "dead": dead, "failed_attempts": nlogs,
        "insert_s": round(insert_s, 3),
        "first_send_after_commit_ms": round((first_ts - commit_ts) * 1000, 1),
        "drain_s": round(drain_s, 3),
        "deliveries_per_s": round(delivered / drain_s, 1),
        "worker_cpu_s": round(cpu1 - cpu0, 2),
        "nginx_cpu_s": round(ncpu1 - ncpu0, 2),
        "system_busy_s": round(sys1 - sys0, 2),
        "wall_s": round(time.time() - t_ins, 2),
        "worker_vmhwm_kb": mem1["VmHWM"],
        "worker_rss_kb_start": mem0["VmRSS"], "worker_rss_kb_max": max(rss + [mem0["VmRSS"]]),
        "worker_rss_kb_end": mem1["VmRSS"],
        "worker_anon_kb_start": mem0["RssAnon"], "worker_anon_kb_max": max(anon + [mem0["RssAnon"]]),
        "worker_anon_kb_end": mem1["RssAnon"],
        "rss_samples": len(rss),
        "client_connections_to_nginx": len(conns),
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

def receiver_arrivals(event_type, lo, hi):
    """messageId -> arrival time, for deliveries (not tests) of event_type with lo <= messageId < hi."""
    out = {}
    with open(RECEIVER_LOG) as f:
        for line in f:
            r = json.loads(line)
            if r["headers"].get("webhook-id", "").startswith("msg_test_"):
                continue
            try:
                b = json.loads(r["body"])
            except ValueError:
                continue
            if b.get("eventType") == event_type and lo <= b.get("messageId", -1) < hi:
                out.setdefault(b["messageId"], r["t"])
    return out


EMIT_FAST = ("SELECT webhooks.emit('EmailDeliveries', jsonb_build_object('messageId', %d, "
             "'subscriberId', 42, 'subscriberEmail', 'latency@example.com'))")
EMIT_SLOW = ("SELECT webhooks.emit('EmailSends', jsonb_build_object('messageId', %d, "
             "'subscriberId', 43, 'subscriberEmail', 'slow@example.com'))")


def slow_in_flight():
    return int(psql("SELECT count(*) FROM webhooks.pending_deliveries WHERE webhook_name = 'receiver-slow' AND in_flight"))


def wait_arrivals(event_type, lo, hi, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = receiver_arrivals(event_type, lo, hi)
        if len(got) >= n:
            return got
        time.sleep(0.2)
    raise RuntimeError("only %d of %d %s events arrived" % (len(got), n, event_type))


def latency_run(run_no, with_slow):
    base = (run_no * 2 + (1 if with_slow else 0)) * 100000
    stream = None
    inflight = {}
    if with_slow:
        # a steady stream to the slow webhook: about 20 requests in flight
        stream = subprocess.Popen([PGCLIENT, "stream", CONNINFO, str(SLOW_INTERVAL_MS),
                                   EMIT_SLOW.replace("%d", str(base + 50000) + " + %d")],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(SLOW_MS / 1000.0 + 0.7)
        inflight["before"] = slow_in_flight()
    # warm-up: one event, not counted (a fresh TLS connection otherwise)
    pgclient("commits", "1", EMIT_FAST.replace("%d", str(base) + " + %d"))
    wait_arrivals("EmailDeliveries", base, base + 2, 1)
    out = pgclient("commits", str(LAT_EVENTS), EMIT_FAST.replace("%d", str(base + 1000) + " + %d"))
    commits = {}
    for line in out.strip().splitlines():
        i, t = line.split()
        commits[base + 1000 + int(i)] = float(t)
    if with_slow:
        inflight["after"] = slow_in_flight()
    got = wait_arrivals("EmailDeliveries", base + 1001, base + 1001 + LAT_EVENTS, LAT_EVENTS)
    if stream is not None:
        stream.terminate()
        sent = int(stream.communicate()[0].strip() or 0)
        inflight["slow_events_sent"] = sent
        # let the slow webhook's queue drain before the next run
        deadline = time.time() + 60
        while time.time() < deadline and int(psql(
                "SELECT count(*) FROM webhooks.deliveries WHERE state = 'pending'")) > 0:
            time.sleep(0.25)
    lat = [(got[k] - commits[k]) * 1000 for k in sorted(commits)]
    return {
        "with_slow_endpoint": with_slow,
        "events": len(lat),
        "p50_ms": round(pct(lat, 50), 2), "p90_ms": round(pct(lat, 90), 2),
        "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2), "min_ms": round(min(lat), 2),
        "mean_ms": round(statistics.mean(lat), 2),
        "commit_span_s": round(max(commits.values()) - min(commits.values()), 3),
        "slow_in_flight": inflight,
    }


# ---------------------------------------------------------------------------
# 4. enqueue cost
# ---------------------------------------------------------------------------

def enqueue_run():
    times = {}
    for table in ("plain", "stmt", "row"):
        psql("TRUNCATE app.enq_%s, webhooks.deliveries" % table)
        psql("CHECKPOINT")
        times[table] = float(pgclient("time", INSERT_SQL.format(table="app.enq_" + table, n=EVENTS)))
    queued = int(psql("SELECT count(*) FROM webhooks.deliveries"))
    return {
        "plain_ms": round(times["plain"], 1), "stmt_ms": round(times["stmt"], 1), "row_ms": round(times["row"], 1),
        "stmt_ratio": round(times["stmt"] / times["plain"], 2),
        "row_ratio": round(times["row"] / times["plain"], 2),
        "row_trigger_queued": queued,
    }


# ---------------------------------------------------------------------------

def main():
    t_start = time.time()
    setup_schema()
    res = {"runs": RUNS, "events": EVENTS, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "throughput": {}, "wrk": {}, "latency": {"alone": [], "slow": []}, "enqueue": []}

    log("\n== 1. throughput: %d events in one transaction -> nginx ==" % EVENTS)
    for conc in CONCURRENCY:
        set_gucs(max_concurrency=conc)
        res["throughput"][conc] = []
        for i in range(RUNS):
            r, samples = throughput_run(conc)
            res["throughput"][conc].append(r)
            log("  max_concurrency %4d run %d: %8.0f deliveries/s  drain %.2f s  (insert %.2f s, first send %+.0f ms)"
                "  worker CPU %.2f s  nginx CPU %.2f s  system busy %.2f s of %.2f s wall x 2 cores"
                % (conc, i + 1, r["deliveries_per_s"], r["drain_s"], r["insert_s"], r["first_send_after_commit_ms"],
                   r["worker_cpu_s"], r["nginx_cpu_s"], r["system_busy_s"], r["wall_s"]))
            log("      worker RSS kB start/max/end %d/%d/%d, anon %d/%d/%d, VmHWM %d; %d connections to nginx"
                % (r["worker_rss_kb_start"], r["worker_rss_kb_max"], r["worker_rss_kb_end"],
                   r["worker_anon_kb_start"], r["worker_anon_kb_max"], r["worker_anon_kb_end"],
                   r["worker_vmhwm_kb"], r["client_connections_to_nginx"]))
            with open(os.path.join(TMP, "rss_c%d_r%d.tsv" % (conc, i + 1)), "w") as f:
                for s in samples:
                    f.write("%.2f\t%d\t%d\n" % s)
            res.setdefault("rss_series", {})["c%d_r%d" % (conc, i + 1)] = [
                (round(s[0], 1), s[1], s[2]) for s in samples[::10]]
    reset_gucs("max_concurrency")

    log("\n== 2. the sink's ceiling: wrk -t1 -cN -d%ds, POST of a 153-byte JSON body ==" % WRK_SECONDS)
    for conc in CONCURRENCY:
        res["wrk"][conc] = []
        for i in range(RUNS):
            rps = wrk_run(conc)
            res["wrk"][conc].append(rps)
            log("  -c%d run %d: %.0f requests/s" % (conc, i + 1, rps))

    log("\n== 3. latency: commit -> arrival at the receiver, %d events back to back ==" % LAT_EVENTS)
    for i in range(RUNS):
        for slow in (False, True):
            r = latency_run(i, slow)
            res["latency"]["slow" if slow else "alone"].append(r)
            log("  %-32s run %d: p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (%d commits in %.2f s)%s"
                % ("with a 3 s endpoint busy" if slow else "alone", i + 1, r["p50_ms"], r["p90_ms"], r["p99_ms"],
                   r["max_ms"], r["events"], r["commit_span_s"],
                   ("  slow in flight before/after: %s/%s" % (r["slow_in_flight"].get("before"),
                                                             r["slow_in_flight"].get("after"))) if slow else ""))

    log("\n== 4. enqueue cost: INSERT of %d rows, webhooks.enabled = off ==" % EVENTS)
    set_gucs(enabled="off")
    for i in range(RUNS):
        r = enqueue_run()
        res["enqueue"].append(r)
        log("  run %d: plain %.0f ms, statement trigger %.0f ms (x%.2f), row trigger %.0f ms (x%.2f)"
            % (i + 1, r["plain_ms"], r["stmt_ms"], r["stmt_ratio"], r["row_ms"], r["row_ratio"]))
    reset_gucs("enabled")
    psql("TRUNCATE webhooks.deliveries")

    # -----------------------------------------------------------------------
    log("\n== summary: medians of %d runs (%s) ==" % (RUNS, res["date"]))
    rows = []

    def row(name, value, target, ok):
        rows.append((name, value, target, "" if ok is None else ("ok" if ok else "MISSED")))

    for conc in CONCURRENCY:
        rs = res["throughput"][conc]
        tput = med([r["deliveries_per_s"] for r in rs])
        ceiling = med(res["wrk"][conc])
        row("throughput, max_concurrency %d" % conc, "%.0f deliveries/s" % tput, ">= %d /s" % TARGET_TPUT,
            tput >= TARGET_TPUT)
        row("  drain time of %d events" % EVENTS, "%.2f s" % med([r["drain_s"] for r in rs]), "", None)
        row("  worker CPU", "%.2f s (%.1f us/delivery)" % (med([r["worker_cpu_s"] for r in rs]),
                                                          med([r["worker_cpu_s"] for r in rs]) / EVENTS * 1e6), "", None)
        row("  nginx worker CPU", "%.2f s" % med([r["nginx_cpu_s"] for r in rs]), "", None)
        row("  sink ceiling (wrk -c%d)" % conc, "%.0f requests/s" % ceiling, "", None)
        row("  fraction of the ceiling", "%.0f %%" % (100 * tput / ceiling), "", None)
        anon_growth = med([r["worker_anon_kb_end"] - r["worker_anon_kb_start"] for r in rs])
        anon_peak = med([r["worker_anon_kb_max"] - r["worker_anon_kb_start"] for r in rs])
        row("  worker VmHWM", "%.0f MB" % (med([r["worker_vmhwm_kb"] for r in rs]) / 1024), "", None)
        row("  worker VmRSS start -> max -> end", "%.1f -> %.1f -> %.1f MB" % (
            med([r["worker_rss_kb_start"] for r in rs]) / 1024, med([r["worker_rss_kb_max"] for r in rs]) / 1024,
            med([r["worker_rss_kb_end"] for r in rs]) / 1024), "", None)
        row("  worker private (RssAnon) growth", "peak +%.0f kB, end +%.0f kB" % (anon_peak, anon_growth),
            "flat", anon_growth < 1024)
    for kind, label in (("alone", "latency alone"), ("slow", "latency, 3 s endpoint busy")):
        rs = res["latency"][kind]
        p50 = med([r["p50_ms"] for r in rs])
        p99 = med([r["p99_ms"] for r in rs])
        row(label + " p50", "%.2f ms" % p50, "< %g ms" % TARGET_P50, p50 < TARGET_P50)
        row(label + " p99", "%.2f ms" % p99, "< %g ms" % TARGET_P99, p99 < TARGET_P99)
    rs = res["enqueue"]
    sr = med([r["stmt_ratio"] for r in rs])
    rr = med([r["row_ratio"] for r in rs])
    row("enqueue, statement trigger", "x%.2f (%.0f ms vs %.0f ms)" % (sr, med([r["stmt_ms"] for r in rs]),
                                                                    med([r["plain_ms"] for r in rs])),
        "< x%.1f" % TARGET_RATIO, sr < TARGET_RATIO)
    row("enqueue, row trigger", "x%.2f (%.0f ms)" % (rr, med([r["row_ms"] for r in rs])), "", None)

    w = [max(len(r[i]) for r in rows) for i in range(3)]
    log("%-*s  %-*s  %-*s  %s" % (w[0], "figure", w[1], "median", w[2], "target", ""))
    log("%s  %s  %s  %s" % ("-" * w[0], "-" * w[1], "-" * w[2], "------"))
    for r in rows:
        log("%-*s  %-*s  %-*s  %s" % (w[0], r[0], w[1], r[1], w[2], r[2], r[3]))

    log("\n== raw per-run figures ==")
    for conc in CONCURRENCY:
        log("throughput c=%d deliveries/s: %s" % (conc, [r["deliveries_per_s"] for r in res["throughput"][conc]]))
        log("  drain s: %s  worker CPU s: %s  nginx CPU s: %s  system busy s: %s" % (
            [r["drain_s"] for r in res["throughput"][conc]], [r["worker_cpu_s"] for r in res["throughput"][conc]],
            [r["nginx_cpu_s"] for r in res["throughput"][conc]], [r["system_busy_s"] for r in res["throughput"][conc]]))
        log("  worker VmHWM kB: %s  RSS kB start/max/end: %s  RssAnon kB start/max/end: %s" % (
            [r["worker_vmhwm_kb"] for r in res["throughput"][conc]],
            ["%d/%d/%d" % (r["worker_rss_kb_start"], r["worker_rss_kb_max"], r["worker_rss_kb_end"])
             for r in res["throughput"][conc]],
            ["%d/%d/%d" % (r["worker_anon_kb_start"], r["worker_anon_kb_max"], r["worker_anon_kb_end"])
             for r in res["throughput"][conc]]))
        log("  connections to nginx: %s  insert s: %s" % (
            [r["client_connections_to_nginx"] for r in res["throughput"][conc]],
            [r["insert_s"] for r in res["throughput"][conc]]))
        log("wrk -c%d requests/s: %s" % (conc, [round(x) for x in res["wrk"][conc]]))
    for kind in ("alone", "slow"):
        log("latency %s p50/p99/max ms: %s" % (kind, ["%.2f/%.2f/%.2f" % (r["p50_ms"], r["p99_ms"], r["max_ms"])
                                                    for r in res["latency"][kind]]))
        if kind == "slow":
            log("  slow requests in flight before/after, slow events sent: %s" % (
                ["%s/%s, %s" % (r["slow_in_flight"].get("before"), r["slow_in_flight"].get("after"),
                                r["slow_in_flight"].get("slow_events_sent")) for r in res["latency"][kind]]))
    log("enqueue plain/stmt/row ms: %s" % (["%.0f/%.0f/%.0f" % (r["plain_ms"], r["stmt_ms"], r["row_ms"])
                                             for r in res["enqueue"]]))
    log("enqueue ratios stmt/row: %s" % (["%.2f/%.2f" % (r["stmt_ratio"], r["row_ratio"]) for r in res["enqueue"]]))
    log("\nbenchmark took %.0f s" % (time.time() - t_start))
    if ENV.get("RESULTS_JSON"):
        with open(ENV["RESULTS_JSON"], "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
