#!/usr/bin/env bash
# Paired speed comparison of Diffusion-QL on hopper-medium, CPU, 1 thread: the authors' released code
# against ours in fp32, fp32 with linear_backend="onednn", bf16, and bf16 + torch.compile, alternated
# for 3 rounds, one run at a time,
# N timed gradient steps each (default 300). Appends each run's JSON line to
# zoo/results/speed/paired.jsonl, after a {"round", "next", "uptime"} line taken just before it.
#
# usage, from the repository root, on an otherwise idle machine:
#   N=300 bash zoo/results/speed/paired.sh PATH/TO/AUTHORS/CHECKOUT
set -euo pipefail
SRC=${1:?usage: paired.sh AUTHORS_SOURCE_DIR}
N=${N:-300}
HERE=zoo/results/speed
[ -f $HERE/steps.py ] || { echo "run this from the repository root" >&2; exit 1; }
OUT=$HERE/paired.jsonl
run() { nice -n 10 env OMP_NUM_THREADS=1 python "$@" >>"$OUT"; }
for round in 1 2 3; do
  for code in authors ours-fp32 ours-fp32-onednn ours-bf16 ours-bf16-compile; do
    python -c 'import json, sys; print(json.dumps({"round": int(sys.argv[1]), "next": sys.argv[2], "uptime": sys.argv[3].strip()}))' \
      "$round" "$code" "$(uptime)" >>"$OUT"
    case $code in
      authors)           run $HERE/authors_dql.py --src "$SRC" --steps "$N" ;;
      ours-fp32)         run $HERE/steps.py dql --steps "$N" --precision fp32 --predict ;;
      ours-fp32-onednn)  run $HERE/steps.py dql --steps "$N" --precision fp32 --linear-backend onednn --predict ;;
      ours-bf16)         run $HERE/steps.py dql --steps "$N" --precision bf16 --predict ;;
      ours-bf16-compile) run $HERE/steps.py dql --steps "$N" --precision bf16 --compile --predict ;;
    esac
  done
done
