#!/usr/bin/env python3
"""bench_search.py [--quick]: the search's speed, written to
results/search_speed.md: evaluations per second (one evaluation = one
forward pass of a fitness batch, the unit of run.budget) in total and per
rank, on 1 and 2 ranks, for both reference models at w4a8, and the share of
rank 0's time spent in the integer forward pass (the rest: sampling,
repacking changed layers, fitness arithmetic, the EDA update, MPI, logs,
validation passes count as forward). Figures come from the timing side file
(LOG.time) of short real searches with the shipped configurations. Run it
alone on the machine: it measures wall-clock."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import commit, cpu_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CCQ = os.path.join(ROOT, "build", "ccq")
RUNS = [("lenet", "configs/lenet_w4a8.ini", 3000), ("resnet20", "configs/resnet20_w4a8.ini", 400)]


def search(cfg, np_, budget, d):
    cmd = ["mpirun", "--oversubscribe", "-np", str(np_), CCQ] if np_ > 1 else [CCQ]
    cmd += ["search", os.path.join(ROOT, cfg), "--set", f"run.budget={budget}", "--set", f"run.output={d}/m.h5",
            "--set", f"run.log={d}/log.jsonl", "--set", f"run.checkpoint={d}/ckpt.h5"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"bench_search: {' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    last = [json.loads(l) for l in open(f"{d}/log.jsonl.time")][-1]
    return last, " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)


def main():
    # Open MPI refuses root without these (as scripts/env.sh sets them)
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    quick = "--quick" in sys.argv
    rows, cmds = [], []
    for name, cfg, budget in RUNS:
        if quick:
            budget //= 10
        for np_ in (1, 2):
            with tempfile.TemporaryDirectory() as d:
                t, cmd = search(cfg, np_, budget, d)
            cmds.append(cmd)
            rate = t["evaluations_per_s"]
            rows.append(f"| {name} w4a8 | {np_} | {rate:.1f} | {rate / np_:.1f} | {100 * t['forward_share_rank0']:.1f}% "
                        f"| {t['elapsed']:.1f} s |")
            print(rows[-1], flush=True)
    out = os.path.join(ROOT, "results", "search_speed.md")
    with open(out + ".tmp", "w") as f:
        f.write("# Search speed\n\n")
        f.write(f"Measured by `scripts/bench_search.py` (commit {commit(ROOT)}, CPU {cpu_model()}, "
                f"{os.cpu_count()} cores), the shipped configs (batch 1,024 images, lambda 32, confirmation on "
                "4,096 images), one evaluation = one forward pass of a batch (a confirmation pass of 4,096 images also counts as "
                "one).\n\n")
        f.write("| model | ranks | evaluations/s | per rank | rank 0 time in the forward pass | wall-clock of the run |\n")
        f.write("|---|---|---|---|---|---|\n")
        f.write("\n".join(rows) + "\n\nCommands:\n\n```\n" + "\n".join(cmds) + "\n```\n")
    os.replace(out + ".tmp", out)
    print(f"bench_search: wrote {out}")


if __name__ == "__main__":
    main()
