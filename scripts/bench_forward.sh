#!/usr/bin/env bash
# bench_forward.sh: one single-core run measuring the integer forward pass of
# the three reference models at batch 256 against PyTorch (FP32 and int8) and the
# machine's int8 MAC ceiling, all in the same run; writes results/forward.md.
# Everything is pinned to one core (taskset) with one thread everywhere.
# Run it on an otherwise idle machine: it measures, it does not assert.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
"$here/scripts/setup.sh" > /dev/null
"$here/scripts/build.sh" > /dev/null
core=${CCQ_BENCH_CORE:-1}
data="$here/build/data/fashion-mnist.h5"
out="$here/build/bench"
mkdir -p "$out"
: > "$out/forward.jsonl"
pin() { OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c "$core" "$@"; }
for m in lenet resnet20 mobilenet; do
  for isa in scalar avx2 avx512vnni; do
    for b in 8 4; do
      if ! CCQ_ISA=$isa "$here/build/ccq" eval "$here/results/models/$m.h5" --data "$data" --wbits 8 --limit 1 > /dev/null 2>&1; then
        echo "{\"model\": \"$m\", \"isa\": \"$isa\", \"wbits\": $b, \"error\": \"not supported on this CPU\"}" >> "$out/forward.jsonl"
        continue
      fi
      extra=""
      [ "$m" != lenet ] && [ "$isa" != scalar ] && extra="--layers"
      [ "$isa" = scalar ] && ms=3000 || ms=4000
      CCQ_ISA=$isa pin "$here/build/ccq" bench "$here/results/models/$m.h5" --data "$data" --wbits "$b" \
        --batch 256 --ms "$ms" --ceiling --json $extra | sed "s/^{/{\"wbits\": $b, /" >> "$out/forward.jsonl"
    done
  done
done
# PyTorch at its best configuration: unset the OpenBLAS core override of this
# machine for this command alone (it slows a current BLAS), one thread.
for m in lenet resnet20 mobilenet; do
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    taskset -c "$core" /usr/bin/python3 "$here/scripts/bench_torch.py" "$m" "$here/results/models/$m.pt" "$data" \
    >> "$out/forward.jsonl"
done
/usr/bin/python3 "$here/scripts/bench_report.py" "$out/forward.jsonl" "$here/results/forward.md" \
  --command "./scripts/bench_forward.sh" --core "$core"
echo "bench_forward: wrote results/forward.md"
