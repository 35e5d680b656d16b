#!/usr/bin/env bash
# run.sh: set-up, build, then the main job. Until the search exists, the main
# job evaluates both reference models on the Fashion-MNIST test split: the
# float reference, then the integer engine with round-to-nearest weights at
# 8 and 4 bits (the starting point the search will improve on).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
"$here/scripts/setup.sh"
"$here/scripts/build.sh"
data="$here/build/data/fashion-mnist.h5"
for m in lenet resnet20; do
  for mode in "--float" "--wbits 8" "--wbits 4"; do
    echo "== ccq eval results/models/$m.h5 --data build/data/fashion-mnist.h5 $mode"
    # shellcheck disable=SC2086
    "$here/build/ccq" eval "$here/results/models/$m.h5" --data "$data" $mode
  done
done
