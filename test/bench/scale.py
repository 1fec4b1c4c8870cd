"""Scaling figures (issue 12): deliveries/s and worker CPU per delivery with
1, 2 and 4 workers in one database (webhooks.workers_per_database), and with
three databases at once (one worker each), beside the sink's own ceiling
measured by wrk in the same run.

Run by test/bench/scale.sh, inside run.sh's set-up (cluster, nginx sink,
certificates); it reuses bench.py's helpers.  Environment: RUNS (3), EVENTS
(100000 per drain), SCALE_WORKERS ("1 2 4"), WRK_CONCURRENCY, WRK_SECONDS.

On a 2-core machine the sink (nginx, one worker process), PostgreSQL's
backends and the delivery workers share the same two cores: more workers
than cores compete with the sink for CPU, so the figures say how far the
delivery path scales on this machine, not on a bigger one.
"""
import os
import signal
import statistics
import subprocess
import time

import bench as B

WORKERS = [int(x) for x in os.environ.get("SCALE_WORKERS", "1 2 4").split()]
DBS = ["bench", "bench2", "bench3"]


def workers_of(db):
    out = B.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker' AND datname = '%s'" % db,
                 check=False) or ""
    return [int(p) for p in out.split()]


def wait_workers(db, n, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = workers_of(db)
        if len(pids) == n:
            time.sleep(0.5)     # let them finish their start-up
            return pids
        time.sleep(0.1)
    raise RuntimeError("database %s: %d workers, not %d" % (db, len(workers_of(db)), n))


def setup_other(db):
    B.psql("CREATE DATABASE %s" % db, db="postgres")
    B.psql("CREATE EXTENSION webhooks", db=db)
    B.psql(B.BENCH_OPENS_DDL, db=db)
    B.psql("SELECT 1 FROM webhooks.create_webhook('nginx-sink', 'EmailOpens', '%s')" % B.NGINX_URL, db=db)


def empty(db):
    B.psql("TRUNCATE webhooks.deliveries, webhooks.event_batches, webhooks.delivery_history, "
           "webhooks.webhook_logs, webhooks.history_latency, webhooks.history_counts, app.bench_opens", db=db)


def drained(db):
    return int(B.psql("SELECT count(*) FROM webhooks.delivery_history", db=db))


def perf_shares(path):
    """CPU samples per process name (perf report --sort comm), the top ones."""
    out = subprocess.run(["perf", "report", "-i", path, "--sort", "comm", "--stdio", "-q"],
                         capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()][:8]


def drain(dbs, perf_path=None):
    """EVENTS events committed in each database (one INSERT each, one after
    the other), then wait until every one is delivered: deliveries/s from
    the first commit to the last finished delivery, worker CPU s."""
    pids = [p for db in dbs for p in workers_of(db)]
    for db in dbs:
        empty(db)
    B.psql("CHECKPOINT")
    cpu0 = sum(B.cpu_s(p) for p in pids)
    ncpu0 = B.cpu_s(B.nginx_worker_pid())
    busy0 = B.system_busy_s()
    perf = None
    if perf_path:
        perf = subprocess.Popen(["perf", "record", "-a", "-F", "499", "-q", "-o", perf_path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    t0 = time.time()
    for db in dbs:
        B.psql(B.INSERT_SQL.format(table="app.bench_opens", n=B.EVENTS), db=db)
    deadline = time.time() + B.DRAIN_TIMEOUT
    while time.time() < deadline and sum(drained(db) for db in dbs) < B.EVENTS * len(dbs):
        time.sleep(0.25)
    done = sum(drained(db) for db in dbs)
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    if done < B.EVENTS * len(dbs):
        raise RuntimeError("only %d of %d delivered" % (done, B.EVENTS * len(dbs)))
    last = max(float(B.psql("SELECT extract(epoch FROM max(finished_at)) FROM webhooks.delivery_history", db=db))
               for db in dbs)
    dead = sum(int(B.psql("SELECT count(*) FROM webhooks.delivery_history WHERE state <> 'delivered'", db=db))
               for db in dbs)
    cpu = sum(B.cpu_s(p) for p in pids if os.path.exists("/proc/%d" % p)) - cpu0
    # the whole machine during the drain (the poll's seconds after the last delivery included)
    busy = (B.system_busy_s() - busy0) / ((time.time() - t0) * os.cpu_count())
    return {"rate": done / (last - t0), "worker_cpu_us": cpu / done * 1e6, "nginx_cpu_s": B.cpu_s(B.nginx_worker_pid()) - ncpu0,
            "dead": dead, "workers": len(pids), "machine_busy": busy}


def main():
    B.setup_schema()
    B.psql("SELECT webhooks.deactivate_webhook(name) FROM webhooks.webhooks WHERE name <> 'nginx-sink'")
    res = {}
    B.log("== wrk: the sink's own ceiling (HTTP/1.1, POST, %d s) ==" % B.WRK_SECONDS)
    res["wrk"] = {c: B.wrk_run(c) for c in B.WRK_CONCURRENCY}
    for c, v in res["wrk"].items():
        B.log("  wrk -c%d: %.0f requests/s" % (c, v))
    for n in WORKERS:
        B.set_gucs(workers_per_database=n)
        wait_workers("bench", n)
        B.log("== %d worker(s) in one database: %d events per run ==" % (n, B.EVENTS))
        runs = []
        for i in range(B.RUNS):
            perf_path = os.path.join(B.TMP, "perf-%d.data" % n) if os.environ.get("SCALE_PERF") and i == 0 else None
            r = drain(["bench"], perf_path)
            runs.append(r)
            B.log("  run %d: %6.0f deliveries/s, worker CPU %.0f us/delivery, nginx CPU %.1f s, machine %.0f %% busy, "
                  "%d not delivered" % (i + 1, r["rate"], r["worker_cpu_us"], r["nginx_cpu_s"], 100 * r["machine_busy"],
                                        r["dead"]))
        res[n] = runs
        if os.environ.get("SCALE_PERF"):
            B.log("  CPU by process during run 1 (perf record -a, share of all samples):")
            for line in perf_shares(os.path.join(B.TMP, "perf-%d.data" % n)):
                B.log("    " + line)
    B.set_gucs(workers_per_database=1)
    for db in DBS[1:]:
        setup_other(db)
    for db in DBS:
        wait_workers(db, 1)
    B.log("== three databases at once, one worker each: %d events in each per run ==" % B.EVENTS)
    res["dbs"] = []
    for i in range(B.RUNS):
        r = drain(DBS)
        res["dbs"].append(r)
        B.log("  run %d: %6.0f deliveries/s in all, worker CPU %.0f us/delivery, machine %.0f %% busy, %d not delivered"
              % (i + 1, r["rate"], r["worker_cpu_us"], 100 * r["machine_busy"], r["dead"]))

    ceiling = max(res["wrk"].values())
    B.log("\n== summary: medians of %d runs (%s) ==" % (B.RUNS, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
    B.log("%-34s %14s %18s %16s %14s" % ("configuration", "deliveries/s", "worker CPU/deliv.", "of sink ceiling",
                                         "machine busy"))
    rows = [("%d worker(s), one database" % n, res[n]) for n in WORKERS] + [("3 databases, 1 worker each", res["dbs"])]
    for label, runs in rows:
        rate = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["worker_cpu_us"] for r in runs)
        busy = statistics.median(r["machine_busy"] for r in runs)
        B.log("%-34s %14.0f %15.0f us %15.0f %% %13.0f %%" % (label, rate, cpu, 100 * rate / ceiling, 100 * busy))
    B.log("%-34s %14.0f" % ("sink ceiling (wrk, best of -c%s)" % "/".join(str(c) for c in B.WRK_CONCURRENCY), ceiling))
    B.log("raw: %s" % {k: v for k, v in res.items()})


if __name__ == "__main__":
    main()
