#!/usr/bin/env bash
# Before and after the speed work, paired: gradient steps/s of the diffusion agents on hopper-medium
# (1 thread), built from an earlier commit's install (BEFORE_SITE) and from this checkout in fp32 and
# bf16, alternated for 2 rounds, one run at a time. Appends JSON lines (each after a
# {"round", "next", "uptime"} line) to zoo/results/speed/before_after.jsonl.
#
# usage, from the repository root, on an otherwise idle machine:
#   git worktree add ../before ba52691 && pip install --no-deps --target ../before-site ../before
#   bash zoo/results/speed/before_after.sh ../before-site
set -euo pipefail
BEFORE=${1:?usage: before_after.sh BEFORE_SITE}
HERE=zoo/results/speed
[ -f $HERE/steps.py ] || { echo "run this from the repository root" >&2; exit 1; }
OUT=$HERE/before_after.jsonl
run() { nice -n 10 env OMP_NUM_THREADS=1 "$@" >>"$OUT"; }
for round in 1 2; do
  for agent in dql idql diffuser decision_diffuser diffusion_policy; do
    case $agent in dql | idql) n=200 ;; *) n=60 ;; esac
    for variant in before after-fp32 after-bf16; do
      python -c 'import json, sys; print(json.dumps({"round": int(sys.argv[1]), "next": sys.argv[2], "uptime": sys.argv[3].strip()}))' \
        "$round" "$agent $variant" "$(uptime)" >>"$OUT"
      case $variant in
        before)     run env PYTHONPATH="$BEFORE" python $HERE/steps.py $agent --steps $n ;;
        after-fp32) run python $HERE/steps.py $agent --steps $n --precision fp32 ;;
        after-bf16) run python $HERE/steps.py $agent --steps $n --precision bf16 ;;
      esac
    done
  done
done
