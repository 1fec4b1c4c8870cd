#!/usr/bin/env bash
# test/bench/scale.sh: issue 12's scaling figures (not part of the test suite).
#
#   bash test/bench/scale.sh              # RUNS=3: about 5-8 minutes
#   RUNS=5 SCALE_WORKERS="1 2 3 4" bash test/bench/scale.sh
#
# In run.sh's set-up (cluster, nginx sink, certificates) runs
# test/bench/scale.py: the sink's ceiling (wrk), then deliveries/s and worker
# CPU per delivery with 1, 2 and 4 workers in one database
# (webhooks.workers_per_database) and with three databases at once, and
# how busy the machine was.  webhooks.max_concurrency_per_webhook is
# SCALE_PER_WEBHOOK (512): the cap holds over all of a database's workers,
# and at the default 64 it alone would limit the one webhook's throughput.
# SCALE_PERF=1: perf record -a during the first
# run of each worker count, and the CPU share of each process name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# the benchmark's one webhook: its cap (64 by default) holds over all the
# workers of its database, and would be what limits N workers
export EXTRA_CONF="webhooks.databases = 'bench, bench2, bench3'
max_worker_processes = 16
webhooks.max_concurrency_per_webhook = ${SCALE_PER_WEBHOOK:-512}
${EXTRA_CONF:-}"
export BENCH_CMD='"$PYTHON" "$here/scale.py"'
exec bash "$here/run.sh"
