#!/usr/bin/env python3
"""test_qnet.py DATA.h5 OPSNET.h5 MODEL.h5...: the integer engine, exact.

Each network is quantized with `ccq quantize` and run by `ccq eval`; its int32
logits must equal, bit for bit on every image, those of scripts/ccq_int.py, an
independent int64 reference of the engine's integer semantics computed from
the quantized file alone. Networks:
  - every MODEL.h5 (the reference models lenet and resnet20) at w8, w4 and w2
    (w2 with the first and last layer at 8 bits), round-to-nearest, and the
    first model also at w4 from a GPTQ start and at w2 with learned levels
    (codebook values, GPTQ start);
  - OPSNET.h5, the every-op network tests/test_ops.py writes (grouped and
    depthwise convs, act tables, mul broadcast, pad, slice, concat, clip...),
    at w8, w4 and w2;
  - xnet, generated here: what those lack (a 3-channel input, dilated and
    grouped dilated convs with asymmetric padding and no bias, a depthwise conv
    with channel multiplier 3, max and average pools in ceil mode with and
    without count_include_pad, a standalone relu, batchnorm with a fused ReLU
    and with a fused Clip, a clip that cannot be fused, mul of equal shapes,
    flat tensors concatenated, padded and sliced backwards, adds with a fused
    ReLU and a fused Clip, a linear layer whose width is not a multiple of 4
    feeding another), random weights and images, at w4 and w3.
The default kernel path is compared on every image of the subset; the scalar
path at micro-batch sizes 1 and 7 and every other ISA the CPU has on fewer
(ragged last micro-batches included); and, once per network, a quantized file
must evaluate to the same logits as quantizing in memory (eval --wbits).
A mismatch reports the first differing (image, class) and both values; ccq
has no way to dump intermediate activations, so the comparison is of the
logits (ccq_int.run(..., keep=True) gives the reference's per-node levels for
debugging). The float simulation (scripts/ccq_sim.py) is no longer compared:
an exact reference leaves it nothing to add."""
import os
import sys
import tempfile
import time

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
import ccq_int  # noqa: E402

data, opsnet, models = sys.argv[1], sys.argv[2], sys.argv[3:]
ccq = ccq_binary()
t = Checks("qnet")
# images per network: every op and every layer width is covered by far fewer; resnet20 is the cost
N_IMAGES = {"lenet": 1000, "resnet20": 300, "opsnet": 500, "xnet": 500}
N_ISA = 100  # scalar mb 1 and 7, and the other ISAs: every micro-batch size leaves a ragged chunk
work = tempfile.mkdtemp(prefix="ccq_qnet_")


def ccq_logits(args, d, n, env=None):
    out = os.path.join(work, "l.h5")
    rc, so, se = run([ccq, "eval"] + args + ["--data", d, "--limit", str(n), "--save-logits", out],
                     env=dict(os.environ, **(env or {})))
    if rc != 0:
        t.check(f"eval {args} {env}", False, se)
        return None
    with h5py.File(out, "r") as f:
        lg = f["logits_int"][...]
    os.unlink(out)
    return lg


def same(label, got, ref, what="ccq_int"):
    """Bit-identical int32 logits, or the first mismatch."""
    if got is None:
        return
    ok = got.shape == ref.shape and np.array_equal(got, ref)
    detail = ""
    if not ok and got.shape == ref.shape:
        img, cls = np.argwhere(got != ref)[0]
        n_img = int((got != ref).any(axis=1).sum())
        detail = (f"{n_img} of {len(ref)} images differ; first: image {img}, class {cls}: "
                  f"engine {got[img, cls]}, reference {ref[img, cls]}")
    elif not ok:
        detail = f"shape {got.shape} against {ref.shape}"
    t.check(f"{label} bit-identical to {what}", ok, detail)


def isa_supported(isa, q, d):
    rc, _, se = run([ccq, "eval", q, "--data", d, "--limit", "1"], env=dict(os.environ, CCQ_ISA=isa))
    return rc == 0 or "does not support" not in se


def check_network(label, mpath, d, n, qargs, memory=True, expect=None):
    q = os.path.join(work, "q.h5")
    t0 = time.time()
    rc, so, se = run([ccq, "quantize", mpath, "--data", d, "-o", q] + qargs)
    t.check(f"{label}: quantize", rc == 0, se)
    if rc != 0:
        return
    if expect:
        expect(label, q)
    with h5py.File(d, "r") as f:
        images = f["test/images"][:n]
    got = ccq_logits([q], d, n)
    ref = ccq_int.run(ccq_int.load(q), images)
    same(f"{label}: {n} images,", got, ref)
    for isa in ("scalar", "avx2", "avx512vnni"):
        if not isa_supported(isa, q, d):
            print(f"{label}: {isa} not supported here, skipped")
            continue
        for mb in ((1, 7) if isa == "scalar" else (64,)):
            same(f"{label}: {isa} mb={mb},", ccq_logits([q, "--mb", str(mb)], d, N_ISA, {"CCQ_ISA": isa}), ref[:N_ISA])
    if memory:
        # against the engine's own logits of the file: a property of quantize's file, not of the reference
        if got is not None:
            same(f"{label}: in-memory quantization (eval --wbits),", ccq_logits([mpath] + qargs, d, N_ISA), got[:N_ISA],
                 "the quantized file's")
    acc = ""
    with h5py.File(d, "r") as f:
        acc = f"accuracy {100.0 * (ref.argmax(1) == f['test/labels'][:n]).mean():.2f}%"
    print(f"{label}: {n} images, {acc}, {time.time() - t0:.1f} s", flush=True)
    os.unlink(q)


# ---- xnet: the ops and cases the reference models and the every-op network lack -------------


def window_out(n, k, s, p0, p1, d=1, ceil=0):
    num = n + p0 + p1 - d * (k - 1) - 1
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + p0:
        o -= 1
    return o


def make_xnet():
    import data2ccq
    import onnx2ccq
    rng = np.random.default_rng(20)
    W = lambda *s: (rng.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5).astype(np.float32)  # noqa: E731
    B = lambda n: (rng.standard_normal(n) * 0.1).astype(np.float32)  # noqa: E731
    f32 = np.float32

    def node(op, name, inputs, shape, data=None, **attrs):
        return {"op": op, "name": name, "inputs": inputs, "shape": shape, "attrs": attrs, "data": data or {}}
    h0, w0 = window_out(12, 3, 1, 2, 0, 2), window_out(12, 3, 1, 1, 2, 2)
    h1, w1 = window_out(h0, 3, 2, 1, 1, 1, 1), window_out(w0, 3, 2, 1, 1, 1, 1)
    h5, w5 = window_out(h1, 3, 2, 1, 1, 1, 1), window_out(w1, 3, 2, 1, 1, 1, 1)
    h6, w6 = window_out(h1, 3, 2, 1, 1), window_out(w1, 3, 2, 1, 1)
    h7, w7 = window_out(h5, 3, 1, 1, 1, 2), window_out(w5, 3, 1, 1, 1, 1)
    h13, w13 = window_out(h7, 3, 2, 1, 1), window_out(w7, 3, 2, 0, 1)
    f14, f15 = 24 * h13 * w13, 8 * h6 * w6
    f17 = f14 + f15 + 8
    f18 = (f17 + 1) // 2
    bn = lambda c: {"gamma": 1 + B(c), "beta": B(c), "mean": B(c), "var": 0.5 + np.abs(B(c))}  # noqa: E731
    nodes = [
        node("conv2d", "dil", [-1], (8, h0, w0), {"weight": W(8, 3, 3, 3)},
             kernel=[3, 3], stride=[1, 1], pad=[2, 1, 0, 2], dilation=[2, 2]),                           # 0
        node("maxpool", "mp_ceil", [0], (8, h1, w1), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=1),  # 1
        node("relu", "relu_alone", [1], (8, h1, w1)),                                                     # 2
        node("batchnorm", "bn_relu", [2], (8, h1, w1), bn(8), eps=f32(1e-5)),                             # 3
        node("relu", "bn_relu_r", [3], (8, h1, w1)),                                                      # 4: fused
        node("avgpool", "ap_ceil", [4], (8, h5, w5), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=1,
             count_include_pad=0),                                                                        # 5
        node("avgpool", "ap_cip", [4], (8, h6, w6), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=0,
             count_include_pad=1),                                                                        # 6
        node("conv2d", "gdil", [5], (8, h7, w7), {"weight": W(8, 2, 3, 3), "bias": B(8)},
             kernel=[3, 3], stride=[1, 1], pad=[1, 1, 1, 1], dilation=[2, 1], groups=4),                 # 7
        node("act", "sig", [7], (8, h7, w7), fn="sigmoid"),                                               # 8
        node("mul", "silu", [7, 8], (8, h7, w7)),                                                         # 9
        node("clip", "clip_alone", [9], (8, h7, w7), min=f32(-0.2), max=f32(0.3)),                        # 10
        node("batchnorm", "bn_clip", [10], (8, h7, w7), bn(8), eps=f32(1e-3)),                            # 11
        node("clip", "bn_clip_c", [11], (8, h7, w7), min=f32(-1.0), max=f32(3.0e38)),                     # 12: fused
        node("conv2d", "dw_m3", [12], (24, h13, w13), {"weight": W(24, 1, 3, 3), "bias": B(24)},
             kernel=[3, 3], stride=[2, 2], pad=[1, 0, 1, 1], dilation=[1, 1], groups=8),                 # 13
        node("flatten", "f_a", [13], (f14,)),                                                             # 14
        node("flatten", "f_b", [6], (f15,)),                                                              # 15
        node("concat", "cat_f", [14, 15], (f14 + f15,), axis=0),                                          # 16
        node("pad", "pad_f", [16], (f17,), pads=[3, 5]),                                                  # 17
        node("slice", "rev_f", [17], (f18,), start=[f17 - 1], step=[-2]),                                # 18
        node("linear", "fc1", [18], (15,), {"weight": W(15, f18), "bias": B(15)}),                        # 19
        node("add", "twice", [19, 19], (15,)),                                                            # 20
        node("relu", "twice_r", [20], (15,)),                                                             # 21: fused
        node("add", "res", [21, 19], (15,)),                                                              # 22
        node("clip", "res_c", [22], (15,), min=f32(-0.5), max=f32(1.0)),                                  # 23: fused
        node("concat", "cat_same", [23, 23], (30,), axis=0),                                              # 24
        node("linear", "fc2", [24], (5,), {"weight": W(5, 30), "bias": B(5)}),                            # 25
    ]
    model = os.path.join(work, "xnet.h5")
    onnx2ccq.write(model, "xnet", (3, 12, 12), np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32), nodes)
    xdata = os.path.join(work, "xdata.h5")
    x = lambda n: rng.integers(0, 256, (n, 3, 12, 12), dtype=np.uint8)  # noqa: E731
    y = lambda n: rng.integers(0, 5, n).astype(np.int32)  # noqa: E731
    data2ccq.write(xdata, {"train": (x(256), y(256)), "test": (x(N_IMAGES["xnet"]), y(N_IMAGES["xnet"]))}, 5, "random")
    return model, xdata


# Calibration on 256 images instead of 1,024: the ranges change, not what is tested, and calibration
# (a float forward pass) is most of `ccq quantize`'s time.
CALIB = ["--calib", "256"]
T0 = time.time()
for mpath in models:
    name = os.path.splitext(os.path.basename(mpath))[0]
    for bits, fl8 in ((8, False), (4, False), (2, True)):
        check_network(f"{name} w{bits}a8{' first/last 8' if fl8 else ''}", mpath, data, N_IMAGES.get(name, 300),
                      ["--wbits", str(bits)] + (["--first-last-8"] if fl8 else []) + CALIB, memory=fl8)
if models:
    name = os.path.splitext(os.path.basename(models[0]))[0]
    check_network(f"{name} w4a8 gptq", models[0], data, N_IMAGES.get(name, 300),
                  ["--wbits", "4", "--init", "gptq"] + CALIB, memory=False)
    # learned levels: codebook values up to +-63 (AVX2's other layout at 8 bits is not needed)
    check_network(f"{name} w2a8 learned", models[0], data, N_IMAGES.get(name, 300),
                  ["--wbits", "2", "--levels", "learned", "--init", "gptq"] + CALIB, memory=False)
for bits in (8, 4, 2):
    check_network(f"opsnet w{bits}a8", opsnet, data, N_IMAGES["opsnet"], ["--wbits", str(bits)] + CALIB,
                  memory=bits == 4)


def xnet_ops(label, q):
    """The quantized xnet still holds what it is made for (fusion could have folded it away)."""
    with h5py.File(q, "r") as f:
        nodes = [dict(f["nodes"][k].attrs) for k in sorted(f["nodes"].keys())]
    has = lambda op, pred=lambda a: True: sum(a["op"].decode() == op and pred(a) for a in nodes)  # noqa: E731
    for what, n in (("a standalone relu", has("relu")), ("a standalone clip", has("clip")),
                    ("two average pools", has("avgpool") // 2),
                    ("batchnorm with a fused ReLU", has("batchnorm", lambda a: a.get("relu", 0) == 1)),
                    ("batchnorm with a fused Clip", has("batchnorm", lambda a: "clip" in a)),
                    ("add with a fused ReLU", has("add", lambda a: a.get("relu", 0) == 1)),
                    ("add with a fused Clip", has("add", lambda a: "clip" in a)),
                    ("a depthwise conv with multiplier 3", has("conv2d", lambda a: a.get("groups", 1) == 8))):
        t.check(f"{label}: the quantized network has {what}", n == 1, f"{[a['op'] for a in nodes]}")


xnet, xdata = make_xnet()
for bits in (4, 3):
    check_network(f"xnet w{bits}a8", xnet, xdata, N_IMAGES["xnet"], ["--wbits", str(bits)], memory=bits == 3,
                  expect=xnet_ops)
print(f"total {time.time() - T0:.1f} s")
t.finish()
