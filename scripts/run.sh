#!/usr/bin/env bash
# run.sh: set-up, build, then the main job. Until the search exists, the main
# job is the float reference evaluation of both reference models on the
# Fashion-MNIST test split (the accuracy every later result is measured against).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
"$here/scripts/setup.sh"
"$here/scripts/build.sh"
data="$here/build/data/fashion-mnist.h5"
for m in lenet resnet20; do
  echo "== ccq eval results/models/$m.h5 --data build/data/fashion-mnist.h5 --float"
  "$here/build/ccq" eval "$here/results/models/$m.h5" --data "$data" --float
done
