#!/usr/bin/env bash
# fuzz.sh SECONDS [HARNESS...]: fuzz ccq's file loaders with libFuzzer (ASan + UBSan).
#
# Builds build-fuzz/ with clang and -DCCQ_FUZZ=ON (everything instrumented), then runs each
# harness of tests/fuzz/ (default all: cfg model data ckpt) for SECONDS, one after the other, on
# one core. Each starts from its committed seeds (tests/fuzz/corpus/H) and regressions
# (tests/fuzz/regress/H) plus what earlier runs added to build-fuzz/corpus/H, where new inputs go.
# A crash, leak, hang (-timeout, 10 s) or out-of-memory (-rss_limit_mb, 2 GB) stops libFuzzer,
# which is then started again until SECONDS are used: each such input is written to
# build-fuzz/crashes/H/ with its report (.log), the count printed. Run logs: build-fuzz/logs/H/.
# Replay one with `build-fuzz/tests/fuzz/fuzz_H FILE`; once the loader is fixed, copy it into
# tests/fuzz/regress/H/, which the normal suite replays (ctest fuzz_replay).
# Prints per harness: executions, libFuzzer starts, corpus size, failing inputs (by kind: crash,
# leak, timeout, oom); exit 1 if any is ccq's. Memory errors inside libhdf5 itself are moved to
# build-fuzz/crashes/H/hdf5/ and counted apart (tests/fuzz/hdf5/README.md): they cannot be fixed in
# ccq's loaders.
#
# Not part of setup.sh: it needs clang and its libFuzzer runtime, which only fuzzing needs; they
# are installed here (Debian 12: clang, libclang-rt-14-dev).
#
# HDF5 is Debian's uninstrumented library: a bad access inside it is seen only when it goes
# through a sanitizer's interceptor (memcpy, strdup, ..) or faults. Leaks whose allocation happened inside libhdf5 (its own error paths on damaged metadata)
# are suppressed (tests/fuzz/lsan.supp); HDF5 objects left open by ccq are caught by the harnesses
# themselves. allocator_may_return_null=1 lets HDF5 see a failed malloc for a damaged size field as
# it would outside ASan; ccq's own allocations end the process on failure (exit 6), which libFuzzer
# reports ("fuzz target exited"), so they still count.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-}
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || { echo "usage: fuzz.sh SECONDS [cfg|model|data|ckpt ...]" >&2; exit 2; }
shift
harnesses=("$@")
[ "${#harnesses[@]}" -gt 0 ] || harnesses=(cfg model data ckpt)

# clang and libFuzzer's runtime (with the sanitizers'): Debian 12's clang 14
pkgs=(clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "fuzz: installing ${missing[*]}" >&2
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

bd="$here/build-fuzz"
targets=()
for h in "${harnesses[@]}"; do
  [ -d "$here/tests/fuzz/corpus/$h" ] || { echo "fuzz: unknown harness '$h' (cfg, model, data, ckpt)" >&2; exit 2; }
  targets+=("fuzz_$h")
done
CC=clang cmake -S "$here" -B "$bd" -DCCQ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$bd.cmake.log" 2>&1 || {
  cat "$bd.cmake.log" >&2; exit 1; }
rm -f "$bd.cmake.log"
cmake --build "$bd" -j 1 --target "${targets[@]}" > "$bd/build.log" 2>&1 || { tail -n 40 "$bd/build.log" >&2; exit 1; }

# The harnesses write each input to a file under $TMPDIR (the loaders take paths): a private
# folder, in memory (/dev/shm) where that exists and is writable, else under the caller's TMPDIR;
# removed on exit.
shm_ok() { [ -d /dev/shm ] && [ -w /dev/shm ]; }
if shm_ok; then
  tmp=$(mktemp -d /dev/shm/ccq-fuzz.XXXXXX)
else
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ccq-fuzz.XXXXXX")
fi
trap 'rm -rf "$tmp"' EXIT
export TMPDIR="$tmp"
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$here/tests/fuzz/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

# the first stack frame of a report that is neither the sanitizers' runtime (inside the harness
# binary, no source line) nor libc: where the fault is
first_frame() {
  grep -E '^ +#[0-9]+ 0x' "$1" |
    grep -vE '__interceptor_|__asan_|__sanitizer|__ubsan|libc\.so|\(/[^ )]*/fuzz_[a-z]+\+0x' | head -n 1 || true
}

found=0
printf '%-6s %12s %8s %6s %8s  %s\n' harness executions exec/s runs corpus "failing inputs"
for h in "${harnesses[@]}"; do
  corpus="$bd/corpus/$h" crashes="$bd/crashes/$h" logs="$bd/logs/$h"
  mkdir -p "$corpus" "$crashes" "$logs"
  rm -f "$logs"/run-*.log
  seeds=("$here/tests/fuzz/corpus/$h")
  [ -d "$here/tests/fuzz/regress/$h" ] && seeds+=("$here/tests/fuzz/regress/$h")
  # libFuzzer stops at the first failing input: start it again (from the grown corpus) until the
  # time is used up, so that one failure does not end the campaign
  end=$((SECONDS + secs)) execs=0 runs=0 ours=0 hdf5=0 kinds=""
  while [ "$SECONDS" -lt "$end" ]; do
    runs=$((runs + 1))
    log="$logs/run-$runs.log"
    rc=0
    # the seeds are read, never written: new inputs go to the first folder only
    "$bd/tests/fuzz/fuzz_$h" -timeout=10 -rss_limit_mb=2048 -max_total_time=$((end - SECONDS)) \
      -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" "${seeds[@]}" > "$log" 2>&1 || rc=$?
    n=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    [ -n "$n" ] || n=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
    execs=$((execs + ${n:-0}))
    [ "$rc" -ne 0 ] || continue
    art=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
    if [ -z "$art" ] && [ "$rc" -eq 4 ] && grep -q "HDF5 failed or hung reading this string" "$log"; then
      # h5io's watchdog: HDF5 itself looped or faulted on a damaged string and ccq exited 4 with one
      # line, as the contract asks (libFuzzer writes no input for a clean exit): HDF5's, not ccq's
      echo "fuzz: $h: run $runs: HDF5 hung or faulted on a damaged string, ccq's watchdog exited 4 (see $log)" >&2
      hdf5=$((hdf5 + 1)); continue
    fi
    if [ -z "$art" ] || [ ! -f "$art" ]; then
      echo "fuzz: $h: run $runs ended with $rc and no input written (see $log)" >&2
      ours=$((ours + 1)); continue
    fi
    kind=$(basename "$art"); kind=${kind%%-*}
    report="$log"
    if [ "$kind" = oom ]; then
      # exceeding the RSS limit names no culprit (at most the stacks of whatever is resident, often
      # libFuzzer's own corpus): replay with a malloc limit to find the allocation (ASan makes a huge
      # malloc resident where glibc's stays lazy)
      report="$log.malloc"
      timeout 120 "$bd/tests/fuzz/fuzz_$h" -rss_limit_mb=4096 -malloc_limit_mb=1024 "$art" > "$report" 2>&1 || true
    fi
    # a memory error, hang or huge allocation whose first frame is inside libhdf5 is HDF5's own
    # decoding of damaged metadata, not ccq's: counted apart, kept in hdf5/
    if first_frame "$report" | grep -q libhdf5; then
      hdf5=$((hdf5 + 1)); mkdir -p "$crashes/hdf5"; mv "$art" "$crashes/hdf5/"; cp "$log" "$crashes/hdf5/$(basename "$art").log"
    else
      ours=$((ours + 1)); kinds+=" $kind"; cp "$log" "$art.log"
    fi
  done
  size=$(find "$corpus" -type f | wc -l)
  printf '%-6s %12s %8s %6s %8s  %s\n' "$h" "$execs" "$((execs / (secs > 0 ? secs : 1)))" "$runs" "$size" \
    "$ours in ccq${kinds:+ (${kinds# })}, $hdf5 inside libhdf5"
  [ "$ours" -eq 0 ] || found=1
done
[ "$found" -eq 0 ] || echo "fuzz: inputs that failed are in $bd/crashes/HARNESS/, each with its report (.log)" >&2
exit "$found"
