#!/usr/bin/env bash
# search_pipeline.sh MODEL BITS [NP] [--set section.key=value]...: the pipeline behind
# results/search.md for one reference model (lenet | resnet20) at BITS (2..4):
#   1. round-to-nearest start (ccq quantize),
#   2. GPTQ twice (scripts/gptq.py: the file's max-abs scales, and --scale-search),
#   3. the start with the highest TRAIN-split accuracy of the three (the test split is never
#      used to choose),
#   4. ccq search with configs/MODEL_wBITSa8.ini from that start on NP ranks (default 2),
#   5. test accuracy of every stage with ccq eval.
# Outputs in build/pipeline/MODEL_wBITS/. Extra --set arguments go to ccq search.
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
data=build/data/fashion-mnist.h5
d=build/pipeline/${model}_w${bits}
mkdir -p "$d"
acc() { build/ccq eval "$1" --data "$data" "${@:2}" | awk '/^accuracy/ {print $2}' | tr -d %; }
build/ccq quantize "results/models/$model.h5" --data "$data" --wbits "$bits" -o "$d/rtn.h5" > /dev/null
"$CCQ_PYTHON" scripts/gptq.py "$d/rtn.h5" "$data" "$d/gptq.h5"
"$CCQ_PYTHON" scripts/gptq.py "$d/rtn.h5" "$data" "$d/gptqs.h5" --scale-search
best="" bacc=-1
for s in rtn gptq gptqs; do
  a=$(acc "$d/$s.h5" --split train)
  echo "search_pipeline: $s: train accuracy $a%, test accuracy $(acc "$d/$s.h5")%"
  if awk -v a="$a" -v b="$bacc" 'BEGIN {exit !(a > b)}'; then best=$s bacc=$a; fi
done
echo "search_pipeline: starting from $best"
mpirun --oversubscribe -np "$np" build/ccq search "$cfg" --set "model.model=$d/$best.h5" \
  --set "run.output=$d/model.h5" --set "run.log=$d/log.jsonl" --set "run.checkpoint=$d/checkpoint.h5" "$@"
echo "search_pipeline: searched: test accuracy $(acc "$d/model.h5")%"
