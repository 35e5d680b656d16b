#!/usr/bin/env python3
"""test_search_init.py DATA.h5 MODEL.h5: a search from a float model with a GPTQ start.

With quant.init = gptq (2-bit lenet, 256 calibration images), the final
model, log and checkpoint are bit-identical on 1 and 2 ranks; the start is
computed once (rank 0 says so) and is exactly what `ccq quantize --init gptq`
writes with the same [quant] keys (the checkpoint's start levels and scales);
a run stopped at half the budget and resumed on 2 ranks prints that the
start comes from the checkpoint, computes nothing, and ends bit-identical to
the uninterrupted run. With quant.init = gptq_scale the checkpoint holds the
searched scales and the logits' scale that follows them (again equal to
ccq quantize's), and the output model carries them. With quant.init =
gptq_asym (the biases solved again) the checkpoint's start biases, levels
and scales are ccq quantize --init gptq_asym's, the output carries those
biases, and a run stopped at half the budget on 1 rank and resumed on 2
ends bit-identical to the uninterrupted run. A checkpoint of format
version 1 is refused (exit 4, one line). At the end rank 0 prints the test
accuracy of the start and of the result (the data file has a test split),
equal to `ccq eval`'s and the same on 1 and 2 ranks."""
import json
import os
import re
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("search_init")
MPI = ["mpirun", "--oversubscribe", "-np"]

CONFIG = """[model]
model = {model}
data = {data}
[quant]
wbits = 2
calib_images = 256
init = {init}
[search]
lambda = 8
mu = 2
group_size = 64
batch = 128
val_images = 1000
[run]
output = {d}/out.h5
log = {d}/log.jsonl
checkpoint = {d}/ckpt.h5
checkpoint_every = 4
budget = {budget}
"""


def setup(d, init="gptq", budget=120):
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "search.ini")
    open(p, "w").write(CONFIG.format(model=model, data=data, d=d, init=init, budget=budget))
    return p


def search(cfg, np_=1, extra=()):
    return run(([ccq] if np_ == 1 else MPI + [str(np_), ccq]) + ["search", cfg, *extra])


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")}


def quantized(path):
    """levels (concatenated in node order), wscale (same), act_scale per node."""
    with h5py.File(path, "r") as f:
        lv, ws, act = [], [], []
        for k in sorted(f["nodes"].keys()):
            g = f["nodes"][k]
            act.append(float(g.attrs["act_scale"]))
            if "levels" in g:
                lv.append(g["levels"][...].ravel())
                ws.append(g["wscale"][...])
        return np.concatenate(lv), np.concatenate(ws), np.array(act, dtype=np.float32)


def start_of(ckpt):
    with h5py.File(ckpt, "r") as f:
        s = f.attrs["start"]
        return (s.decode() if isinstance(s, bytes) else str(s), f["eda_base"][...], f["start_wscale"][...],
                f["start_act_scale"][...])


with tempfile.TemporaryDirectory() as root:
    got, reports = {}, {}
    for np_ in (1, 2):
        d = os.path.join(root, f"np{np_}")
        rc, so, se = search(setup(d), np_)
        t.check(f"np={np_} runs", rc == 0, se[-2000:])
        t.check(f"np={np_}: the start is computed once", so.count("search: start: gptq, computed in") == 1, so[-600:])
        got[np_] = files(d) if rc == 0 else {}
        reports[np_] = re.search(r"search: test accuracy \((\d+) images.*start \(gptq\) ([\d.]+)%, searched ([\d.]+)%",
                                 so)
        t.check(f"np={np_}: the test accuracies of the start and the result are printed", reports[np_] is not None,
                so[-600:])
    for n in got[1]:
        t.check(f"gptq start: {n} bit-identical on 1 and 2 ranks", got[2].get(n) == got[1][n])

    # the start is ccq quantize's
    ref = os.path.join(root, "q_gptq.h5")
    rc, so, se = run([ccq, "quantize", model, "--data", data, "--wbits", "2", "--calib", "256", "--init", "gptq",
                      "-o", ref])
    t.check("quantize --init gptq runs", rc == 0, se)
    kind, base, ws, act = start_of(os.path.join(root, "np1", "ckpt.h5"))
    lv_q, ws_q, act_q = quantized(ref)
    t.check("checkpoint: start kind gptq", kind == "gptq", kind)
    t.check("checkpoint: start levels are quantize --init gptq's", np.array_equal(base, lv_q))
    t.check("checkpoint: start scales are quantize --init gptq's", np.array_equal(ws, ws_q) and np.array_equal(act, act_q))

    # the printed test accuracies are ccq eval's of the start and of the output, on any rank count
    def test_acc(path):
        rc, so, se = run([ccq, "eval", path, "--data", data, "--json"])
        return json.loads(so)["accuracy"] if rc == 0 else -1.0

    if reports[1]:
        n, start_acc, end_acc = reports[1].groups()
        t.check("the report counts the whole test split", int(n) == 10000, n)
        t.check("the start's test accuracy is ccq eval's", f"{test_acc(ref):.2f}" == start_acc, start_acc)
        t.check("the result's test accuracy is ccq eval's",
                f"{test_acc(os.path.join(root, 'np1', 'out.h5')):.2f}" == end_acc, end_acc)
        t.check("2 ranks report the same", reports[2] is not None and reports[2].groups() == reports[1].groups())

    # stop at half the budget, resume on 2 ranks: nothing recomputed, same end
    d = os.path.join(root, "resume")
    cfg = setup(d, budget=60)
    rc, so, se = search(cfg, 1)
    t.check("half-budget run", rc == 0, se[-2000:])
    rc, so, se = search(cfg, 2, ["--resume", os.path.join(d, "ckpt.h5"), "--set", "run.budget=120"])
    t.check("resume on 2 ranks runs", rc == 0, se[-2000:])
    t.check("resume: the start comes from the checkpoint", "search: start: gptq, from the checkpoint" in so, so[-600:])
    t.check("resume: no start is computed", "computed in" not in so and "on rank 0" not in so, so[-600:])
    res = files(d) if rc == 0 else {}
    for n in got[1]:
        t.check(f"resume: {n} bit-identical to the uninterrupted run", res.get(n) == got[1][n])

    # gptq_scale: searched scales and the logits' scale in the checkpoint and the output
    d = os.path.join(root, "scale")
    rc, so, se = search(setup(d, init="gptq_scale", budget=40), 1)
    t.check("gptq_scale search runs", rc == 0, se[-2000:])
    ref = os.path.join(root, "q_gptqs.h5")
    rc2, so2, se2 = run([ccq, "quantize", model, "--data", data, "--wbits", "2", "--calib", "256", "--init",
                         "gptq_scale", "-o", ref])
    t.check("quantize --init gptq_scale runs", rc2 == 0, se2)
    if rc == 0 and rc2 == 0:
        kind, base, ws, act = start_of(os.path.join(d, "ckpt.h5"))
        lv_q, ws_q, act_q = quantized(ref)
        lv_r, ws_r, act_r = quantized(os.path.join(root, "q_gptq.h5"))
        t.check("gptq_scale: start kind", kind == "gptq_scale", kind)
        t.check("gptq_scale: start equals quantize's", np.array_equal(base, lv_q) and np.array_equal(ws, ws_q)
                and np.array_equal(act, act_q))
        t.check("gptq_scale: some scales moved", bool((ws < ws_r).any()))
        _, ws_o, act_o = quantized(os.path.join(d, "out.h5"))
        t.check("gptq_scale: the output carries the start's scales", np.array_equal(ws_o, ws_q)
                and np.array_equal(act_o, act_q))
    # gptq_asym: the solved biases in the checkpoint and the output; stop on 1 rank, resume on 2
    def biases(path):
        with h5py.File(path, "r") as f:
            return np.concatenate([f["nodes"][k]["bias"][...] for k in sorted(f["nodes"].keys())
                                   if "levels" in f["nodes"][k]])

    d = os.path.join(root, "asym")
    rc, so, se = search(setup(d, init="gptq_asym", budget=40), 1)
    t.check("gptq_asym search runs", rc == 0, se[-2000:])
    full = files(d) if rc == 0 else {}
    ref = os.path.join(root, "q_asym.h5")
    rc2, so2, se2 = run([ccq, "quantize", model, "--data", data, "--wbits", "2", "--calib", "256", "--init",
                         "gptq_asym", "-o", ref])
    t.check("quantize --init gptq_asym runs", rc2 == 0, se2)
    if rc == 0 and rc2 == 0:
        kind, base, ws, act = start_of(os.path.join(d, "ckpt.h5"))
        lv_q, ws_q, act_q = quantized(ref)
        with h5py.File(os.path.join(d, "ckpt.h5"), "r") as f:
            sb = f["start_bias"][...]
        t.check("gptq_asym: start kind", kind == "gptq_asym", kind)
        t.check("gptq_asym: start levels and scales are quantize's", np.array_equal(base, lv_q)
                and np.array_equal(ws, ws_q) and np.array_equal(act, act_q))
        t.check("gptq_asym: start biases are quantize's", np.array_equal(sb, biases(ref)))
        t.check("gptq_asym: the biases were solved again", not np.array_equal(sb, biases(os.path.join(root, "q_gptqs.h5"))))
        t.check("gptq_asym: the output carries them", np.array_equal(biases(os.path.join(d, "out.h5")), sb))
    d2 = os.path.join(root, "asym_resume")
    cfg = setup(d2, init="gptq_asym", budget=20)
    rc, so, se = search(cfg, 1)
    t.check("gptq_asym half-budget run", rc == 0, se[-2000:])
    rc, so, se = search(cfg, 2, ["--resume", os.path.join(d2, "ckpt.h5"), "--set", "run.budget=40"])
    t.check("gptq_asym resume on 2 ranks runs", rc == 0, se[-2000:])
    t.check("gptq_asym resume: the start comes from the checkpoint", "search: start: gptq_asym, from the checkpoint"
            in so, so[-600:])
    res = files(d2) if rc == 0 else {}
    for n in full:
        t.check(f"gptq_asym resume: {n} bit-identical to the uninterrupted run", res.get(n) == full[n])
    # a damaged start_bias is refused with one line, not used
    for label, damage, needle in (("start_bias of the wrong length", "short", "start_bias: not one per output channel"),
                                  ("a start bias not finite", "nan", "start bias 3 not finite")):
        bad = os.path.join(root, "bad_bias.h5")
        with open(os.path.join(d2, "ckpt.h5"), "rb") as src, open(bad, "wb") as dst:
            dst.write(src.read())
        with h5py.File(bad, "r+") as f:
            b = f["start_bias"][...]
            del f["start_bias"]
            if damage == "short":
                f["start_bias"] = b[:-1]
            else:
                b[3] = np.nan
                f["start_bias"] = b
        rc, so, se = search(os.path.join(d2, "search.ini"), 1, ["--resume", bad])
        t.check(f"{label}: exit 4, one line naming it", rc == 4 and len(se.splitlines()) == 1 and needle in se,
                f"rc {rc}: {se}")
    # a checkpoint of the previous format is refused loudly
    old = os.path.join(root, "v1.h5")
    with open(os.path.join(root, "np1", "ckpt.h5"), "rb") as src, open(old, "wb") as dst:
        dst.write(src.read())
    with h5py.File(old, "r+") as f:
        f.attrs["version"] = np.int32(1)
    rc, so, se = search(os.path.join(root, "np1", "search.ini"), 1, ["--resume", old])
    t.check("version-1 checkpoint: exit 4", rc == 4, f"rc {rc}: {se}")
    t.check("version-1 checkpoint: one line naming both versions",
            len(se.splitlines()) == 1 and "checkpoint version 1, this ccq reads 2 to 6" in se, se)
t.finish()
