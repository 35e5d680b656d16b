#!/usr/bin/env bash
# test.sh: set-up, build, then every test through ctest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/env.sh"
"$here/scripts/setup.sh"
"$here/scripts/build.sh"
cd "$here/build"
ctest --output-on-failure -j "$(nproc)" "$@"
