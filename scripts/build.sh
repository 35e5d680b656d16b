#!/usr/bin/env bash
# build.sh: configure and build ccq (Release) into build/. Assumes setup.sh ran.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=Release > "$here/build.cmake.log" 2>&1 || {
  cat "$here/build.cmake.log" >&2; exit 1; }
rm -f "$here/build.cmake.log"
cmake --build "$here/build" -j "$(nproc)"
