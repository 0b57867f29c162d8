#!/usr/bin/env bash
# Paired speed comparison of IDQL on hopper-medium, CPU, one core: the authors' released JAX code
# (authors_idql.py, in its own environment) against ours in fp32, fp32 with linear_backend="onednn",
# bf16, and bf16 + torch.compile,
# alternated for 3 rounds, one run at a time, each pinned to core 1 with one thread, N timed gradient
# steps of batch 512 each (default 300). Appends each run's JSON line to
# zoo/results/speed/paired_idql.jsonl, after a {"round", "next", "uptime", "busy"} line taken just
# before it ("busy": what else was running, as given in $BUSY).
#
# usage, from the repository root:
#   N=300 BUSY="nothing" bash zoo/results/speed/paired_idql.sh PATH/TO/AUTHORS/CHECKOUT PATH/TO/JAX/VENV/bin/python
set -euo pipefail
SRC=${1:?usage: paired_idql.sh AUTHORS_SOURCE_DIR JAX_PYTHON}
JAX_PYTHON=${2:?usage: paired_idql.sh AUTHORS_SOURCE_DIR JAX_PYTHON}
N=${N:-300}
HERE=zoo/results/speed
[ -f $HERE/steps.py ] || { echo "run this from the repository root" >&2; exit 1; }
OUT=$HERE/paired_idql.jsonl
run() { taskset -c 1 env OMP_NUM_THREADS=1 "$@" >>"$OUT"; }
for round in 1 2 3; do
  for code in authors ours-fp32 ours-fp32-onednn ours-bf16 ours-bf16-compile; do
    python -c 'import json, sys; print(json.dumps({"round": int(sys.argv[1]), "next": sys.argv[2], "uptime": sys.argv[3].strip(), "busy": sys.argv[4]}))' \
      "$round" "$code" "$(uptime)" "${BUSY:-not stated}" >>"$OUT"
    case $code in
      authors)           run "$JAX_PYTHON" $HERE/authors_idql.py --src "$SRC" --steps "$N" ;;
      ours-fp32)         run python $HERE/steps.py idql --steps "$N" --threads 1 --precision fp32 --predict ;;
      ours-fp32-onednn)  run python $HERE/steps.py idql --steps "$N" --threads 1 --precision fp32 --linear-backend onednn --predict ;;
      ours-bf16)         run python $HERE/steps.py idql --steps "$N" --threads 1 --precision bf16 --predict ;;
      ours-bf16-compile) run python $HERE/steps.py idql --steps "$N" --threads 1 --precision bf16 --compile --predict ;;
    esac
  done
done
