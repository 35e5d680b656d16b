#!/usr/bin/env python3
"""ste_sweep.py START.h5 DATA.h5 OUTDIR [--lrs 3e-4,1e-3,3e-3] [--epochs 1,2,3]
[--threads 2] [--eval-every K] [--batch B] [--val-images V] [--radius R]
[--schedule cosine|constant] [--warmup W] [--seed S] [--resume]: the STE
baseline (scripts/ste_finetune.py) over a grid of peak learning rates (levels
per step) and epochs, chosen by validation.

Every (lr, epochs) pair runs ste_finetune.py once, from the same START.h5, on
the same data, labels, threads and held-out validation images, with --curve;
the runs are sequential (never two at once: they time themselves on the same
cores). Run (lr, E) writes OUTDIR/lr{lr}_e{E}/ (numbers as %g): ste.h5 (the
chosen levels), curve.json (validation and the chosen checkpoint's test
accuracy against wall-clock, see ste_finetune.py), summary.txt (its summary
line) and run.json (its settings and results, written last). One progress
line per finished run goes to stdout.

OUTDIR/sweep.json (rewritten atomically after every run; "done": true at the
end) holds the common settings, every run's settings, chosen validation
cross-entropy and accuracy, the engine's test accuracy of its output, its
wall-clock (`seconds`: the fine-tune's training and validation passes, as the
curve counts them; `wall_seconds`: the whole process, loading and test
evaluations included) and `best`: the run with the lowest chosen validation
cross-entropy (the first in grid order on a tie). The test split never
chooses anything. --resume reuses a run whose run.json records the same
settings and whose files are present (an interrupted sweep continues).

Bad input (a missing file, a malformed list, a failing run) ends the sweep
with exit 1 and one line `ste_sweep: ...` on stderr. It does not plot and
does not parallelise runs; it does not import PyTorch itself.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FINETUNE = os.path.join(HERE, "ste_finetune.py")


def die(msg):
    print(f"ste_sweep: {msg}", file=sys.stderr)
    sys.exit(1)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 1, as for every other bad input
        die(message)


def floats(text, flag):
    """A comma-separated list of distinct positive numbers, in the given order."""
    out = []
    for tok in text.split(","):
        try:
            v = float(tok)
        except ValueError:
            die(f"{flag}: {tok.strip()!r} is not a number")
        if not v > 0 or v == float("inf"):
            die(f"{flag}: {tok.strip()} must be a positive finite number")
        if v in out:
            die(f"{flag}: {tok.strip()} given twice")
        out.append(v)
    return out


def ccq_binary():
    b = os.environ.get("CCQ_BIN") or os.path.join(os.path.dirname(HERE), "build", "ccq")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        die(f"{b}: no ccq binary (set CCQ_BIN or build ROOT/build/ccq)")
    return os.path.abspath(b)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_one(settings, common, rundir, ccq, resume):
    """One fine-tune; returns its run.json record (reused when --resume and unchanged)."""
    model, curve_p = os.path.join(rundir, "ste.h5"), os.path.join(rundir, "curve.json")
    run_p = os.path.join(rundir, "run.json")
    if resume:
        old = read_json(run_p)
        if old and old.get("settings") == settings and os.path.isfile(model) and os.path.isfile(curve_p):
            old["reused"] = True
            return old
    os.makedirs(rundir, exist_ok=True)
    for p in (run_p, model, curve_p):  # a rerun leaves no stale result behind
        if os.path.exists(p):
            os.remove(p)
    cmd = [sys.executable, FINETUNE, common["start"], common["data"], model,
           "--lr", repr(settings["lr"]), "--epochs", repr(settings["epochs"]),
           "--batch", str(common["batch"]), "--threads", str(common["threads"]),
           "--eval-every", str(common["eval_every"]), "--val-images", str(common["val_images"]),
           "--radius", str(common["radius"]), "--schedule", common["schedule"],
           "--warmup", str(common["warmup"]), "--seed", str(common["seed"]), "--curve", curve_p]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CCQ_BIN=ccq))
    wall = time.perf_counter() - t0
    tag = f"lr {settings['lr']:g} epochs {settings['epochs']:g}"
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines()
        die(f"{tag}: ste_finetune.py failed ({lines[-1] if lines else f'exit {p.returncode}'})")
    with open(os.path.join(rundir, "summary.txt"), "w") as f:
        f.write(p.stdout)
    curve = read_json(curve_p)
    if not curve or not curve.get("done") or not curve.get("records"):
        die(f"{curve_p}: missing or incomplete after the run")
    last = curve["records"][-1]
    best_rec = next(r for r in curve["records"] if r["step"] == last["best_step"])
    rec = {"settings": settings, "dir": os.path.basename(rundir), "model": model, "curve": curve_p,
           "steps": curve["steps"], "best_step": last["best_step"], "val_xent": last["best_val_xent"],
           "val_acc": best_rec["val_acc"], "test_acc": last["test_acc"], "seconds": curve["seconds"],
           "wall_seconds": wall, "reused": False}
    write_json(run_p, rec)
    return rec


def main():
    ap = Parser(description="The STE baseline over a grid of learning rates and epochs, chosen by validation.")
    ap.add_argument("start")
    ap.add_argument("data")
    ap.add_argument("outdir")
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="peak learning rates, levels per step")
    ap.add_argument("--epochs", default="1,2,3", help="epochs per run (fractions allowed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=0, help="validation every K steps (0: each epoch's end)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--radius", type=int, default=1)
    ap.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="reuse runs already finished with the same settings")
    a = ap.parse_args()
    for path in (a.start, a.data):
        if not os.path.isfile(path):
            die(f"{path}: no such file")
    if os.path.exists(a.outdir) and not os.path.isdir(a.outdir):
        die(f"{a.outdir}: exists and is not a directory")
    lrs, epochs = floats(a.lrs, "--lrs"), floats(a.epochs, "--epochs")
    if a.threads < 1 or a.batch < 1 or a.val_images < 1:
        die("--threads, --batch and --val-images must be >= 1 (validation chooses the runs)")
    if a.eval_every < 0 or a.radius < 0 or a.warmup < 0:
        die("--eval-every, --radius and --warmup must be >= 0")
    ccq = ccq_binary()
    try:
        os.makedirs(a.outdir, exist_ok=True)
    except OSError as e:
        die(f"{a.outdir}: cannot create ({e})")

    common = {"start": os.path.abspath(a.start), "data": os.path.abspath(a.data), "threads": a.threads,
              "batch": a.batch, "eval_every": a.eval_every, "val_images": a.val_images, "radius": a.radius,
              "schedule": a.schedule, "warmup": a.warmup, "seed": a.seed}
    grid = [(lr, e) for lr in lrs for e in epochs]
    sweep = {**common, "ccq": ccq, "lrs": lrs, "epochs": epochs, "runs": [], "best": None, "done": False}
    out_p = os.path.join(a.outdir, "sweep.json")
    for k, (lr, e) in enumerate(grid, 1):
        settings = {**common, "lr": lr, "epochs": e}
        rundir = os.path.join(a.outdir, f"lr{lr:g}_e{e:g}")
        try:
            rec = run_one(settings, common, rundir, ccq, a.resume)
        except OSError as err:
            die(f"{rundir}: {err}")
        sweep["runs"].append(rec)
        # validation alone chooses; min() keeps the first of equal values (grid order)
        sweep["best"] = min(sweep["runs"], key=lambda r: r["val_xent"])
        try:
            write_json(out_p, sweep)
        except OSError as err:
            die(f"{out_p}: cannot write ({err})")
        print(f"ste_sweep: [{k}/{len(grid)}] lr {lr:g} epochs {e:g}: {rec['steps']} steps, chosen step "
              f"{rec['best_step']}: val CE {rec['val_xent']:.4f} acc {100 * rec['val_acc']:.2f}%, "
              f"test acc {100 * rec['test_acc']:.2f}%; {rec['seconds']:.1f} s fine-tune "
              f"({rec['wall_seconds']:.1f} s in all){' (reused)' if rec['reused'] else ''}", flush=True)
    sweep["done"] = True
    try:
        write_json(out_p, sweep)
    except OSError as err:
        die(f"{out_p}: cannot write ({err})")
    b = sweep["best"]
    print(f"ste_sweep: wrote {out_p}: best by validation lr {b['settings']['lr']:g} epochs "
          f"{b['settings']['epochs']:g} (val CE {b['val_xent']:.4f}, test acc {100 * b['test_acc']:.2f}%)")


if __name__ == "__main__":
    sys.exit(main())
