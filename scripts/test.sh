#!/usr/bin/env bash
# test.sh: set-up, build, then every test through ctest, except those labelled `slow` (minutes
# each: the Python GPTQ oracle on ResNet-20, the C export of ResNet-20 on all 1,000 images under
# qemu-arm); CCQ_TEST_SLOW=1 runs those too. Extra arguments go to ctest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
"$here/scripts/setup.sh"
"$here/scripts/build.sh"
cd "$here/build"
if [ "${CCQ_TEST_SLOW:-0}" = 1 ]; then
  ctest --output-on-failure -j "$(nproc)" "$@"
else
  ctest --output-on-failure -j "$(nproc)" -LE slow "$@"
fi
