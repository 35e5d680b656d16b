#!/usr/bin/env python3
"""test_ste.py DATA.h5 MODEL.h5: scripts/ste_finetune.py, the STE fine-tune baseline.

On the reference model quantized at 2 bits (round to nearest), one thread:
  - --steps 0 writes a copy of the input: every dataset (levels included)
    and attribute identical;
  - 40 steps at the defaults (radius 1) keep every level on the 2-bit grid
    and within +-1 of its start, change some levels, and lower the
    cross-entropy of the quantized network (ccq_sim, float32) on 1,000 fixed
    training images; `ccq eval` runs the output, with a higher test accuracy
    than the input's on 500 images, and agrees with ccq_sim's simulation of
    the output on >= 99% of their argmaxes (the levels were written where
    the engine reads them);
  - with a large constant learning rate (20 steps of 0.3), radius 0 moves
    some levels by 2 (-1 <-> 1) and radius 1, the same run otherwise, none;
  - a missing file and a float (not quantized) model fail with one line on
    stderr naming the file, and leave no output;
  - the learning-rate schedule (ste_finetune.lr_at): cosine gives lr at the
    start, lr/2 half-way, 0 at the end, constant gives lr, a warm-up ramps
    linearly first; the 40-step run's --curve (validation every 10 steps)
    has one record per validation point plus the start (steps 0, 10, .., 40),
    non-decreasing seconds, the schedule's rates, a running minimum of the
    validation cross-entropy as the chosen checkpoint's, test accuracies in
    [0, 1] that change only when the choice does, the input's full-test-split
    `ccq eval` accuracy first and the output's last;
  - scripts/ste_sweep.py over 2 learning rates x a few steps prints one line
    per run and a last one, writes each run's files and a sweep.json whose
    best is the run with the lowest chosen validation cross-entropy (the test
    accuracy recorded for it = `ccq eval` of its output); a missing file
    fails with one `ste_sweep:` line and no output directory."""
import json
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from ccqtest import Checks, ccq_binary, run

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts")
sys.path.insert(0, SCRIPTS)
import ccq_sim  # noqa: E402
import ste_finetune  # noqa: E402

torch.set_num_threads(1)
data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
script = os.path.join(SCRIPTS, "ste_finetune.py")
sweep_script = os.path.join(SCRIPTS, "ste_sweep.py")
t = Checks("ste")


def levels(path):
    with h5py.File(path, "r") as f:
        return {k: f[f"nodes/{k}/levels"][...] for k in sorted(f["nodes"]) if "levels" in f[f"nodes/{k}"]}


def same_file(p, q):
    """Every dataset and attribute equal."""
    diff = []
    with h5py.File(p, "r") as a, h5py.File(q, "r") as b:
        def visit(name, obj):
            o = b.get(name)
            if o is None:
                diff.append(name)
                return
            if isinstance(obj, h5py.Dataset) and not (obj.dtype == o.dtype and np.array_equal(obj[...], o[...])):
                diff.append(name)
            if set(obj.attrs) != set(o.attrs) or any(not np.array_equal(obj.attrs[k], o.attrs[k]) for k in obj.attrs):
                diff.append(name + " (attrs)")
        visit("/", a)
        a.visititems(visit)
    return diff


def ste(args):
    return run([sys.executable, script] + args + ["--threads", "1"])


def ccq_eval(path, n=500):
    with tempfile.TemporaryDirectory() as d:
        lp = os.path.join(d, "l.h5")
        rc, so, se = run([ccq, "eval", path, "--data", data, "--limit", str(n), "--json", "--save-logits", lp])
        if rc != 0:
            return None, None, se
        with h5py.File(lp, "r") as f:
            return json.loads(so)["accuracy"], f["logits_int"][...], se


def test_acc(path):
    """`ccq eval` on the whole test split, as a fraction (None if it fails)."""
    rc, so, se = run([ccq, "eval", path, "--data", data, "--json"])
    if rc != 0:
        return None
    r = json.loads(so)
    return r["correct"] / r["images"]


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# the schedule, as a pure function: lr_at(0-based step, total steps, peak lr, schedule, warm-up steps)
lr_at = ste_finetune.lr_at
close = lambda u, v: abs(u - v) <= 1e-12 * max(1.0, abs(v))  # noqa: E731
t.check("cosine: lr at the start", close(lr_at(0, 100, 3e-3), 3e-3), lr_at(0, 100, 3e-3))
t.check("cosine: lr/2 half-way", close(lr_at(50, 100, 3e-3), 1.5e-3), lr_at(50, 100, 3e-3))
t.check("cosine: lr (1 + cos(pi/4)) / 2 at a quarter", close(lr_at(25, 100, 1.0), 0.5 + 0.25 * 2 ** 0.5),
        lr_at(25, 100, 1.0))
t.check("cosine: 0 at the end", abs(lr_at(100, 100, 3e-3)) < 1e-18, lr_at(100, 100, 3e-3))
t.check("cosine: decreasing", all(lr_at(i + 1, 37, 1.0) < lr_at(i, 37, 1.0) for i in range(37)))
t.check("constant: lr throughout", all(lr_at(i, 10, 1e-3, "constant") == 1e-3 for i in range(11)))
t.check("warm-up: linear ramp to lr",
        [lr_at(i, 100, 1.0, "cosine", 4) for i in range(4)] == [0.25, 0.5, 0.75, 1.0])
t.check("warm-up: then the cosine over the other steps",
        close(lr_at(4, 100, 1.0, "cosine", 4), 1.0) and close(lr_at(52, 100, 1.0, "cosine", 4), 0.5)
        and abs(lr_at(100, 100, 1.0, "cosine", 4)) < 1e-15, [lr_at(i, 100, 1.0, "cosine", 4) for i in (4, 52, 100)])
t.check("warm-up with constant", [lr_at(i, 10, 1.0, "constant", 2) for i in range(4)] == [0.5, 1.0, 1.0, 1.0])

with h5py.File(data, "r") as f:
    x_tr, y_tr = f["train/images"][:1000], torch.from_numpy(f["train/labels"][:1000].astype(np.int64))
    x_te = f["test/images"][:500]


def train_ce(path):
    # float32, as the fine-tune's own forward (float64 costs twice the time for the same answer here)
    logits = ccq_sim.run(ccq_sim.load(path), x_tr, dtype=torch.float32)
    return float(F.cross_entropy(torch.from_numpy(logits), y_tr))


with tempfile.TemporaryDirectory() as d:
    rtn = os.path.join(d, "rtn.h5")
    rc, so, se = run([ccq, "quantize", model, "--data", data, "--wbits", "2", "-o", rtn])
    t.check("quantize", rc == 0, se)
    start = levels(rtn)

    # --steps 0: a copy
    o0 = os.path.join(d, "s0.h5")
    rc, so, se = ste([rtn, data, o0, "--steps", "0", "--val-images", "500"])
    t.check("--steps 0 runs", rc == 0, se)
    if rc == 0:
        diff = same_file(rtn, o0)
        t.check("--steps 0 writes the input's levels (the whole file identical)", not diff, diff[:5])

    # a short run at the defaults, with a curve
    out = os.path.join(d, "ste.h5")
    curve_p = os.path.join(d, "curve.json")
    rc, so, se = ste([rtn, data, out, "--steps", "40", "--val-images", "1000", "--eval-every", "10",
                      "--curve", curve_p])
    t.check("40 steps run", rc == 0, se)
    print(so.strip())
    t.check("one summary line", rc == 0 and len(so.strip().splitlines()) == 1 and "levels changed" in so, so)
    if rc == 0:
        new = levels(out)
        t.check("levels int8", all(v.dtype == np.int8 for v in new.values()))
        t.check("levels on the 2-bit grid", all(int(np.abs(v).max()) <= 1 for v in new.values()))
        t.check("levels within +-1 of the start",
                all(int(np.abs(new[k].astype(int) - start[k]).max()) <= 1 for k in start))
        changed = sum(int((new[k] != start[k]).sum()) for k in start)
        t.check("some levels changed", changed > 0, changed)
        ce0, ce1 = train_ce(rtn), train_ce(out)
        print(f"train cross-entropy (1,000 images): {ce0:.4f} -> {ce1:.4f}; {changed} levels changed")
        t.check("cross-entropy on fixed train images lowered", ce1 < ce0, f"{ce0:.4f} -> {ce1:.4f}")
        acc0, _, se0 = ccq_eval(rtn)
        acc1, logits, se1 = ccq_eval(out)
        t.check("ccq eval runs the input", acc0 is not None, se0)
        t.check("ccq eval runs the output", acc1 is not None, se1)
        if acc0 is not None and acc1 is not None:
            print(f"ccq eval (500 test images): {acc0:.2f}% -> {acc1:.2f}%")
            t.check("engine test accuracy raised", acc1 > acc0, f"{acc0:.2f}% -> {acc1:.2f}%")
            sim = ccq_sim.run(ccq_sim.load(out), x_te)
            agree = float((sim.argmax(1) == logits.argmax(1)).mean()) * 100
            t.check("engine and simulation agree on the output (>= 99%)", agree >= 99, f"{agree:.1f}%")

    # its curve
    c = read_json(curve_p) if rc == 0 else None
    t.check("--curve written, done", c is not None and c.get("done") is True and not os.path.exists(curve_p + ".tmp"))
    if c:
        rs = c["records"]
        steps = [r["step"] for r in rs]
        t.check("one record per validation point plus the start", steps == [0, 10, 20, 30, 40], steps)
        secs = [r["seconds"] for r in rs]
        t.check("seconds >= 0 and non-decreasing", secs[0] >= 0 and all(u <= v for u, v in zip(secs, secs[1:])), secs)
        t.check("epoch = step / steps per epoch",
                all(close(r["epoch"], r["step"] / c["steps_per_epoch"]) for r in rs), [r["epoch"] for r in rs])
        t.check("the curve's rates follow the cosine schedule",
                all(close(r["lr"], lr_at(r["step"], 40, 0.01)) for r in rs), [r["lr"] for r in rs])
        acc = [r["test_acc"] for r in rs]
        t.check("test_acc in [0, 1]", all(isinstance(v, float) and 0 <= v <= 1 for v in acc), acc)
        run_min = [min(r["val_xent"] for r in rs[:k + 1]) for k in range(len(rs))]
        t.check("the chosen checkpoint is the running minimum of val_xent",
                [r["best_val_xent"] for r in rs] == run_min
                and all(rs[k]["val_xent"] == rs[k]["best_val_xent"] for k in range(len(rs))
                        if rs[k]["best_step"] == rs[k]["step"]), [(r["best_step"], r["best_val_xent"]) for r in rs])
        t.check("test_acc changes only with the choice",
                all(q["test_acc"] == r["test_acc"] for q, r in zip(rs, rs[1:]) if q["best_step"] == r["best_step"]))
        t.check("val_acc in [0, 1]", all(0 <= r["val_acc"] <= 1 for r in rs), [r["val_acc"] for r in rs])
        a_in, a_out = test_acc(rtn), test_acc(out)
        t.check("first test_acc = ccq eval of the input (whole test split)", acc[0] == a_in, (acc[0], a_in))
        t.check("last test_acc = ccq eval of the written output", acc[-1] == a_out, (acc[-1], a_out))
        print(f"curve: steps {steps}, chosen {[r['best_step'] for r in rs]}, test acc {acc}, "
              f"seconds {[round(v, 2) for v in secs]}")

    # the radius bounds the moves: at a large learning rate radius 0 jumps -1 <-> 1, radius 1 never
    jumps = {}
    for r in (0, 1):
        o = os.path.join(d, f"r{r}.h5")
        rc, so, se = ste([rtn, data, o, "--steps", "20", "--lr", "0.3", "--schedule", "constant",
                          "--radius", str(r), "--val-images", "0"])
        t.check(f"radius {r} runs", rc == 0, se)
        if rc == 0:
            new = levels(o)
            t.check(f"radius {r}: levels on the 2-bit grid", all(int(np.abs(v).max()) <= 1 for v in new.values()))
            jumps[r] = sum(int((np.abs(new[k].astype(int) - start[k]) > 1).sum()) for k in start)
    if len(jumps) == 2:
        t.check("radius 0 moves some levels by 2", jumps[0] > 0, jumps[0])
        t.check("radius 1 moves none by more than 1", jumps[1] == 0, jumps[1])

    # errors: one line naming the file, no output
    for bad in (os.path.join(d, "missing.h5"), model):
        o = os.path.join(d, "bad.h5")
        rc, so, se = ste([bad, data, o, "--steps", "1"])
        lines = se.strip().splitlines()
        t.check(f"{os.path.basename(bad)}: fails with one line naming it",
                rc != 0 and len(lines) == 1 and bad in lines[0], f"rc {rc}: {se!r}")
        t.check(f"{os.path.basename(bad)}: no output", not os.path.exists(o) and not os.path.exists(o + ".tmp"))

    # the sweep: 2 learning rates x a few steps (epochs 0.01 of 59,500 images at batch 64: 9 steps)
    sd = os.path.join(d, "sweep")
    rc, so, se = run([sys.executable, sweep_script, rtn, data, sd, "--lrs", "1e-3,0.02", "--epochs", "0.01",
                      "--batch", "64", "--val-images", "500", "--threads", "1"])
    t.check("ste_sweep runs", rc == 0, se)
    print(so.strip())
    lines = so.strip().splitlines()
    t.check("one progress line per run and a last one",
            len(lines) == 3 and lines[0].startswith("ste_sweep: [1/2] lr 0.001 epochs 0.01:")
            and lines[1].startswith("ste_sweep: [2/2] lr 0.02 epochs 0.01:") and "best" in lines[2], lines)
    sw = read_json(os.path.join(sd, "sweep.json")) if rc == 0 else None
    t.check("sweep.json written, done", sw is not None and sw.get("done") is True)
    if sw:
        runs = sw["runs"]
        t.check("two runs with their settings", [(r["settings"]["lr"], r["settings"]["epochs"]) for r in runs]
                == [(1e-3, 0.01), (0.02, 0.01)], [r["settings"] for r in runs])
        for r in runs:
            rd = os.path.join(sd, r["dir"])
            t.check(f"{r['dir']}: its files", all(os.path.isfile(os.path.join(rd, n))
                                                 for n in ("ste.h5", "curve.json", "summary.txt", "run.json")),
                    os.listdir(rd) if os.path.isdir(rd) else rd)
            rc_ = read_json(os.path.join(rd, "curve.json")) or {"records": [{}]}
            last = rc_["records"][-1]
            t.check(f"{r['dir']}: val_xent and test_acc are its curve's last",
                    r["val_xent"] == last.get("best_val_xent") and r["test_acc"] == last.get("test_acc")
                    and r["steps"] == 9, (r, last))
        vals = [r["val_xent"] for r in runs]
        lowest = runs[vals.index(min(vals))]
        t.check("best = the lowest chosen validation cross-entropy", sw["best"] == lowest,
                (sw["best"].get("dir"), vals))
        t.check("the two runs differ (the choice is not trivial)", vals[0] != vals[1], vals)
        b_acc = test_acc(os.path.join(sd, lowest["dir"], "ste.h5"))
        t.check("best's test_acc = ccq eval of its output", lowest["test_acc"] == b_acc, (lowest["test_acc"], b_acc))
        print(f"sweep: val CE {vals}, best {sw['best']['dir']}")

    # the sweep's errors: one line, no output directory
    sd2 = os.path.join(d, "sweep2")
    missing = os.path.join(d, "missing.h5")
    rc, so, se = run([sys.executable, sweep_script, missing, data, sd2])
    lines = se.strip().splitlines()
    t.check("ste_sweep: a missing file fails with one line naming it",
            rc == 1 and len(lines) == 1 and lines[0].startswith("ste_sweep: ") and missing in lines[0],
            f"rc {rc}: {se!r}")
    t.check("ste_sweep: no output directory on bad input", not os.path.exists(sd2))
    rc, so, se = run([sys.executable, sweep_script, rtn, data, sd2, "--lrs", "1e-3,x"])
    t.check("ste_sweep: a malformed --lrs fails with one line", rc == 1 and len(se.strip().splitlines()) == 1
            and se.startswith("ste_sweep: --lrs"), f"rc {rc}: {se!r}")
t.finish()
