#!/usr/bin/env bash
# Run every benchmark with its default (reportable) settings and write JSON results (plus the
# printed tables as .log files) to benchmarks/results/.
#
#   benchmarks/run_all.sh                      # CPU or CUDA, whichever torch picks ("auto")
#   DEVICE=cpu benchmarks/run_all.sh           # force a device for all three scripts
#   BUNDLE=runs/tiny/bundle benchmarks/run_all.sh   # NGD with another bundle than nerfdiff_ns/assets/bundle-tiny
#   RESULTS=/tmp/results benchmarks/run_all.sh # write somewhere else
#
# Run it on an otherwise idle machine: every script prints the 1-minute load average and warns
# when other processes compete for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python}"
DEVICE="${DEVICE:-auto}"
RESULTS="${RESULTS:-benchmarks/results}"
mkdir -p "$RESULTS"

load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
echo "load average (1 min) before starting: $load on $(nproc) cores"

run() {
    local name=$1
    shift
    echo "=== $name ==="
    "$PY" "benchmarks/$name.py" --device "$DEVICE" --output-json "$RESULTS/$name.json" "$@" 2>&1 \
        | grep -v -E "FutureWarning|warnings.warn|@custom_(fwd|bwd)" | tee "$RESULTS/$name.log"
}

run render_throughput
run train_throughput
if [[ -n "${BUNDLE:-}" ]]; then
    run ngd_timing --bundle "$BUNDLE"
else
    run ngd_timing
fi
echo "results in $RESULTS/"
