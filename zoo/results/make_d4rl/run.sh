#!/usr/bin/env bash
# Issue 19: time `diffgym data make-d4rl --env Hopper-v5` (the README's default settings) on one core,
# with the IDQL lane paused (the DQL lane runs on the other core).
set -euo pipefail
cd /work/runs/d4rl_recipe
. /work/main/.venv/bin/activate
export PYTHONPATH=/work/snapE-site OMP_NUM_THREADS=1
export MINARI_DATASETS_PATH=/work/runs/d4rl_recipe/minari
date -u +"start %H:%M:%S"
/usr/bin/time -v python /work/snapE-site/bin/diffgym data make-d4rl --env Hopper-v5 --out out --threads 1
date -u +"end %H:%M:%S"
