#!/usr/bin/env python3
"""test_gptq_oracle.py DATA.h5 MODEL.h5 [--bits B,..] [--scale-bits B,..] [--calib N] [--bar F] [--threads]
[--grouped]: the C GPTQ (ccq quantize --init gptq | gptq_scale) against scripts/gptq.py, its oracle.

For each width B: `ccq quantize --wbits B` (round-to-nearest), then gptq.py on
that file and `ccq quantize --init gptq` from the float model with the same
calibration images. The fraction of identical levels must reach --bar (both
compute in double; they differ in BLAS summation order and in the float32
forward pass that feeds the C side's Hessians), the weight scales must be the
file's, and the test accuracies of the two integer networks (`ccq eval`) must
be within 0.1 points. For the widths in --scale-bits the same with
gptq.py --scale-search against --init gptq_scale, whose scales and logits'
scale must also agree (the same fraction of identical scales, the logits'
scale to 1e-6 relative). With --threads the C GPTQ must write the same file
on 2 threads with its frontier cache (the default) and on 1 thread with
every layer's prefix recomputed instead (CCQ_GPTQ_THREADS=1,
CCQ_GPTQ_CACHE_MB=0). With --grouped only the grouped
convolutions are compared (each group its own problem), and not the
accuracies (for test_ops.py's untrained network: its last layer has more
inputs than there are calibration images, a singular Hessian on which the
two sides' rounding differences grow).

Measured (results/gptq.md): lenet 100% identical levels at 2, 3 and 4 bits
and with the scale search at 2 bits (128 and 1024 calibration images), the
grouped and depthwise convolutions of test_ops.py's network 100% at 4 bits;
the bars are set a little below for other BLAS builds and CPUs."""
import argparse
import json
import os
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("model")
ap.add_argument("--bits", default="2,3,4")
ap.add_argument("--scale-bits", default="2")
ap.add_argument("--asym-bits", default="",
                help="widths at which --init gptq_asym is compared with gptq.py --scale-search --asym: levels and "
                     "scales as for gptq_scale, the biases solved again to 1e-5 of their largest magnitude, and "
                     "different from the round-to-nearest file's")
ap.add_argument("--calib", type=int, default=1024)
ap.add_argument("--bar", type=float, default=0.999)
ap.add_argument("--threads", action="store_true")
ap.add_argument("--grouped", action="store_true")
ap.add_argument("--sparsity", default=None,
                help="both sides prune before quantization (ccq quantize --sparsity F --prune before, gptq.py "
                     "--sparsity F): the same fraction of identical levels, every masked level zero, the layer at "
                     "least that sparse")
a = ap.parse_args()
ccq = ccq_binary()
script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "gptq.py")
name = os.path.splitext(os.path.basename(a.model))[0]
t = Checks(f"gptq_oracle {name}")


def layers(path):
    with h5py.File(path, "r") as f:
        out = {}
        for k in sorted(f["nodes"].keys()):
            g = f["nodes"][k]
            if "levels" in g and (not a.grouped or int(g.attrs.get("groups", 1)) > 1):
                out[k] = (g["levels"][...], g["wscale"][...], float(g.attrs["act_scale"]),
                          g["bias"][...] if "bias" in g else None)
        return out, int(f.attrs["output"])


def accuracy(path):
    rc, so, se = run([ccq, "eval", path, "--data", a.data, "--json"])
    t.check(f"ccq eval {os.path.basename(path)}", rc == 0, se)
    return json.loads(so)["accuracy"] if rc == 0 else float("nan")


def compare(label, c_path, py_path, scales_searched, rtn_path=None):
    c, out = layers(c_path)
    p, _ = layers(py_path)
    same = total = same_s = total_s = 0
    for k in p:
        same += int((c[k][0] == p[k][0]).sum())
        total += p[k][0].size
        same_s += int((c[k][1] == p[k][1]).sum())
        total_s += p[k][1].size
    t.check(f"{label}: layers to compare", total > 0)
    frac, frac_s = same / max(total, 1), same_s / max(total_s, 1)
    print(f"{name} {label}: {same}/{total} identical levels{' of grouped convolutions' if a.grouped else ''} ({frac:.6f}), {same_s}/{total_s} identical scales")
    t.check(f"{label}: identical levels >= {a.bar}", frac >= a.bar, f"{frac:.6f}")
    if scales_searched:
        t.check(f"{label}: identical scales >= {a.bar}", frac_s >= a.bar, f"{frac_s:.6f}")
        key = f"{out:04d}"
        rel = abs(c[key][2] - p[key][2]) / p[key][2]
        t.check(f"{label}: the logits' scale follows the scales", rel < 1e-6, f"{c[key][2]} vs {p[key][2]}")
    else:
        t.check(f"{label}: the file's scales are kept", same_s == total_s, f"{same_s}/{total_s}")
    if rtn_path:
        r, _ = layers(rtn_path)
        dev = max(float(np.abs(c[k][3] - p[k][3]).max() / np.abs(p[k][3]).max()) for k in p)
        t.check(f"{label}: the solved biases agree to 1e-5 of their largest", dev <= 1e-5, f"{dev:.3g}")
        t.check(f"{label}: every layer's bias solved again", all(not np.array_equal(c[k][3], r[k][3]) for k in p))
    if a.grouped:
        return
    acc_c, acc_p = accuracy(c_path), accuracy(py_path)
    print(f"{name} {label}: test accuracy C {acc_c:.2f}%, gptq.py {acc_p:.2f}%")
    t.check(f"{label}: test accuracy within 0.1 points", abs(acc_c - acc_p) <= 0.1, f"{acc_c} vs {acc_p}")


with tempfile.TemporaryDirectory() as d:
    widths = [int(b) for b in a.bits.split(",") if b]
    scale_widths = [int(b) for b in a.scale_bits.split(",") if b]
    asym_widths = [int(b) for b in a.asym_bits.split(",") if b]
    for b in sorted(set(widths) | set(scale_widths) | set(asym_widths)):
        rtn = os.path.join(d, f"rtn{b}.h5")
        rc, so, se = run([ccq, "quantize", a.model, "--data", a.data, "--wbits", str(b), "--calib", str(a.calib),
                          "-o", rtn])
        t.check(f"w{b}: quantize", rc == 0, se)
        modes = ([("gptq", [])] if b in widths else []) + ([("gptq_scale", ["--scale-search"])] if b in scale_widths else []) \
            + ([("gptq_asym", ["--scale-search", "--asym"])] if b in asym_widths else [])
        for init, flags in modes:
            label = f"w{b} {init}"
            c_path, py_path = os.path.join(d, f"c_{init}{b}.h5"), os.path.join(d, f"py_{init}{b}.h5")
            env = dict(os.environ, CCQ_GPTQ_THREADS="2")
            prune_c = ["--sparsity", a.sparsity, "--prune", "before"] if a.sparsity else []
            prune_py = ["--sparsity", a.sparsity, "--prune-bits", str(b)] if a.sparsity else []
            rc, so, se = run([ccq, "quantize", a.model, "--data", a.data, "--wbits", str(b), "--calib", str(a.calib),
                              "--init", init, "-o", c_path, *prune_c], env=env)
            t.check(f"{label}: ccq quantize --init {init} {' '.join(prune_c)}", rc == 0, se)
            if a.sparsity and rc == 0:
                pm = round(float(a.sparsity) * 1000)
                with h5py.File(c_path, "r") as fc, h5py.File(rtn, "r") as fr:
                    for k in sorted(fc["nodes"], key=int):
                        g = fc["nodes"][k]
                        if "levels" not in g or int(g.attrs["bits"]) != b:
                            continue
                        w = np.abs(fr["nodes"][k]["weight"][...].astype(np.float32).reshape(-1))
                        n = w.size * pm // 1000
                        masked = np.argsort(w, kind="stable")[:n]
                        lev = g["levels"][...].reshape(-1)
                        t.check(f"{label}: node {k}: the {n} smallest float weights at level 0",
                                bool((lev[masked] == 0).all()), f"{int((lev[masked] != 0).sum())} not zero")
                        t.check(f"{label}: node {k}: at least {pm / 10}% zero", int((lev == 0).sum()) >= n)
            rc, so, se = run([sys.executable, script, rtn, a.data, py_path, "--calib", str(a.calib), *flags,
                              *prune_py])
            t.check(f"{label}: gptq.py", rc == 0, se)
            if os.path.exists(c_path) and os.path.exists(py_path):
                compare(label, c_path, py_path, init in ("gptq_scale", "gptq_asym"), rtn if init == "gptq_asym" else None)
            if a.threads and (init == modes[0][0] or init == "gptq_asym"):
                one = os.path.join(d, f"c1_{init}{b}.h5")
                env1 = dict(os.environ, CCQ_GPTQ_THREADS="1", CCQ_GPTQ_CACHE_MB="0")
                rc, so, se = run([ccq, "quantize", a.model, "--data", a.data, "--wbits", str(b), "--calib",
                                  str(a.calib), "--init", init, "-o", one], env=env1)
                t.check(f"{label}: 1 thread, no cache runs", rc == 0, se)
                t.check(f"{label}: the same file on 1 thread without the cache and on 2 with it",
                        rc == 0 and open(one, "rb").read() == open(c_path, "rb").read())
t.finish()
