#!/usr/bin/env bash
# Diffusion-QL (fp32, 100 timed steps) at 1 and 2 torch threads, OpenMP wait policy default vs
# PASSIVE, with 0, 1 or 2 other processes spinning on the machine's 2 cores. One measurement at a
# time; each JSON line of steps.py gets a "load" field (the number of spinners) and is appended to
# zoo/results/speed/load.jsonl.
#
# usage, from the repository root, on an otherwise idle machine: bash zoo/results/speed/load.sh
set -euo pipefail
HERE=zoo/results/speed
[ -f $HERE/steps.py ] || { echo "run this from the repository root" >&2; exit 1; }
OUT=$HERE/load.jsonl
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for load in 0 1 2; do
  pids=()
  for _ in $(seq 1 "$load"); do python -c "while True: pass" & pids+=($!); done
  sleep 2
  for policy in default PASSIVE; do
    for threads in 1 2; do
      if [ "$policy" = PASSIVE ]; then export OMP_WAIT_POLICY=PASSIVE; else unset OMP_WAIT_POLICY; fi
      python $HERE/steps.py dql --steps 100 --precision fp32 --threads "$threads" \
        | python -c "import json, sys; d = json.loads(sys.stdin.read()); d['load'] = $load; print(json.dumps(d))" >>"$OUT"
    done
  done
  if [ "$load" -gt 0 ]; then kill "${pids[@]}"; fi
done
