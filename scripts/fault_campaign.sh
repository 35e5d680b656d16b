#!/bin/bash
# fault_campaign.sh: kills `ccq search` at random moments and resumes it, and checks that nothing is
# lost (issue 11 item 5). A reference search runs to completion on 2 ranks; then, N times for each
# kind (SIGKILL to rank 0, SIGKILL to another rank, SIGTERM to all ranks, SIGKILL to all inside a
# checkpoint write), the same search is killed and resumed with --resume on a random rank count
# (1-4) until it completes, and its final model, log and snapshots must be byte-identical to the
# reference; after every kill every HDF5 file on disk must open, and the generations lost must be
# within run.checkpoint_every. Also an unwritable output (exit 3 before any compute, nothing
# written) and a full disk during a checkpoint (small tmpfs; needs root for mount). Writes a
# markdown summary. The work is in scripts/fault_campaign.py.
#
# usage: scripts/fault_campaign.sh [-n N] [-o OUT_DIR] [-s SUMMARY.md] [--seed S] [--ccq BIN]
#                                  [--kinds kill0,killN,term,ckpt] [--no-special] [--keep]
#   N        kills per kind (default 20)
#   OUT_DIR  run folders (default build/fault); chains that end bit-identical are removed unless --keep
#   SUMMARY  the markdown summary (default OUT_DIR/summary.md)
#   BIN      the ccq binary (default build/ccq)
#   --commit C  the commit BIN was built from, when not the tree's HEAD (stated in the summary)
# Exit status: 0 when every case held, 1 when something failed (listed under "Findings").
# Runs nice'd, at most 4 ranks at a time (oversubscribed: mpirun --oversubscribe).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=20 OUT=build/fault SUMMARY= SEED=1 CCQ=build/ccq EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N=$2; shift 2 ;;
        -o) OUT=$2; shift 2 ;;
        -s) SUMMARY=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --ccq) CCQ=$2; shift 2 ;;
        --kinds) EXTRA+=(--kinds "$2"); shift 2 ;;
        --commit) EXTRA+=(--commit "$2"); shift 2 ;;
        --no-special | --keep | --no-linebuf) EXTRA+=("$1"); shift ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "fault_campaign.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
SUMMARY=${SUMMARY:-$OUT/summary.md}
[ -x "$CCQ" ] || { echo "fault_campaign.sh: $CCQ: no ccq binary (scripts/build.sh, or --ccq BIN)" >&2; exit 2; }
source scripts/env.sh
mkdir -p "$OUT"

# The search: the shipped lenet w2a8 configuration, shortened to ~150 generations (10-20 s on 2
# ranks) with a checkpoint every 20; a GPTQ start (on 256 images, so a fresh start costs ~3 s) so
# that every resume also restores the start from the checkpoint instead of recomputing it.
CONFIG=configs/lenet_w2a8.ini
SETS=(quant.init=gptq quant.calib_images=256 search.val_images=1000 run.budget=5000 run.checkpoint_every=20)
ARGS=(--ccq "$CCQ" --root "$ROOT" --config "$CONFIG" --out "$OUT" --summary "$SUMMARY" -n "$N" --seed "$SEED")
for s in "${SETS[@]}"; do ARGS+=(--set "$s"); done
t0=$(date +%s)
rc=0
nice -n 10 /usr/bin/python3 scripts/fault_campaign.py "${ARGS[@]}" "${EXTRA[@]}" \
    --command "scripts/fault_campaign.sh -n $N -o $OUT -s $SUMMARY --seed $SEED --ccq $CCQ ${EXTRA[*]}" || rc=$?
echo "fault_campaign.sh: wall time $(( $(date +%s) - t0 )) s; summary in $SUMMARY; exit $rc"
exit $rc
