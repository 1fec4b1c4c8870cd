#!/usr/bin/env bash
# test/bench/scale.sh: issue 12's scaling figures (not part of the test suite).
#
#   bash test/bench/scale.sh              # RUNS=3: about 5-8 minutes
#   RUNS=5 SCALE_WORKERS="1 2 3 4" bash test/bench/scale.sh
#
# In run.sh's set-up (cluster, nginx sink, certificates) runs
# test/bench/scale.py: the sink's ceiling (wrk), then deliveries/s and worker
# CPU per delivery with 1, 2 and 4 workers in one database
# (webhooks.workers_per_database) and with three databases at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export EXTRA_CONF="webhooks.databases = 'bench, bench2, bench3'
max_worker_processes = 16
${EXTRA_CONF:-}"
export BENCH_CMD='"$PYTHON" "$here/scale.py"'
exec bash "$here/run.sh"
