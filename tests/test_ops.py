#!/usr/bin/env python3
"""test_ops.py DATA.h5 OUT.h5: every operator of the op table in one network,
against PyTorch.

Builds, with fixed random weights, a 1x28x28 network that uses every op
(conv2d dense, grouped, depthwise 3x3 with a channel multiplier of 2 and
depthwise 5x5 with multiplier 1 over 24 channels, a ReLU6 clip
that quant_fold fuses and a clip that cannot be fused, every act function,
a squeeze-and-excitation block with mul broadcast per channel, an option-A
shortcut: strided slice and channel pad, concat along C, H and W, a slice
with a negative step, pools, flatten, linear), writes it as a ccq model file
(OUT.h5, used by the qnet and qcache tests after this one), and checks:
  - ccq's float forward (`ccq eval --float`) against PyTorch's logits on the
    first 200 test images: max |difference| <= 1e-4 x max |logit|, and the
    same argmax everywhere;
  - the file round trip: `ccq quantize` writes a quantized file that
    `ccq eval` runs (the fused clip and the act tables are in it), and
    `ccq inspect` lists every op;
  - the int32 logits of the quantized network are identical for every ISA
    the CPU has and micro-batch sizes 1, 7 and 64, and identical again with
    CCQ_DEPTHWISE=gemm (depthwise convs as grouped GEMMs instead of the
    depthwise kernel) on every ISA.
The network is not trained: agreement of outputs is what is tested."""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from ccqtest import Checks, ccq_binary, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import onnx2ccq  # noqa: E402

data, out = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("ops")
g = torch.Generator().manual_seed(7)
MEAN, STD = 0.2860, 0.3530


def W(*shape, fan=None):
    fan = fan or int(np.prod(shape[1:]))
    return torch.randn(*shape, generator=g) * (2.0 / fan) ** 0.5


def B(n):
    return torch.randn(n, generator=g) * 0.1


P = {
    "c1": (W(8, 1, 3, 3), B(8)),
    "dw": (W(16, 1, 3, 3), B(16)),          # depthwise, channel multiplier 2
    "se1": (W(4, 16, 1, 1), B(4)),
    "se2": (W(16, 4, 1, 1), B(16)),
    "gc": (W(24, 8, 3, 3), B(24)),          # groups = 2
    "fc": (W(10, 48 * 7 * 7), B(10)),
    "dw5": (W(24, 1, 5, 5), B(24)),         # depthwise, multiplier 1 (drawn last: the others keep their values)
}
ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardswish": F.hardswish,
       "hardsigmoid": lambda x: torch.clamp(x / 6 + 0.5, 0, 1),
       "leakyrelu": lambda x: F.leaky_relu(x, 0.1), "elu": lambda x: F.elu(x, 1.0),
       "gelu": lambda x: F.gelu(x), "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


def torch_forward(x):
    x = (x / 255.0 - MEAN) / STD
    a = torch.clamp(F.conv2d(x, *P["c1"], padding=1), 0, 6)
    d = F.hardswish(F.conv2d(a, *P["dw"], stride=2, padding=1, groups=8))
    s = F.adaptive_avg_pool2d(d, 1)
    s = ACT["hardsigmoid"](F.conv2d(F.relu(F.conv2d(s, *P["se1"])), *P["se2"]))
    m = d * s
    short = F.pad(m[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))
    r = F.leaky_relu(F.conv2d(m, *P["gc"], stride=2, padding=1, groups=2) + short, 0.1)
    r = F.conv2d(r, *P["dw5"], padding=2, groups=24)
    c = F.gelu(torch.cat([torch.sigmoid(r), torch.tanh(r)], 1))
    e = F.elu(c)
    w = torch.cat([e, torch.flip(e, [3])], 3)
    h = torch.clamp(torch.cat([w, w], 2), -0.5, 1.5)
    p = F.gelu(F.max_pool2d(h, 2), approximate="tanh")
    return F.linear(p.flatten(1), *P["fc"])


def conv(name, src, shape, key, k, stride, pad, groups=1):
    w, b = P[key]
    at = {"kernel": [k, k], "stride": [stride, stride], "pad": [pad] * 4, "dilation": [1, 1]}
    if groups > 1:
        at["groups"] = groups
    return {"op": "conv2d", "name": name, "inputs": [src], "shape": shape, "attrs": at,
            "data": {"weight": w.numpy(), "bias": b.numpy()}}


def act(name, src, shape, fn, alpha=None, beta=None):
    at = {"fn": fn}
    if alpha is not None:
        at["alpha"] = np.float32(alpha)
    if beta is not None:
        at["beta"] = np.float32(beta)
    return {"op": "act", "name": name, "inputs": [src], "shape": shape, "attrs": at, "data": {}}


def node(op, name, inputs, shape, **attrs):
    return {"op": op, "name": name, "inputs": inputs, "shape": shape, "attrs": attrs, "data": {}}


nodes = [
    conv("c1", -1, (8, 28, 28), "c1", 3, 1, 1),                                       # 0
    node("clip", "relu6", [0], (8, 28, 28), min=np.float32(0), max=np.float32(6)),     # 1
    conv("dw", 1, (16, 14, 14), "dw", 3, 2, 1, groups=8),                              # 2
    act("hswish", 2, (16, 14, 14), "hardswish"),                                       # 3
    node("globalavgpool", "se_pool", [3], (16, 1, 1)),                                 # 4
    conv("se1", 4, (4, 1, 1), "se1", 1, 1, 0),                                         # 5
    node("relu", "se_relu", [5], (4, 1, 1)),                                           # 6
    conv("se2", 6, (16, 1, 1), "se2", 1, 1, 0),                                        # 7
    act("hsig", 7, (16, 1, 1), "hardsigmoid", 1 / 6, 0.5),                             # 8
    node("mul", "se_mul", [3, 8], (16, 14, 14)),                                       # 9
    node("slice", "sub", [9], (16, 7, 7), start=[0, 0, 0], step=[1, 2, 2]),            # 10
    node("pad", "chpad", [10], (24, 7, 7), pads=[4, 0, 0, 4, 0, 0]),                   # 11
    conv("gc", 9, (24, 7, 7), "gc", 3, 2, 1, groups=2),                                # 12
    node("add", "res", [12, 11], (24, 7, 7)),                                          # 13
    act("lrelu", 13, (24, 7, 7), "leakyrelu", 0.1),                                    # 14
    conv("dw5", 14, (24, 7, 7), "dw5", 5, 1, 2, groups=24),                            # 15
    act("sig", 15, (24, 7, 7), "sigmoid"),                                             # 16
    act("tanh", 15, (24, 7, 7), "tanh"),                                               # 17
    node("concat", "cat_c", [16, 17], (48, 7, 7), axis=0),                             # 18
    act("gelu", 18, (48, 7, 7), "gelu"),                                               # 19
    act("elu", 19, (48, 7, 7), "elu", 1.0),                                            # 20
    node("slice", "flip", [20], (48, 7, 7), start=[0, 0, 6], step=[1, 1, -1]),         # 21
    node("concat", "cat_w", [20, 21], (48, 7, 14), axis=2),                            # 22
    node("concat", "cat_h", [22, 22], (48, 14, 14), axis=1),                           # 23
    node("clip", "clip", [23], (48, 14, 14), min=np.float32(-0.5), max=np.float32(1.5)),  # 24
    node("maxpool", "pool", [24], (48, 7, 7), kernel=[2, 2], stride=[2, 2], pad=[0, 0, 0, 0], ceil_mode=0),  # 25
    act("gelu_t", 25, (48, 7, 7), "gelu_tanh"),                                        # 26
    node("flatten", "flat", [26], (48 * 7 * 7,)),                                      # 27
    {"op": "linear", "name": "fc", "inputs": [27], "shape": (10,), "attrs": {},
     "data": {"weight": P["fc"][0].numpy(), "bias": P["fc"][1].numpy()}},              # 28
]
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
onnx2ccq.write(out, "opsnet", (1, 28, 28), np.array([MEAN], np.float32), np.array([STD], np.float32), nodes)

N = 200
with h5py.File(data, "r") as f:
    images = f["test/images"][:N]
with torch.no_grad():
    ref = torch_forward(torch.from_numpy(images.astype(np.float32)).reshape(N, 1, 28, 28)).numpy()
tmp = out + ".logits.h5"
rc, so, se = run([ccq, "eval", out, "--float", "--data", data, "--limit", str(N), "--save-logits", tmp])
t.check("ccq eval --float runs the network", rc == 0, se)
if rc == 0:
    with h5py.File(tmp, "r") as f:
        got = f["logits"][...]
    os.unlink(tmp)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"float forward: worst |ccq - torch| / max|logit| = {err:.2e}")
    t.check("float logits within 1e-4 of PyTorch's", err <= 1e-4, f"{err:.3e}")
    t.check("same argmax as PyTorch", np.array_equal(got.argmax(1), ref.argmax(1)))
rc, so, se = run([ccq, "inspect", out])
t.check("inspect runs", rc == 0, se)
for op in ("conv2d", "clip", "act", "mul", "slice", "pad", "add", "concat", "globalavgpool", "maxpool", "linear"):
    t.check(f"inspect lists {op}", f" {op} " in so, so[:400])
q = out + ".q.h5"
rc, so, se = run([ccq, "quantize", out, "--data", data, "--wbits", "4", "-o", q])
t.check("quantize", rc == 0, se)
if rc == 0:
    with h5py.File(q, "r") as f:
        ops = [f["nodes"][k].attrs["op"].decode() for k in sorted(f["nodes"].keys())]
        fused = [k for k in sorted(f["nodes"].keys()) if "clip" in f["nodes"][k].attrs]
        tables = [f["nodes"][k]["table"].shape for k in sorted(f["nodes"].keys()) if "table" in f["nodes"][k]]
    t.check("the ReLU6 after c1 is fused as its clamp", len(fused) == 1 and ops.count("clip") == 1, f"{ops}")
    t.check("every act node carries a 256-entry table", len(tables) == ops.count("act") == 8 and
            all(s == (256,) for s in tables), f"{tables}")
    ints = {}
    for isa in ("scalar", "avx2", "avx512vnni"):
        # (micro-batch, depthwise path): the depthwise kernel, and the grouped GEMM it replaces
        for mb, dw in [(mb, "kernel") for mb in ((1, 7, 64) if isa == "scalar" else (64,))] + [(64, "gemm")]:
            rc, so, se = run([ccq, "eval", q, "--data", data, "--limit", "100", "--mb", str(mb), "--save-logits", tmp],
                             env=dict(os.environ, CCQ_ISA=isa, CCQ_DEPTHWISE=dw))
            if rc != 0 and "does not support" in se:
                print(f"{isa} not supported here, skipped")
                break
            t.check(f"eval of the quantized network ({isa}, mb {mb}, depthwise {dw})", rc == 0, se)
            if rc == 0:
                with h5py.File(tmp, "r") as f:
                    ints[(isa, mb, dw)] = f["logits_int"][...]
                os.unlink(tmp)
    ref_int = ints.get(("scalar", 64, "kernel"))
    for k, v in ints.items():
        t.check(f"int32 logits of {k} identical to scalar's", ref_int is not None and np.array_equal(v, ref_int))
    os.unlink(q)
t.finish()
