#!/usr/bin/env bash
# The DDP tests (tests/test_distributed.py) RUNS times in a row (default 10) while busy loops keep every
# core busy, as on a loaded machine, where a thread a rank leaves working at its exit can abort the run.
# Stops at the first failure. Outside the suite; run from the repository root with the venv active:
#     bash tests/ddp_under_load.sh [RUNS]
set -u
runs=${1:-10}
cd "$(dirname "$0")/.."
busy=()
trap 'kill "${busy[@]}" 2>/dev/null' EXIT
for _ in $(seq 0 "$(nproc)"); do      # one busy loop per core, and one more
    (while :; do :; done) &
    busy+=($!)
done
log=$(mktemp)
passed=0
for run in $(seq 1 "$runs"); do
    if python -m pytest -x -q -p no:cacheprovider tests/test_distributed.py > "$log" 2>&1; then
        passed=$((passed + 1))
        echo "run $run: passed"
    else
        echo "run $run: FAILED; its output:"
        tail -n 60 "$log"
        break
    fi
done
rm -f "$log"
echo "$passed of $runs runs passed with ${#busy[@]} busy loops on $(nproc) cores"
[ "$passed" -eq "$runs" ]
