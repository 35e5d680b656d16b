#!/usr/bin/env python3
"""test_onnxexport.py: `ccq export --format onnx` is valid ONNX that ONNX Runtime runs like ccq, and
onnx2ccq reads it back into the same integer network.

  test_onnxexport.py DATA.h5 MODEL.h5 --bits 8,4,2 [--images N] [--init I] [--calib N] [--levels L]
                     [--float-input] [--roundtrip] [--qdq-errors] [--factorize F]
  test_onnxexport.py DATA.h5 --pnet      (a generated network of the ops and cases the others lack)
  test_onnxexport.py DATA.h5 --errors FIXTURE_DIR

For each width the model is quantized (`ccq quantize --wbits B`, --calib images, --init levels; with
--factorize F, `ccq factorize --ratio F --wbits B`: CP-factorized layers),
run by `ccq eval --save-logits` on the first N test images (default 1,000; 0: all), and exported
with `ccq export --format onnx`; then:
  - onnx.checker.check_model(full_check=True) and strict shape inference (onnx 1.12) pass, and the
    inferred output is [N, classes];
  - the file holds the model exactly: every layer's int8 levels, float32 weight scales (bit for
    bit), the int32 biases the engine adds (round(bias / (s_in s_w))), every activation's float32
    scale and uint8 zero point, every act table;
  - ONNX Runtime (onnxruntime-node from build/ort, through scripts/ort_eval.js, one thread) runs it
    on the same images: argmax agreement with ccq's int32 logits >= 99% and accuracy within 0.2
    points (ORT's requantization rounds half to even in float, ccq's fixed point half away from
    zero, so identity is not the contract);
  - --float-input: the same with `--input float` fed (pixel/255 - mean) / std;
  - --roundtrip: scripts/onnx2ccq.py reads the export (and the float-input export) back into a
    quantized model file whose levels, codebooks (--levels learned: carried on the levels
    initializer's doc_string), scales, zero points, tables, widths and fused ReLU/Clip are
    the original's and whose `ccq eval` int32 logits are identical, bit for bit;
  - --qdq-errors: QDQ conventions onnx2ccq cannot represent exactly (asymmetric weight zero points,
    per-channel or int8 activations, a bias at another scale) are one error line naming the node,
    exit 1, no output.
--pnet: first a QDQ model built the way other quantizers write it (ONNX Runtime's quantize_static
convention: float input, int8 per-channel weights, Gemm's B at axis 1, int32 biases, Relu and
Sigmoid between DequantizeLinear and QuantizeLinear), which onnx2ccq must read into a quantized
model file that ccq eval runs like ONNX Runtime runs the ONNX file (argmax agreement, logits within
2%); then a generated 3-channel network with what the reference models and the every-op network lack
(standalone relu, batchnorm with a fused relu, avgpools in ceil mode with and without
count_include_pad, ceil-mode maxpool, dilated grouped conv, rank-1 pad/slice/concat, a linear add),
checked as above including the round trip; and an average pool ONNX cannot express exactly (ceil
mode counting padding, its last window past the end padding) refused.
--errors: bad exports (float model, bad flags, OUT.onnx a directory, in a missing directory, or the
input itself, a damaged or missing model) give one stderr line, the documented exit code, nothing
on stdout, and leave no file and no temporary; an existing OUT.onnx survives a failed export and is
replaced by a good one. A missing node or ONNX Runtime is a failure (scripts/setup.sh installs
them), never a skip."""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, prune_act_copy, run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
ORT_EVAL = os.path.join(ROOT, "scripts", "ort_eval.js")
ONNX2CCQ = [sys.executable, os.path.join(ROOT, "scripts", "onnx2ccq.py")]
sys.path.insert(0, os.path.join(ROOT, "scripts"))

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("model", nargs="?")
ap.add_argument("--bits", default="4")
ap.add_argument("--images", type=int, default=1000)
ap.add_argument("--calib", type=int, default=256)
ap.add_argument("--init", default="rtn", help="start levels: one for every width, or B=I,.. per width (rtn elsewhere)")
ap.add_argument("--levels", default="uniform", help="quantize with --levels (learned: codebooks, carried by the export)")
ap.add_argument("--prune-act", default=None, metavar="P",
                help="after quantizing, ccq prune-act --max-drop P on 256 train images: activation thresholds "
                     "(at least two nodes must get one) exported with the rest")
ap.add_argument("--budget", default=None,
                help="quantize with --budget BYTES (a width per layer among 2,3,4,8) instead of --wbits; --bits "
                     "then only names the case")
ap.add_argument("--factorize", default=None, metavar="F",
                help="the model from `ccq factorize --ratio F --wbits B` (CP-factorized layers) instead of quantize")
ap.add_argument("--float-input", action="store_true")
ap.add_argument("--roundtrip", action="store_true")
ap.add_argument("--qdq-errors", action="store_true")
ap.add_argument("--pnet", action="store_true")
ap.add_argument("--errors", metavar="FIXTURE_DIR")
ap.add_argument("--min-agree", type=float, default=0.99)
ap.add_argument("--max-acc-diff", type=float, default=0.2)
a = ap.parse_args()
ccq = ccq_binary()
label = "errors" if a.errors else "pnet" if a.pnet else os.path.splitext(os.path.basename(a.model))[0]
t = Checks(f"onnxexport {label}")
T0 = time.time()


def check_onnx(path, qpath, classes):
    """checker (full), strict shape inference, and the model's numbers in the file exactly."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    try:
        onnx.checker.check_model(m, full_check=True)
        ok, msg = True, ""
    except Exception as e:  # noqa: BLE001 (the checker raises several types)
        ok, msg = False, str(e).splitlines()[0]
    t.check(f"{os.path.basename(path)}: onnx.checker full_check", ok, msg)
    try:
        inf = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
        out = inf.graph.output[0].type.tensor_type.shape.dim
        ok = [d.dim_param or d.dim_value for d in out] == ["N", classes]
        msg = f"{out}"
    except Exception as e:  # noqa: BLE001
        ok, msg = False, str(e).splitlines()[0]
    t.check(f"{os.path.basename(path)}: strict shape inference, output [N, {classes}]", ok, msg)
    t.check("opset 13", [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [13], f"{m.opset_import}")
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    with h5py.File(qpath, "r") as f:
        keys = sorted(f["nodes"].keys())
        live, out = set(), int(f.attrs["output"])
        for i in range(len(keys) - 1, -1, -1):  # the nodes the logits depend on (the others are not exported)
            if i == out or i in live:
                live.add(i)
                live.update(int(j) for j in f["nodes"][keys[i]].attrs["inputs"] if j >= 0)
        bad = []
        for i, k in enumerate(keys):
            g = f["nodes"][k]
            if i not in live:
                if any(nm.startswith(f"n{i}_") for nm in init):
                    bad.append(f"{k} is dead but exported")
                continue
            if f"n{i}_scale" in init:
                s = init[f"n{i}_scale"]
                if s.dtype != np.float32 or s.tobytes() != np.float32(g.attrs["act_scale"]).tobytes() or \
                        int(init[f"n{i}_zp"]) != int(g.attrs["act_zp"]) or init[f"n{i}_zp"].dtype != np.uint8:
                    bad.append(f"{k} activation scale/zero point")
            if "levels" in g:
                if not np.array_equal(init[f"n{i}_levels"], g["levels"][...]) or init[f"n{i}_levels"].dtype != np.int8:
                    bad.append(f"{k} levels")
                if init[f"n{i}_wscale"].tobytes() != g["wscale"][...].astype(np.float32).tobytes():
                    bad.append(f"{k} wscale")
                if np.any(init[f"n{i}_wzp"] != 0):
                    bad.append(f"{k} weight zero point")
                if "bias" in g:
                    src = int(g.attrs["inputs"][0])
                    s_in = np.float64(f["input"].attrs["act_scale"] if src < 0 else f["nodes"][keys[src]].attrs["act_scale"])
                    want = np.array([int(np.sign(v) * np.floor(abs(v) + 0.5)) for v in
                                     g["bias"][...].astype(np.float64) / (s_in * g["wscale"][...].astype(np.float64))])
                    if init[f"n{i}_bias_q"].dtype != np.int32 or not np.array_equal(init[f"n{i}_bias_q"], want):
                        bad.append(f"{k} bias_q")
            if "table" in g and not np.array_equal(init[f"n{i}_table"], g["table"][...]):
                bad.append(f"{k} act table")
        t.check("levels, scales, zero points, biases and act tables are the model's, exactly", not bad, f"{bad}")
    return m


def ort_logits(work, onnx_path, images, dtype):
    raw = os.path.join(work, "in.raw")
    images.tofile(raw)
    out = os.path.join(work, "ort.f32")
    n, c, h, w = images.shape
    rc, so, se = run(["node", ORT_EVAL, onnx_path, raw, str(n), str(c), str(h), str(w), out, "--dtype", dtype])
    t.check(f"ONNX Runtime runs {os.path.basename(onnx_path)}", rc == 0, se.strip())
    if rc:
        return None, None
    return np.fromfile(out, "<f4").reshape(n, -1), json.loads(so.strip().splitlines()[-1])


def agreement(what, got, ref_int, labels):
    if got is None:
        return
    agree = float((got.argmax(1) == ref_int.argmax(1)).mean())
    acc_o = 100.0 * float((got.argmax(1) == labels).mean())
    acc_c = 100.0 * float((ref_int.argmax(1) == labels).mean())
    print(f"  {what}: {len(labels)} images, argmax agreement {100 * agree:.2f}%, accuracy ORT {acc_o:.2f}% "
          f"ccq {acc_c:.2f}% (difference {acc_o - acc_c:+.2f} points)")
    t.check(f"{what}: argmax agreement {100 * agree:.2f}% >= {100 * a.min_agree:.0f}%", agree >= a.min_agree)
    t.check(f"{what}: accuracy difference {acc_o - acc_c:+.2f} within {a.max_acc_diff} points",
            abs(acc_o - acc_c) <= a.max_acc_diff + 1e-9)


def same_quantized(orig, back):
    """The quantized model file read back from ONNX holds the original's integer network."""
    bad = []
    with h5py.File(orig, "r") as f, h5py.File(back, "r") as g:
        ko, kb = sorted(f["nodes"].keys()), sorted(g["nodes"].keys())
        live, out = set(), int(f.attrs["output"])
        for i in range(len(ko) - 1, -1, -1):  # the export leaves out nodes the logits do not need
            if i == out or i in live:
                live.add(i)
                live.update(int(j) for j in f["nodes"][ko[i]].attrs["inputs"] if j >= 0)
        remap = {old: new for new, old in enumerate(sorted(live))}
        remap[-1] = -1
        ko = [ko[i] for i in sorted(live)]
        if len(ko) != len(kb):
            return [f"{len(kb)} nodes, want {len(ko)}"]
        for k in ("act_scale", "act_zp"):
            if f["input"].attrs[k] != g["input"].attrs[k]:
                bad.append(f"input {k}")
        for x, y in zip(ko, kb):
            p, q = f["nodes"][x], g["nodes"][y]
            if [remap[int(j)] for j in p.attrs["inputs"]] != [int(j) for j in q.attrs["inputs"]]:
                bad.append(f"{x} inputs")
            for k in ("op", "shape", "act_scale", "act_zp", "relu", "clip", "bits", "fn", "alpha", "beta", "act_thresh"):
                if (k in p.attrs) != (k in q.attrs) or (k in p.attrs and not np.array_equal(p.attrs[k], q.attrs[k])):
                    if k == "relu" and int(p.attrs.get(k, 0)) == int(q.attrs.get(k, 0)):
                        continue
                    bad.append(f"{x} {k}: {p.attrs.get(k)} vs {q.attrs.get(k)}")
            for k in ("levels", "wscale", "table", "codebook"):
                if (k in p) != (k in q) or (k in p and not np.array_equal(p[k][...], q[k][...])):
                    bad.append(f"{x} {k}")
    return bad


def roundtrip(work, onnx_path, qpath, ref_int, n, what):
    back = os.path.join(work, "back.h5")
    rc, so, se = run(ONNX2CCQ + [onnx_path, back])
    t.check(f"{what}: onnx2ccq reads the export", rc == 0 and se == "", se.strip())
    if rc:
        return
    bad = same_quantized(qpath, back)
    t.check(f"{what}: levels, scales, zero points, tables, widths, fusions and thresholds read back as they were",
            not bad,
            f"{bad[:8]}")
    lg = os.path.join(work, "back_logits.h5")
    rc, so, se = run([ccq, "eval", back, "--data", a.data, "--limit", str(n), "--save-logits", lg])
    t.check(f"{what}: ccq eval runs the model read back", rc == 0, se.strip())
    if rc:
        return
    with h5py.File(lg, "r") as f:
        got = f["logits_int"][...]
    t.check(f"{what}: int32 logits identical to the original's on {n} images (export -> onnx2ccq -> ccq eval)",
            np.array_equal(got, ref_int), f"{int((got != ref_int).any(1).sum())} images differ")
    os.unlink(back)


def qdq_errors(work, onnx_path):
    """Conventions onnx2ccq cannot represent exactly: one line naming the node, exit 1, no file."""
    import onnx
    from onnx import numpy_helper

    def variant(name, edit, needles):
        m = onnx.load(onnx_path)
        edit(m)
        p = os.path.join(work, f"bad_{name}.onnx")
        onnx.save(m, p)
        out = os.path.join(work, f"bad_{name}.h5")
        rc, so, se = run(ONNX2CCQ + [p, out])
        lines = se.strip().splitlines()
        t.check(f"onnx2ccq {name}: exit 1, one line", rc == 1 and len(lines) == 1, se)
        for s in needles:
            t.check(f"onnx2ccq {name}: names '{s}'", s in se, se)
        t.check(f"onnx2ccq {name}: no output", not os.path.exists(out))

    def set_init(m, name, value):
        for k, i in enumerate(m.graph.initializer):
            if i.name == name:
                m.graph.initializer[k].CopyFrom(numpy_helper.from_array(value, name))

    def first(m, op):
        return next(n for n in m.graph.node if n.op_type == op)

    def wzp(m):
        z = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "n0_wzp")).copy()
        z[0] = 3
        set_init(m, "n0_wzp", z)
    variant("asymmetric weights", wzp, ["zero point", "DequantizeLinear"])

    def per_channel_act(m):
        q = first(m, "QuantizeLinear")
        set_init(m, q.input[1], np.full(4, 0.1, np.float32))
        set_init(m, q.input[2], np.zeros(4, np.uint8))
        q.attribute.append(onnx.helper.make_attribute("axis", 1))
    variant("per-channel activations", per_channel_act, ["per tensor", "QuantizeLinear"])

    def int8_act(m):
        q = first(m, "QuantizeLinear")
        set_init(m, q.input[2], np.array(0, np.int8))
    variant("int8 activations", int8_act, ["uint8", "QuantizeLinear"])

    def bias_scale(m):
        s = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "n0_bias_scale")).copy()
        s *= np.float32(2)
        set_init(m, "n0_bias_scale", s)
    variant("bias at another scale", bias_scale, ["bias", "s_in"])


def init_for(bits):
    if "=" not in a.init:
        return a.init
    return dict(x.split("=") for x in a.init.split(",")).get(str(bits), "rtn")


def quantized_case(work, model, data, bits, labels_all):
    q = os.path.join(work, f"q_w{bits}.h5")
    init = init_for(bits)
    width = ["--budget", a.budget, "--alloc-images", "256", "--alloc-gens", "4"] if a.budget else ["--wbits", str(bits)]
    if a.factorize:
        rc, so, se = run([ccq, "factorize", model, "--data", data, "--ratio", a.factorize, "--wbits", str(bits),
                          "--calib", str(a.calib), "-o", q])
        t.check(f"factorize {os.path.basename(model)} ratio {a.factorize} w{bits}", rc == 0, se)
    else:
        rc, so, se = run([ccq, "quantize", model, "--data", data, *width, "--calib", str(a.calib),
                          "--init", init, "--levels", a.levels, "-o", q])
        t.check(f"quantize {os.path.basename(model)} w{bits} ({init}, {a.levels} levels)", rc == 0, se)
    if rc:
        return
    if a.budget:
        with h5py.File(q, "r") as f:
            used = {int(g.attrs["bits"]) for g in f["nodes"].values() if "levels" in g}
        t.check("--budget: at least three widths in one network", len(used) >= 3, f"{used}")
    if a.prune_act:
        q = prune_act_copy(t, ccq, q, a.data, a.prune_act)
        if q is None:
            return
    lg = os.path.join(work, "ref.h5")
    rc, so, se = run([ccq, "eval", q, "--data", data, "--save-logits", lg] + (["--limit", str(a.images)] if a.images else []))
    t.check("ccq eval --save-logits", rc == 0, se)
    if rc:
        return
    with h5py.File(lg, "r") as f:
        ref = f["logits_int"][...]
    n = ref.shape[0]
    with h5py.File(data, "r") as f:
        images = f["test/images"][:n]
        labels = f["test/labels"][:n]
    with h5py.File(q, "r") as f:
        mean = f["input"].attrs["mean"].astype(np.float64)
        std = f["input"].attrs["std"].astype(np.float64)
    print(f"{os.path.basename(model)} w{bits} ({init}):")
    o = os.path.join(work, f"q_w{bits}.onnx")
    rc, so, se = run([ccq, "export", q, "--format", "onnx", o])
    t.check(f"export w{bits}", rc == 0 and se == "", se)
    if rc:
        return
    print("  " + so.strip())
    check_onnx(o, q, ref.shape[1])
    got, info = ort_logits(work, o, images, "uint8")
    agreement(f"w{bits} uint8 input", got, ref, labels)
    if info:
        print(f"  ONNX Runtime {info['ort']['node']}: {info['seconds']:.2f} s")
    if a.roundtrip:
        roundtrip(work, o, q, ref, n, f"w{bits}")
    if a.qdq_errors:
        qdq_errors(work, o)
    if a.float_input:
        of = os.path.join(work, f"q_w{bits}_float.onnx")
        rc, so, se = run([ccq, "export", q, "--format", "onnx", of, "--input", "float"])
        t.check(f"export w{bits} --input float", rc == 0 and se == "", se)
        if rc:
            return
        check_onnx(of, q, ref.shape[1])
        c = images.shape[1]
        x = ((images.astype(np.float64) / 255.0 - mean.reshape(1, c, 1, 1)) / std.reshape(1, c, 1, 1)).astype(np.float32)
        got, _ = ort_logits(work, of, x, "float32")
        agreement(f"w{bits} float input", got, ref, labels)
        if a.roundtrip:
            roundtrip(work, of, q, ref, n, f"w{bits} float input")


# ---- pnet: what lenet, ResNet-20 and the every-op network lack ------------------------------------


def window_out(n, k, s, p0, p1, d=1, ceil=0):
    num = n + p0 + p1 - d * (k - 1) - 1
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + p0:
        o -= 1
    return o


def make_pnet(work, refused=False):
    """3x12x12 input; random weights and images. refused: an average pool ONNX cannot express."""
    import data2ccq
    import onnx2ccq
    rng = np.random.default_rng(5)
    W = lambda *s: (rng.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5).astype(np.float32)  # noqa: E731
    B = lambda n: (rng.standard_normal(n) * 0.1).astype(np.float32)  # noqa: E731

    def node(op, name, inputs, shape, data=None, **attrs):
        return {"op": op, "name": name, "inputs": inputs, "shape": shape, "attrs": attrs, "data": data or {}}
    if refused:
        h = window_out(12, 3, 2, 0, 0, 1, 1)  # 6: the last window [10, 13) reaches past the input
        nodes = [node("conv2d", "c", [-1], (4, 12, 12), {"weight": W(4, 3, 3, 3), "bias": B(4)},
                      kernel=[3, 3], stride=[1, 1], pad=[1, 1, 1, 1], dilation=[1, 1]),
                 node("avgpool", "ap_ceil_cip", [0], (4, h, h), kernel=[3, 3], stride=[2, 2], pad=[0, 0, 0, 0],
                      ceil_mode=1, count_include_pad=1),
                 node("flatten", "f", [1], (4 * h * h,)),
                 node("linear", "fc", [2], (5,), {"weight": W(5, 4 * h * h), "bias": B(5)})]
    else:
        h0, w0 = window_out(12, 3, 1, 2, 0, 2), window_out(12, 3, 1, 1, 2, 2)             # 10 x 11
        h1, w1 = window_out(h0, 3, 2, 1, 1, 1, 1), window_out(w0, 3, 2, 1, 1, 1, 1)         # ceil mode
        h4, w4 = window_out(h1, 3, 2, 1, 1, 1, 1), window_out(w1, 3, 2, 1, 1, 1, 1)
        h5, w5 = window_out(h1, 3, 2, 1, 1), window_out(w1, 3, 2, 1, 1)
        h7, w7 = window_out(h1, 2, 2, 0, 1, 1, 1), window_out(w1, 2, 2, 0, 1, 1, 1)        # ceil, cip, in the pad
        h6, w6 = window_out(h4, 3, 1, 1, 1, 2), window_out(w4, 3, 1, 1, 1, 1)
        f9, f10, f11 = 8 * h6 * w6, 8 * h5 * w5, 8 * h7 * w7
        nodes = [
            node("conv2d", "dil", [-1], (8, h0, w0), {"weight": W(8, 3, 3, 3), "bias": B(8)},
                 kernel=[3, 3], stride=[1, 1], pad=[2, 1, 0, 2], dilation=[2, 2]),                  # 0
            node("maxpool", "mp_ceil", [0], (8, h1, w1), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=1),
            node("relu", "relu_alone", [1], (8, h1, w1)),                                            # 2
            node("batchnorm", "bn_alone", [2], (8, h1, w1), {"gamma": 1 + B(8), "beta": B(8), "mean": B(8),
                                                             "var": 0.5 + np.abs(B(8))}, eps=np.float32(1e-5)),
            node("relu", "bn_relu", [3], (8, h1, w1)),                                               # 4 (fused)
            node("avgpool", "ap_ceil", [4], (8, h4, w4), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=1,
                 count_include_pad=0),                                                               # 5
            node("avgpool", "ap_cip", [4], (8, h5, w5), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=0,
                 count_include_pad=1),                                                               # 6
            node("conv2d", "gdil", [5], (8, h6, w6), {"weight": W(8, 2, 3, 3)},
                 kernel=[3, 3], stride=[1, 1], pad=[1, 1, 1, 1], dilation=[2, 1], groups=4),        # 7 (no bias)
            node("act", "sig", [7], (8, h6, w6), fn="sigmoid"),                                      # 8
            node("mul", "silu", [7, 8], (8, h6, w6)),                                                # 9
            node("avgpool", "ap_ceil_cip", [4], (8, h7, w7), kernel=[2, 2], stride=[2, 2], pad=[0, 0, 1, 1],
                 ceil_mode=1, count_include_pad=1),                                                  # 10
            node("flatten", "f_a", [9], (f9,)),                                                      # 11
            node("flatten", "f_b", [6], (f10,)),                                                     # 12
            node("flatten", "f_c", [10], (f11,)),                                                    # 13
            node("concat", "cat_f", [11, 12, 13], (f9 + f10 + f11,), axis=0),                        # 14
            node("pad", "pad_f", [14], (f9 + f10 + f11 + 8,), pads=[3, 5]),                          # 15
            node("slice", "rev_f", [15], ((f9 + f10 + f11 + 8) // 2,), start=[f9 + f10 + f11 + 7], step=[-2]),
            node("linear", "fc1", [16], (16,), {"weight": W(16, (f9 + f10 + f11 + 8) // 2), "bias": B(16)}),
            node("clip", "clip_fc1", [17], (16,), min=np.float32(-1.5), max=np.float32(3.4e38)),     # 18 (fused)
            node("add", "twice", [18, 18], (16,)),                                                   # 19
            node("relu", "add_relu", [19], (16,)),                                                   # 20 (fused)
            node("act", "dead", [20], (16,), fn="tanh"),                                             # 21: unused
            node("linear", "fc2", [20], (5,), {"weight": W(5, 16), "bias": B(5)}),                   # 22
        ]
    model = os.path.join(work, "refused.h5" if refused else "pnet.h5")
    # mean 0.4: 255 mean is a whole level, so the float-input export's QuantizeLinear gives back the pixels
    onnx2ccq.write(model, "pnet", (3, 12, 12), np.full(3, 0.4, np.float32), np.full(3, 0.25, np.float32), nodes)
    data = os.path.join(work, "pdata.h5")
    if not os.path.exists(data):
        x = lambda n: rng.integers(0, 256, (n, 3, 12, 12), dtype=np.uint8)  # noqa: E731
        y = lambda n: rng.integers(0, 5, n).astype(np.int32)  # noqa: E731
        data2ccq.write(data, {"train": (x(256), y(256)), "test": (x(1000), y(1000))}, 5, "random")
    return model, data


def pnet(work):
    model, data = make_pnet(work)
    q = os.path.join(work, "pq.h5")
    rc, so, se = run([ccq, "quantize", model, "--data", data, "--wbits", "4", "--calib", "64", "-o", q])
    t.check("quantize pnet w4", rc == 0, se)
    with h5py.File(q, "r") as f:
        nd = [f["nodes"][k] for k in sorted(f["nodes"].keys())]
        ops = {(g.attrs["op"].decode(), int(g.attrs.get("relu", 0)), "clip" in g.attrs) for g in nd}
    need = {("conv2d", 0, False), ("maxpool", 0, False), ("relu", 0, False), ("batchnorm", 1, False),
            ("avgpool", 0, False), ("act", 0, False), ("mul", 0, False), ("flatten", 0, False), ("concat", 0, False),
            ("pad", 0, False), ("slice", 0, False), ("linear", 0, True), ("add", 1, False), ("linear", 0, False)}
    t.check("the quantized pnet has its ops (standalone relu, batchnorm and add with a fused relu, a fused clip)",
            need <= ops, f"missing {need - ops}")
    global a
    a.data = data
    quantized_case(work, model, data, 4, None)
    # refused: one line naming the node, exit 2, no output
    model, _ = make_pnet(work, refused=True)
    work = os.path.join(work, "refused")
    os.makedirs(work)
    q = os.path.join(work, "rq.h5")
    rc, so, se = run([ccq, "quantize", model, "--data", data, "--wbits", "4", "--calib", "64", "-o", q])
    t.check("quantize the refused network", rc == 0, se)
    out = os.path.join(work, "refused.onnx")
    rc, so, se = run([ccq, "export", q, "--format", "onnx", out])
    t.check("ceil-mode avgpool counting padding past the end padding: exit 2", rc == 2, f"{rc} {se}")
    t.check("... one line naming the node", len(se.splitlines()) == 1 and "ap_ceil_cip" in se and "avgpool" in se, se)
    t.check("... no output, no temporary", not any(f.endswith(".onnx") or ".tmp" in f for f in os.listdir(work)),
            f"{os.listdir(work)}")
    t.check("... nothing on stdout", so == "", so)


# ---- a QDQ model as other quantizers write it ------------------------------------------------------


def make_foreign(work, images):
    """A small classifier quantized the usual way (ONNX Runtime's quantize_static QDQ convention):
    float input -> QuantizeLinear; weights int8 symmetric per output channel (DequantizeLinear, axis
    0; Gemm's B [in, out] at axis 1), int32 biases at s_in * s_w, uint8 per-tensor activations with
    min/max ranges from 64 images, Relu and Sigmoid between DequantizeLinear and QuantizeLinear, pool
    and flatten at their input's scale. Weights random, fixed seed."""
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(3)
    w1 = (rng.standard_normal((8, 1, 3, 3)) * 0.5).astype(np.float32)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((16, 8, 3, 3)) * 0.15).astype(np.float32)
    b2 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    w3 = (rng.standard_normal((16 * 12 * 12, 10)) * 0.05).astype(np.float32)  # Gemm B [in, out], transB = 0
    b3 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    mean, std = 0.2860, 0.3530
    x = torch.from_numpy(((images[:64].astype(np.float32) / 255.0 - mean) / std).astype(np.float32))
    t = {"x": x}
    t["c1"] = F.relu(F.conv2d(t["x"], torch.from_numpy(w1), torch.from_numpy(b1), padding=1))
    t["p1"] = F.max_pool2d(t["c1"], 2)
    t["c2"] = F.conv2d(t["p1"], torch.from_numpy(w2), torch.from_numpy(b2))
    t["s2"] = torch.sigmoid(t["c2"])

    def uq(v):  # uint8 min/max quantization, zero included
        lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
        sc = np.float32((hi - lo) / 255.0)
        return sc, np.uint8(min(255, max(0, round(-lo / float(sc)))))
    q = {k: uq(v) for k, v in t.items()}
    q["p1"] = q["c1"]  # the pool keeps its input's quantization, as quantize_static does
    nodes, inits = [], []

    def const(name, v):
        inits.append(numpy_helper.from_array(v, name))
        return name

    def qdq(tensor, key, tag=None):
        sc, zp = q[key]
        tag = tag or key
        const(f"{key}_s", np.array(sc, np.float32)), const(f"{key}_z", np.array(zp, np.uint8))
        nodes.append(helper.make_node("QuantizeLinear", [tensor, f"{key}_s", f"{key}_z"], [f"{tag}_q"], name=f"{tag}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_q", f"{key}_s", f"{key}_z"], [f"{tag}_dq"],
                                      name=f"{tag}_DQ"))
        return f"{tag}_dq"

    def weight(name, w, axis, s_in, b):
        m = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis))
        s = (m / 127.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        lev = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
        const(f"{name}_w", lev), const(f"{name}_ws", s), const(f"{name}_wz", np.zeros(s.size, np.int8))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_w", f"{name}_ws", f"{name}_wz"], [f"{name}_wdq"],
                                      axis=axis, name=f"{name}_WDQ"))
        bs = (np.float32(s_in) * s).astype(np.float32)
        const(f"{name}_b", np.round(b / bs).astype(np.int32)), const(f"{name}_bs", bs)
        const(f"{name}_bz", np.zeros(s.size, np.int32))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_b", f"{name}_bs", f"{name}_bz"], [f"{name}_bdq"],
                                      axis=0, name=f"{name}_BDQ"))
        return f"{name}_wdq", f"{name}_bdq"
    x = qdq("input", "x")
    w, b = weight("c1", w1, 0, q["x"][0], b1)
    nodes.append(helper.make_node("Conv", [x, w, b], ["c1_f"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], name="conv1"))
    nodes.append(helper.make_node("Relu", ["c1_f"], ["c1_r"], name="relu1"))
    x = qdq("c1_r", "c1")
    nodes.append(helper.make_node("MaxPool", [x], ["p1_f"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"))
    x = qdq("p1_f", "p1")
    w, b = weight("c2", w2, 0, q["p1"][0], b2)
    nodes.append(helper.make_node("Conv", [x, w, b], ["c2_f"], kernel_shape=[3, 3], name="conv2"))
    x = qdq("c2_f", "c2")
    nodes.append(helper.make_node("Sigmoid", [x], ["s2_f"], name="sig2"))
    x = qdq("s2_f", "s2")
    nodes.append(helper.make_node("Flatten", [x], ["fl_f"], axis=1, name="flat"))
    x = qdq("fl_f", "s2", "fl")
    w, b = weight("fc", w3, 1, q["s2"][0], b3)
    nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], name="fc"))
    # the flatten's Q/DQ share the sigmoid's parameters: drop its duplicate initializers
    seen, uniq = set(), []
    for i in inits:
        if i.name not in seen:
            seen.add(i.name)
            uniq.append(i)
    g = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], uniq)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m, full_check=True)
    path = os.path.join(work, "foreign.onnx")
    onnx.save(m, path)
    return path, mean, std


def foreign(work):
    """onnx2ccq reads another tool's QDQ model into a quantized model file whose ccq eval agrees with
    ONNX Runtime on the ONNX file."""
    with h5py.File(a.data, "r") as f:
        images = f["test/images"][:1000]
        labels = f["test/labels"][:1000]
    path, mean, std = make_foreign(work, f_train_images(a.data))
    out = os.path.join(work, "foreign.h5")
    rc, so, se = run(ONNX2CCQ + [path, out, "--mean", str(mean), "--std", str(std)])
    t.check("onnx2ccq reads a quantize_static-style QDQ model", rc == 0 and se == "", se.strip())
    if rc:
        return
    with h5py.File(out, "r") as f:
        nd = [f["nodes"][k] for k in sorted(f["nodes"].keys())]
        ops = [(g.attrs["op"].decode(), int(g.attrs.get("relu", 0)), int(g.attrs.get("bits", 0))) for g in nd]
    want = [("conv2d", 1, 8), ("maxpool", 0, 0), ("conv2d", 0, 8), ("act", 0, 0), ("flatten", 0, 0), ("linear", 0, 8)]
    t.check("foreign: conv (ReLU fused), pool, conv, sigmoid table, flatten, linear at 8 bits", ops == want, f"{ops}")
    lg = os.path.join(work, "foreign_logits.h5")
    rc, so, se = run([ccq, "eval", out, "--data", a.data, "--limit", "1000", "--save-logits", lg])
    t.check("foreign: ccq eval runs it", rc == 0, se)
    if rc:
        return
    with h5py.File(lg, "r") as f:
        ref = f["logits_int"][...]
    x = ((images.astype(np.float64) / 255.0 - mean) / std).astype(np.float32)
    got, _ = ort_logits(work, path, x, "float32")
    agreement("foreign QDQ model: ONNX Runtime on the file against ccq eval of onnx2ccq's", got, ref, labels)
    if got is not None:
        with h5py.File(lg, "r") as f:
            real = f["logits"][...]
        err = float(np.abs(got - real).max() / np.abs(real).max())
        print(f"  foreign: {len(set(real.argmax(1)))} classes predicted, worst logit difference {err:.4f} of the largest")
        t.check("foreign: logits within 2% of the largest (the same network, other rounding)", err <= 0.02, f"{err}")


def f_train_images(data):
    with h5py.File(data, "r") as f:
        return f["train/images"][:64]


# ---- errors --------------------------------------------------------------------------------------------


def errors(fx, data):
    USAGE, IO, FORMAT = 2, 3, 4
    work = tempfile.mkdtemp(prefix="ccq_onnxexport_err_")
    lenet = os.path.join(ROOT, "results", "models", "lenet.h5")
    q = os.path.join(work, "q.h5")
    rc, so, se = run([ccq, "quantize", lenet, "--data", data, "--wbits", "2", "--calib", "16", "-o", q])
    t.check("quantize lenet w2", rc == 0, se)

    def listing():
        return {os.path.relpath(os.path.join(d, f), work): (os.path.getmtime(os.path.join(d, f)),
                                                            os.path.getsize(os.path.join(d, f)))
                for d, _, fs in os.walk(work) for f in fs} | \
               {os.path.relpath(d, work) + "/": 0 for d, _, _ in os.walk(work)}

    def expect(what, args, code, needles):
        t.refusal(what)
        before = listing()
        rc, so, se = run([ccq, "export"] + args)
        lines = se.splitlines()
        t.check(f"{what}: exit code {code}", rc == code, f"got {rc}; stderr={se!r}")
        t.check(f"{what}: one stderr line", len(lines) == 1 and lines[0].startswith("ccq: "), repr(se))
        t.check(f"{what}: nothing on stdout", so == "", repr(so))
        for n in needles:
            t.check(f"{what}: message names '{n}'", n in se, repr(se))
        t.check(f"{what}: nothing written, nothing changed", listing() == before,
                f"{set(listing().items()) ^ set(before.items())}")

    out = os.path.join(work, "out.onnx")
    expect("missing OUT.onnx", [q, "--format", "onnx"], USAGE, ["missing OUT.onnx"])
    expect("--input bad", [q, "--format", "onnx", out, "--input", "int8"], USAGE, ["--input must be uint8 or float"])
    expect("--input without a value", [q, "--format", "onnx", out, "--input"], USAGE, ["--input needs a value"])
    expect("--name with onnx", [q, "--format", "onnx", out, "--name", "net"], USAGE, ["--name is for --format c"])
    expect("float model", [lenet, "--format", "onnx", out], USAGE, ["float model", "quantize it first"])
    expect("missing model", [os.path.join(work, "nope.h5"), "--format", "onnx", out], IO, ["nope.h5"])
    expect("not HDF5", [os.path.join(fx, "not_hdf5.h5"), "--format", "onnx", out], FORMAT, ["not an HDF5 file"])
    expect("truncated model", [os.path.join(fx, "truncated.h5"), "--format", "onnx", out], FORMAT, ["truncated"])
    expect("data file as model", [data, "--format", "onnx", out], FORMAT, ["not a ccq model file"])
    os.makedirs(os.path.join(work, "adir"))
    expect("OUT.onnx is a directory", [q, "--format", "onnx", os.path.join(work, "adir")], IO, ["is a directory"])
    expect("OUT.onnx in a missing directory", [q, "--format", "onnx", os.path.join(work, "no", "x.onnx")], IO,
           ["x.onnx", "No such file or directory"])
    expect("OUT.onnx is the input", [q, "--format", "onnx", q], USAGE, ["OUT.onnx would overwrite MODEL.h5"])
    link = os.path.join(work, "link.onnx")
    os.symlink(q, link)
    expect("OUT.onnx is a link to the input", [q, "--format", "onnx", link], USAGE, ["OUT.onnx would overwrite MODEL.h5"])
    # an existing OUT.onnx: a failed export leaves it alone, a good one replaces it
    open(out, "w").write("old")
    expect("failure with an old OUT.onnx in place", [lenet, "--format", "onnx", out], USAGE, ["float"])
    t.check("old OUT.onnx untouched", open(out).read() == "old")
    rc, so, se = run([ccq, "export", q, "--format", "onnx", out])
    t.check("export over an old file", rc == 0 and se == "" and "wrote" in so, se)
    import onnx
    t.check("the old file is replaced by the model", onnx.load(out).producer_name == "ccq")
    t.check("no temporary left", not [f for f in os.listdir(work) if ".tmp" in f], f"{os.listdir(work)}")
    rc, so, se = run([ccq, "export", "--help"])
    t.check("export --help names --format onnx and --input", rc == 0 and "--format onnx" in so and "--input float" in so, se)
    rc, so, se = run([ccq, "help"])
    t.check("ccq help lists the ONNX export", rc == 0 and "export MODEL.h5 --format onnx" in so)
    shutil.rmtree(work)


def tools():
    node = shutil.which("node")
    t.check("node is installed (scripts/setup.sh)", node is not None, "node not found on PATH")
    ort = os.path.join(ROOT, "build", "ort", "node_modules", "onnxruntime-node")
    t.check("onnxruntime-node is installed in build/ort (scripts/setup.sh)", os.path.isdir(ort), ort)


if a.errors:
    errors(a.errors, a.data)
else:
    tools()
    work = tempfile.mkdtemp(prefix=f"ccq_onnxexport_{label}_")
    try:
        if a.pnet:
            # a random network on random images: near-ties between its 5 logits make ORT's other
            # rounding flip more argmaxes than on a trained model
            a.float_input, a.roundtrip = True, True
            a.min_agree, a.max_acc_diff = 0.98, 1.0
            foreign(work)
            pnet(work)
        else:
            for bits in [int(b) for b in a.bits.split(",")]:
                quantized_case(work, a.model, a.data, bits, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
print(f"{time.time() - T0:.1f} s")
t.finish()
