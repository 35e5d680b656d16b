#!/usr/bin/env bash
# test_sanitize.sh: builds ccq and its tests with AddressSanitizer and UndefinedBehaviorSanitizer
# (cmake -DCCQ_SANITIZE=ON, in build-asan/) and runs the tests labelled unit, cli and mpi there
# (but `search`, see below), or the ctest selection given as arguments (e.g. -LE slow for everything). Any ASan error,
# UBSan report or leak outside tests/sanitize/lsan.supp fails its test. Assumes setup.sh ran.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
cmake -S "$here" -B "$here/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCCQ_SANITIZE=ON > /dev/null
cmake --build "$here/build-asan" -j "$(nproc)"
# full stacks on malloc (slower), so that leaks inside MPI_Init match the suppressions by library
export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:abort_on_error=0:exitcode=99:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98"
export LSAN_OPTIONS="suppressions=$here/tests/sanitize/lsan.supp:print_suppressions=0"
cd "$here/build-asan"
# Default: the unit, cli and mpi tests but the long `search` (18 minutes under ASan on the 2-core
# machine against 2.5 without; run it with -R '^search$').
if [ $# -eq 0 ]; then set -- -L "unit|cli|mpi" -E "^search$"; fi
ctest --output-on-failure -j "$(nproc)" "$@"
