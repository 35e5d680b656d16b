#!/usr/bin/env bash
# test_mpich.sh: ccq built against MPICH (Debian's mpich, libmpich-dev, libhdf5-mpich-dev: setup.sh
# installs them beside Open MPI) in build-mpich/, pointed to it the way README.md's "Site MPI modules"
# documents, and the tests labelled mpi run there under MPICH's launcher (mpiexec.mpich): the
# search's reproducibility and resume tests, and mpi_cross, which resumes under MPICH checkpoints
# written under Open MPI by build/ccq and the other way round. Assumes setup.sh and build.sh ran
# (test.sh runs both). Only ccq is built (the mpi tests need nothing else); arguments replace the
# ctest selection (e.g. -R mpi_cross). Needs build/ccq current: checkpoints of other sources may differ.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
arch=$(gcc -print-multiarch)
for f in /usr/bin/mpicc.mpich /usr/bin/mpiexec.mpich "/usr/lib/$arch/hdf5/mpich/libhdf5.so" /usr/bin/mpiexec.openmpi; do
  [ -e "$f" ] || { echo "test_mpich: $f missing: run scripts/setup.sh" >&2; exit 1; }
done
# the Open MPI side of mpi_cross: build/ccq, built from the same sources (CCQ_CROSS_CCQ: another one)
cross=${CCQ_CROSS_CCQ:-$here/build/ccq}
[ -x "$cross" ] || {
  echo "test_mpich: $cross missing (the Open MPI build, for mpi_cross): run scripts/build.sh" >&2; exit 1; }
mkdir -p "$here/build-mpich"
cmake -S "$here" -B "$here/build-mpich" -DCMAKE_BUILD_TYPE=Release \
  -DMPI_C_COMPILER=/usr/bin/mpicc.mpich -DMPIEXEC_EXECUTABLE=/usr/bin/mpiexec.mpich \
  -DHDF5_ROOT="/usr/lib/$arch/hdf5/mpich" \
  -DCCQ_CROSS_CCQ="$cross" -DCCQ_CROSS_MPIEXEC=/usr/bin/mpiexec.openmpi \
  > "$here/build-mpich/cmake.log" 2>&1 || { cat "$here/build-mpich/cmake.log" >&2; exit 1; }
rm -f "$here/build-mpich/cmake.log"
cmake --build "$here/build-mpich" -j "$(nproc)" --target ccq
cd "$here/build-mpich"
# The tests labelled mpi (`hosts`, about Open MPI's TCP transport between namespaced hosts, is
# labelled cluster). `stall` stops a search with SIGUSR1 sent to rank 0 under MPICH, not to the
# launcher: Debian 12's Hydra (MPICH 4.0.2) forwards it, every rank exits 7, and mpiexec still
# returns 0 about one time in seven (the same with a 10-line Python program for ranks; Hydra's
# exit-status race after a forwarded signal, cf. pmodels/mpich#5930 and #7057).
if [ $# -eq 0 ]; then set -- -L mpi; fi
ctest --output-on-failure "$@"
