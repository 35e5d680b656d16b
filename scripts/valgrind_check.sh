#!/usr/bin/env bash
# valgrind_check.sh [OUT_DIR]: ccq eval and a short ccq search (one rank, lenet at 4 bits, on the
# first 1,500 train and 200 test images of Fashion-MNIST) under valgrind memcheck with full leak
# checking. Passes when valgrind reports no error and no definitely lost block whose stack does not
# go through MPI_Init/MPI_Finalize (Open MPI keeps what MPI_Init allocates for the process's life:
# counted and printed, not failed). Assumes build.sh ran (build/ccq, build/data/fashion-mnist.h5).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
out=${1:-$here/build/valgrind}
rm -rf "$out" && mkdir -p "$out"
ccq=$here/build/ccq
/usr/bin/python3 - "$here/build/data/fashion-mnist.h5" "$out/small.h5" <<'PY'
import sys, h5py
src, dst = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "w")
for k, v in src.attrs.items():
    dst.attrs[k] = v
for split, n in (("train", 1500), ("test", 200)):
    g = dst.create_group(split)
    for k, v in src[split].attrs.items():
        g.attrs[k] = v
    for name in src[split]:
        g.create_dataset(name, data=src[split][name][:n])
        for k, v in src[split][name].attrs.items():
            g[name].attrs[k] = v
PY
"$ccq" quantize "$here/results/models/lenet.h5" --data "$out/small.h5" --wbits 4 -o "$out/q4.h5" > /dev/null
vg=(valgrind --num-callers=50 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none --error-exitcode=9
    --suppressions=/usr/share/openmpi/openmpi-valgrind.supp)
status=0
run() { # NAME ARGS...: one command under memcheck; its report in OUT/NAME.vg
  local name=$1; shift
  if ! "${vg[@]}" --log-file="$out/$name.vg" "$ccq" "$@" > "$out/$name.out" 2>&1; then
    echo "valgrind_check: $name: ccq or valgrind failed (see $out/$name.vg)"; status=1
  fi
  /usr/bin/python3 - "$name" "$out/$name.vg" <<'PY' || status=1
import re, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
errors = int(re.search(r"ERROR SUMMARY: (\d+) errors", text).group(1))
blocks = re.split(r"\n==\d+== \n", text)
lost = [b for b in blocks if "are definitely lost" in b]
mpi = [b for b in lost if re.search(r"dist_init|dist_finalize|PMPI_|MPI_Init|MPI_Finalize", b)]
ours = [b for b in lost if b not in mpi]
nbytes = lambda bs: sum(int(re.search(r"([\d,]+) (?:\([\d,]+ direct, [\d,]+ indirect\) )?bytes", b).group(1).replace(",", "")) for b in bs)
print(f"valgrind_check: {name}: {errors} memory errors; definitely lost: {len(ours)} blocks outside MPI "
      f"({nbytes(ours)} bytes), {len(mpi)} records under MPI_Init/Finalize ({nbytes(mpi)} bytes)")
for b in ours:
    print(b)
sys.exit(1 if errors or ours else 0)
PY
}
run eval eval "$out/q4.h5" --data "$out/small.h5"
run search search "$here/configs/lenet_w4a8.ini" --set model.model="$out/q4.h5" --set model.data="$out/small.h5" \
  --set run.budget=40 --set search.lambda=4 --set search.batch=64 --set search.confirm_batch=64 \
  --set search.val_images=100 --set run.checkpoint_every=4 --set run.output="$out/s/out.h5" \
  --set run.log="$out/s/log.jsonl" --set run.checkpoint="$out/s/ckpt.h5"
exit $status
