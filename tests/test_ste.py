#!/usr/bin/env python3
"""test_ste.py DATA.h5 MODEL.h5: scripts/ste_finetune.py, the STE fine-tune baseline.

On the reference model quantized at 2 bits (round to nearest), one thread:
  - --steps 0 writes a copy of the input: every dataset (levels included)
    and attribute identical;
  - 40 steps at the defaults (radius 1) keep every level on the 2-bit grid
    and within +-1 of its start, change some levels, and lower the
    cross-entropy of the quantized network (ccq_sim, float64) on 1,000 fixed
    training images; `ccq eval` runs the output, with a higher test accuracy
    than the input's on 500 images, and agrees with ccq_sim's simulation of
    the output on >= 99% of their argmaxes (the levels were written where
    the engine reads them);
  - with a large learning rate, radius 0 moves some levels by 2 (-1 <-> 1)
    and radius 1, the same run otherwise, none;
  - a missing file and a float (not quantized) model fail with one line on
    stderr naming the file, and leave no output."""
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

torch.set_num_threads(1)
data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
script = os.path.join(SCRIPTS, "ste_finetune.py")
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


with h5py.File(data, "r") as f:
    x_tr, y_tr = f["train/images"][:1000], torch.from_numpy(f["train/labels"][:1000].astype(np.int64))
    x_te = f["test/images"][:500]


def train_ce(path):
    return float(F.cross_entropy(torch.from_numpy(ccq_sim.run(ccq_sim.load(path), x_tr)), y_tr))


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

    # a short run at the defaults
    out = os.path.join(d, "ste.h5")
    rc, so, se = ste([rtn, data, out, "--steps", "40", "--val-images", "1000"])
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

    # the radius bounds the moves: at a large learning rate radius 0 jumps -1 <-> 1, radius 1 never
    jumps = {}
    for r in (0, 1):
        o = os.path.join(d, f"r{r}.h5")
        rc, so, se = ste([rtn, data, o, "--steps", "60", "--lr", "0.1", "--radius", str(r), "--val-images", "0"])
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
t.finish()
