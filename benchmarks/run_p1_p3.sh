#!/usr/bin/env bash
# The P1-P3 set in one go, for a lent accelerator (or a quiet machine): likelihood (P1), the few-step sampling
# frontier and the default-grid check (P2), throughput (P3). Every results file records the device it ran on
# (`device` in the JSON, first line of the markdown). Usage, from the checkout root:
#   benchmarks/run_p1_p3.sh [PYTHON]        # PYTHON defaults to .peers-venv/bin/python (benchmarks/README.md)
# Pass --quick as the second argument for a smoke run of each script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.peers-venv/bin/python}"
QUICK="${2:-}"
run() { echo "== $*"; /usr/bin/env time -f "   %e s" "$PY" "$@" $QUICK; }
run benchmarks/bench_likelihood.py
run benchmarks/bench_sampling.py --few
run benchmarks/bench_sampling.py --grid
run benchmarks/bench_throughput.py
