#!/usr/bin/env python3
"""test_prune.py DATA.h5 LENET.h5: weight pruning in `ccq quantize --sparsity F --prune before|after`
(prune.h). (GPTQ with the mask is checked against scripts/gptq.py by gptq_oracle_pruned.)

On lenet at 4 bits, round-to-nearest:
  - after: every layer's levels are the unpruned file's with exactly the non-zero levels of
    smallest |level x wscale| (ties to the lower index) set to zero until floor(n F) are zero,
    recomputed here from the unpruned file; scales, zero points and everything else unchanged;
  - before: the floor(n F) weights of smallest float magnitude are zero and every other level is
    the unpruned one (round-to-nearest of the same weight);
  - with --first-last-8 the 8-bit layers stay dense; `ccq inspect` reports the zero levels; the
    same file twice; --sparsity 0 is the unpruned file;
  - pruned layers are marked sparse (unpruned ones not) and `ccq inspect`'s deployed bytes are
    the sparse format's where smaller (bitmap, codes, row index), counted here from the file; a
    sparse attribute out of 0..1 or on a layer with a codebook is exit 4;
  - bad values (a fraction of 1 or more, four decimals, not a number, --prune without --sparsity,
    an unknown order, with learned levels, with --budget, on eval) exit 2, one line, no output."""
import os
import re
import shutil
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, h5_contents, layer_bytes, run, search_ini, stop_after_checkpoint

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("prune")
BASE = ["--wbits", "4", "--calib", "256"]
MPI2 = ["mpirun", "--oversubscribe", "-np", "2"]


def quantize(out, *flags):
    return run([ccq, "quantize", model, "--data", data, "-o", out, *BASE, *flags])


def layers(path):
    with h5py.File(path, "r") as f:
        return {k: (int(g.attrs["bits"]), g["levels"][...].reshape(-1).astype(np.int64),
                    g["wscale"][...].astype(np.float64), g["weight"][...].astype(np.float32).reshape(-1))
                for k, g in f["nodes"].items() if "levels" in g}


def rest(path):
    """Everything but the levels and the sparse mark."""
    return h5_contents(path, skip_attrs=("sparse",), skip_datasets=("levels",))


with tempfile.TemporaryDirectory() as work:
    P = lambda n: os.path.join(work, n)  # noqa: E731
    rc, so, se = quantize(P("q.h5"))
    t.check("quantize w4", rc == 0, se)
    q = layers(P("q.h5"))
    for F in ("0.5", "0.9"):
        pm = round(float(F) * 1000)
        rc, so, se = quantize(P(f"a{F}.h5"), "--sparsity", F, "--prune", "after")
        t.check(f"--sparsity {F} --prune after", rc == 0 and "pruned after" in so, se)
        got = layers(P(f"a{F}.h5"))
        for k, (bits, lev, ws, w) in q.items():
            n = lev.size * pm // 1000
            want = lev.copy()
            K = lev.size // ws.size
            need = n - int((lev == 0).sum())
            if need > 0:
                nz = np.nonzero(lev)[0]
                mag = np.abs(lev[nz].astype(np.float64) * ws[nz // K])
                want[nz[np.lexsort((nz, mag))[:need]]] = 0
            t.check(f"after {F}: node {k}: the smallest real levels zeroed, the rest unchanged",
                    np.array_equal(got[k][1], want), f"{int((got[k][1] != want).sum())} differ")
        t.check(f"after {F}: nothing but levels (and the sparse mark) changed", rest(P(f"a{F}.h5")) == rest(P("q.h5")))
        rc, so, se = quantize(P(f"b{F}.h5"), "--sparsity", F, "--prune", "before")
        t.check(f"--sparsity {F} --prune before", rc == 0 and "pruned before" in so, se)
        got = layers(P(f"b{F}.h5"))
        for k, (bits, lev, ws, w) in q.items():
            n = lev.size * pm // 1000
            masked = np.zeros(lev.size, dtype=bool)
            masked[np.argsort(np.abs(w), kind="stable")[:n]] = True
            t.check(f"before {F}: node {k}: the {n} smallest float weights zero, the others round-to-nearest",
                    bool((got[k][1][masked] == 0).all()) and np.array_equal(got[k][1][~masked], lev[~masked]))
    rc, so, se = quantize(P("b0.5again.h5"), "--sparsity", "0.5", "--prune", "before")
    t.check("the same file again", rc == 0 and open(P("b0.5again.h5"), "rb").read() == open(P("b0.5.h5"), "rb").read())
    rc, so, se = quantize(P("s0.h5"), "--sparsity", "0")
    t.check("--sparsity 0 is the unpruned file", rc == 0 and open(P("s0.h5"), "rb").read() == open(P("q.h5"), "rb").read())
    rc, so, se = quantize(P("fl.h5"), "--sparsity", "0.5", "--first-last-8")
    fl = layers(P("fl.h5")) if rc == 0 else {}
    t.check("--first-last-8: the 8-bit layers dense, the 4-bit ones pruned",
            fl and all((l[1] == 0).mean() < 0.5 for l in fl.values() if l[0] == 8)
            and all((l[1] == 0).mean() >= 0.5 for l in fl.values() if l[0] == 4), se)
    rc, so, se = run([ccq, "inspect", P("b0.5.h5")])
    zeros = sum(int((l[1] == 0).sum()) for l in layers(P("b0.5.h5")).values())
    m = re.search(r"sparsity\s+(\d+) of (\d+) weight levels zero", so)
    t.check("inspect counts the zero levels", m is not None and int(m.group(1)) == zeros, so[-300:])
    # sparse storage: pruned layers marked, the deployed size counted here as the C export stores it
    for name in ("b0.9.h5", "q.h5"):
        with h5py.File(P(name), "r") as f:
            marks = [int(g.attrs.get("sparse", 0)) for g in f["nodes"].values() if "levels" in g]
            total = 0
            for g in f["nodes"].values():
                total += 8
                if "levels" not in g:
                    continue
                total += layer_bytes(g) + 8 * g["levels"].shape[0]
        rc, so, se = run([ccq, "inspect", P(name)])
        m = re.search(r"deployed\s+(\d+) bytes", so)
        t.check(f"{name}: {'every layer marked sparse' if name != 'q.h5' else 'no layer marked sparse'}",
                marks and all(v == (name != "q.h5") for v in marks), f"{marks}")
        t.check(f"{name}: inspect's deployed bytes are the sparse format's, counted here", m and int(m.group(1)) == total,
                f"{m and m.group(1)} vs {total}")
    for label, val, msg in (("sparse = 2", 2, "sparse"), ("sparse = -1", -1, "sparse")):
        bad = P("bad.h5")
        shutil.copy(P("b0.9.h5"), bad)
        with h5py.File(bad, "r+") as f:
            next(g for g in f["nodes"].values() if "levels" in g).attrs["sparse"] = np.int64(val)
        t.refusal(label)
        rc, so, se = run([ccq, "inspect", bad])
        t.check(f"refused: {label}", rc == 4 and msg in se and len(se.strip().splitlines()) == 1, f"rc {rc}: {se!r}")
    rc, so, se = quantize(P("l2.h5"), "--wbits", "2", "--levels", "learned")
    bad = P("bad.h5")
    shutil.copy(P("l2.h5"), bad)
    with h5py.File(bad, "r+") as f:
        next(g for g in f["nodes"].values() if "codebook" in g).attrs["sparse"] = np.int64(1)
    t.refusal("sparse with a codebook")
    rc, so, se = run([ccq, "inspect", bad])
    t.check("refused: sparse with a codebook", rc == 4 and "codebook" in se and len(se.strip().splitlines()) == 1,
            f"rc {rc}: {se!r}")

    # a search from a pruned file keeps every sparse layer's count of non-zero levels, moves zeros,
    # and is identical on 1 and 2 ranks and across a stop and resume
    start = layers(P("b0.5.h5"))
    res = {}
    for np_ in (1, 2, 3):
        d = P(f"s{np_}")
        cfg = search_ini(d, P("b0.5.h5"), data, run={"budget": 240}, search={"group": "layer_confidence"})
        launch = [ccq] if np_ == 1 else ["mpirun", "--oversubscribe", "-np", str(np_), ccq]
        rc, so, se = run(launch + ["search", cfg])
        t.check(f"search from the 50%-pruned file on {np_} rank(s)", rc == 0, se[-600:])
        if rc == 0:
            res[np_] = tuple(open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5"))
    t.check("search from the pruned file: 1, 2 and 3 ranks identical", len(res) == 3 and res[1] == res[2] == res[3])
    if 1 in res:
        out = layers(os.path.join(P("s1"), "out.h5"))
        with h5py.File(os.path.join(P("s1"), "out.h5"), "r") as f:
            marks = [int(g.attrs.get("sparse", 0)) for g in f["nodes"].values() if "levels" in g]
        t.check("the search's output keeps the sparse marks", marks and all(marks), f"{marks}")
        for k, (bits, lev, ws, w) in start.items():
            t.check(f"search: node {k}: at most the start's {int((lev != 0).sum())} non-zero levels",
                    int((out[k][1] != 0).sum()) <= int((lev != 0).sum()), f"{int((out[k][1] != 0).sum())}")
        moved = sum(int(((out[k][1] != 0) & (start[k][1] == 0)).sum()) for k in start)
        changed = sum(int((out[k][1] != start[k][1]).sum()) for k in start)
        print(f"  search from the pruned file: {changed} levels changed, {moved} zeros moved")
        t.check("search: levels changed, and some weights pruned at the start became non-zero (zeros moved)",
                changed > 0 and moved > 0, f"{changed} changed, {moved} moved")
    d = P("sr")
    cfg = search_ini(d, P("b0.5.h5"), data, run={"budget": 240}, search={"group": "layer_confidence"})
    rc_t, err = stop_after_checkpoint([ccq, "search", cfg], os.path.join(d, "ckpt.h5"))
    rc, so, se = run(MPI2 + [ccq, "search", cfg, "--resume", os.path.join(d, "ckpt.h5")])
    got = tuple(open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")) if rc == 0 else None
    t.check("search from the pruned file: stopped, resumed on 2 ranks, identical", rc_t == 7 and got == res.get(1),
            f"stop rc {rc_t}, resume rc {rc}: {se[-400:]}")

    o = P("none.h5")
    for label, flags, msg in (
            ("--sparsity 1", ["--sparsity", "1"], "--sparsity needs a fraction"),
            ("--sparsity four decimals", ["--sparsity", "0.1234"], "--sparsity needs a fraction"),
            ("--sparsity not a number", ["--sparsity", "half"], "--sparsity needs a fraction"),
            ("--sparsity negative", ["--sparsity", "-0.5"], "--sparsity needs a fraction"),
            ("--prune without --sparsity", ["--prune", "after"], "--prune needs --sparsity"),
            ("--prune unknown", ["--sparsity", "0.5", "--prune", "during"], "--prune must be before or after"),
            ("--sparsity with learned levels", ["--sparsity", "0.5", "--levels", "learned"], "uniform levels"),
            ("--sparsity with --budget", ["--sparsity", "0.5", "--budget", "w4"], "exclude each other")):
        t.refusal(label)
        cmd = [ccq, "quantize", model, "--data", data, "-o", o, "--calib", "64", *flags]
        if "--budget" not in flags:
            cmd += ["--wbits", "4"]
        rc, so, se = run(cmd)
        t.check(f"refused: {label}", rc == 2 and msg in se and len(se.strip().splitlines()) == 1
                and not os.path.exists(o), f"rc {rc}: {se!r}")
    t.refusal("eval --sparsity")
    rc, so, se = run([ccq, "eval", model, "--data", data, "--wbits", "4", "--sparsity", "0.5"])
    t.check("eval --sparsity refused", rc == 2 and "--sparsity" in se, f"rc {rc}: {se!r}")
t.finish()
