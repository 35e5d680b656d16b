#!/usr/bin/env bash
# search_record.sh NAME CONFIG START [--set section.key=value]...: one measured search run, kept
# as a record for results/: runs `ccq search CONFIG` on 2 ranks (CCQ_NP to change) from the
# model START with outputs in build/exp/NAME/, then writes results/search_runs/NAME/ with the
# command, the effective configuration the search echoed, the log (reproducible bit for bit),
# its timing side file, and `result`: the loop's wall-clock and evaluations/s, ccq eval's test
# accuracy of the model kept, and that of every snapshot (run.snapshots) against its generation.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
source scripts/env.sh
[ $# -ge 3 ] || { echo "usage: search_record.sh NAME CONFIG START [--set section.key=value]..." >&2; exit 2; }
name=$1 cfg=$2 start=$3; shift 3
np=${CCQ_NP:-2}
out=build/exp/$name rec=results/search_runs/$name
data=build/data/fashion-mnist.h5
rm -rf "$out" && mkdir -p "$out" "$rec"
cmd=(mpirun --oversubscribe -np "$np" build/ccq search "$cfg" --set "model.model=$start" "$@"
     --set "run.output=$out/model.h5" --set "run.log=$out/log.jsonl" --set "run.checkpoint=$out/checkpoint.h5")
echo "${cmd[*]}" > "$rec/command"
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include || echo ' (plus uncommitted changes to src/include)'); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" >> "$rec/command"
"${cmd[@]}" > "$out/stdout" 2> "$out/stderr"
sed -n '/^\[/,$p' "$out/stdout" > "$rec/config.ini" || true
cp "$out/log.jsonl" "$out/log.jsonl.time" "$rec/"
"$CCQ_PYTHON" - "$out" > "$rec/result" <<'EOF'
import glob, json, re, subprocess, sys
out = sys.argv[1]
t = [json.loads(l) for l in open(out + "/log.jsonl.time")]
n = [json.loads(l) for l in open(out + "/log.jsonl")][-1].get("evaluations", 0)
print(f"search loop wall-clock {t[-1]['elapsed']:.1f} s (LOG.time), {n / t[-1]['elapsed']:.2f} evaluations/s")
def acc(m):
    r = subprocess.run(["build/ccq", "eval", m, "--data", "build/data/fashion-mnist.h5"], capture_output=True, text=True, check=True)
    return float(re.search(r"^accuracy\s+([0-9.]+)%", r.stdout, re.M).group(1))
print(f"test accuracy of the model kept: {acc(out + '/model.h5'):.2f}%")
snaps = sorted(glob.glob(out + "/model.g*.h5"))
print("snapshots (gen, test accuracy %):", json.dumps([[int(re.search(r"\.g(\d+)\.h5$", s).group(1)), acc(s)] for s in snaps]))
EOF
cat "$rec/result"
