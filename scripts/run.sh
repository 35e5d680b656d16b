#!/usr/bin/env bash
# run.sh: set-up, build, then the main job: a short search on the default
# configuration (configs/default.ini: the small reference model at 2-bit
# weights, first and last layer at 8 bits) on 2 MPI ranks, then the test
# accuracy of its round-to-nearest start and of the searched model.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
"$here/scripts/setup.sh"
"$here/scripts/build.sh"
cd "$here"
ranks=${CCQ_RANKS:-2}
echo "== mpirun -np $ranks build/ccq search configs/default.ini"
mpirun --oversubscribe -np "$ranks" build/ccq search configs/default.ini
echo "== round-to-nearest start: build/ccq eval results/models/lenet.h5 --wbits 2 --first-last-8"
build/ccq eval results/models/lenet.h5 --data build/data/fashion-mnist.h5 --wbits 2 --first-last-8
echo "== searched: build/ccq eval build/search/default/model.h5"
build/ccq eval build/search/default/model.h5 --data build/data/fashion-mnist.h5
