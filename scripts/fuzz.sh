#!/usr/bin/env bash
# fuzz.sh SECONDS [HARNESS...]: fuzz ccq's file loaders with libFuzzer (ASan + UBSan).
#
# Builds build-fuzz/ with clang and -DCCQ_FUZZ=ON (everything instrumented), then runs each
# harness of tests/fuzz/ (default all: cfg model data ckpt) for SECONDS, one after the other, on
# one core. Each starts from its committed seeds (tests/fuzz/corpus/H) and regressions
# (tests/fuzz/regress/H) plus what earlier runs added to build-fuzz/corpus/H, where new inputs go.
# A crash, leak, hang (-timeout, 10 s) or out-of-memory (-rss_limit_mb, 2 GB) does not end the
# run (-fork=1 -ignore_*): each such input is written to build-fuzz/crashes/H/, the count printed.
# Replay one with `build-fuzz/tests/fuzz/fuzz_H FILE`; once the loader is fixed, copy it into
# tests/fuzz/regress/H/, which the normal suite replays (ctest fuzz_replay).
# Prints per harness: executions, corpus size, failing inputs (by kind: crash, leak, timeout, oom);
# exit 1 if any is ccq's. Memory errors inside libhdf5 itself are moved to build-fuzz/crashes/H/hdf5/
# and counted apart (tests/fuzz/hdf5/README.md): they cannot be fixed in ccq's loaders.
#
# Not part of setup.sh: it needs clang and its libFuzzer runtime, which only fuzzing needs; they
# are installed here (Debian 12: clang, libclang-rt-14-dev).
#
# HDF5 is Debian's uninstrumented library: a read past a buffer inside it is not seen unless it
# faults. Leaks whose allocation happened inside libhdf5 (its own error paths on damaged metadata)
# are suppressed (tests/fuzz/lsan.supp); HDF5 objects left open by ccq are caught by the harnesses
# themselves. allocator_may_return_null=1 lets HDF5 see a failed malloc for a damaged size field as
# it would outside ASan; ccq's own allocations abort on failure, so they still count as crashes.
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

# the temporary input file each execution writes: in memory where possible
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ccq-fuzz.XXXXXX")
[ -d /dev/shm ] && [ -w /dev/shm ] && { rmdir "$tmp"; tmp=$(mktemp -d /dev/shm/ccq-fuzz.XXXXXX); }
trap 'rm -rf "$tmp"' EXIT
export TMPDIR="$tmp"
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$here/tests/fuzz/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

found=0
printf '%-6s %12s %8s %8s  %s\n' harness executions exec/s corpus "failing inputs (by kind)"
for h in "${harnesses[@]}"; do
  corpus="$bd/corpus/$h" crashes="$bd/crashes/$h" log="$bd/fuzz-$h.log"
  mkdir -p "$corpus" "$crashes"
  seeds=("$here/tests/fuzz/corpus/$h")
  [ -d "$here/tests/fuzz/regress/$h" ] && seeds+=("$here/tests/fuzz/regress/$h")
  touch "$log.start"
  # the seeds are read, never written: new inputs go to the first folder only
  "$bd/tests/fuzz/fuzz_$h" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -timeout=10 -rss_limit_mb=2048 -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$crashes/" "$corpus" "${seeds[@]}" > "$log" 2>&1 || true
  # fork mode's progress lines: "#EXECS: cov: .. corp: N exec/s E oom/timeout/crash: a/b/c time: .."
  last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -n 1 || true)
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<< "$last")
  rate=$(sed -nE 's/.*exec\/s:? ([0-9]+).*/\1/p' <<< "$last")
  size=$(find "$corpus" -type f | wc -l)
  kinds="" ours=0
  for k in crash leak timeout oom slow-unit; do
    c=$(find "$crashes" -type f -name "$k-*" -newer "$log.start" 2>/dev/null | wc -l || true)
    [ "$c" = 0 ] || kinds+=" $k $c"
  done
  # triage: a memory error whose first frame past the sanitizer's interceptors is inside libhdf5
  # is HDF5's own (its decoding of damaged metadata), not ccq's: counted apart, kept in hdf5/
  hdf5=0
  while IFS= read -r a; do
    [ -n "$a" ] || continue
    first=$(timeout 120 "$bd/tests/fuzz/fuzz_$h" -rss_limit_mb=2048 -timeout=10 "$a" 2>&1 | grep -E '^ +#[0-9]+ 0x' |
            grep -vE '__interceptor_|__asan_|__sanitizer|libc\.so|in (malloc|calloc|realloc|free|memcpy|memmove|memset) ' |
            head -n 1 || true)
    if grep -q libhdf5 <<< "$first"; then
      hdf5=$((hdf5 + 1)); mkdir -p "$crashes/hdf5"; mv "$a" "$crashes/hdf5/"
    else
      ours=$((ours + 1))
    fi
  done < <(find "$crashes" -maxdepth 1 -type f -newer "$log.start")
  printf '%-6s %12s %8s %8s  %s\n' "$h" "${execs:-?}" "${rate:-?}" "$size" \
    "$ours in ccq, $hdf5 inside libhdf5${kinds:+ (${kinds# })}"
  [ "$ours" -eq 0 ] || found=1
  rm -f "$log.start"
done
[ "$found" -eq 0 ] || echo "fuzz: inputs that failed are in $bd/crashes/ (see $bd/fuzz-HARNESS.log)" >&2
exit "$found"
