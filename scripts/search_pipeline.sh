#!/usr/bin/env bash
# search_pipeline.sh MODEL BITS [NP] [--set section.key=value]...: the pipeline behind
# results/search.md for one reference model (lenet | resnet20) at BITS (2..4), which is one
# `ccq search` from the float model (README.md, "ccq search"):
#   1. the start: quant.init = auto (round-to-nearest, GPTQ with the file's scales and with the
#      scale search, computed in C; the one with the highest TRAIN-split accuracy; the test split
#      is never used to choose),
#   2. the search with configs/MODEL_wBITSa8.ini on NP ranks (default 2), the model kept by
#      validation written to build/pipeline/MODEL_wBITS/model.h5,
#   3. the test accuracy of the start and of the result, printed at the end.
# Extra --set arguments go to ccq search after these (they win). A start alone, for other tools:
# build/ccq quantize results/models/MODEL.h5 --data D --wbits BITS --init auto -o START.h5.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
source scripts/env.sh
[ $# -ge 2 ] || { echo "usage: search_pipeline.sh MODEL BITS [NP] [--set section.key=value]..." >&2; exit 2; }
model=$1 bits=$2; shift 2
np=2
if [ $# -gt 0 ] && [[ $1 != --* ]]; then np=$1; shift; fi
cfg=configs/${model}_w${bits}a8.ini
[ -f "$cfg" ] || { echo "search_pipeline.sh: $cfg: no such configuration" >&2; exit 2; }
d=build/pipeline/${model}_w${bits}
mkdir -p "$d"
exec mpirun --oversubscribe -np "$np" build/ccq search "$cfg" --set "model.model=results/models/$model.h5" \
  --set quant.init=auto --set "run.output=$d/model.h5" --set "run.log=$d/log.jsonl" \
  --set "run.checkpoint=$d/checkpoint.h5" "$@"
