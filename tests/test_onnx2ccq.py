#!/usr/bin/env python3
"""test_onnx2ccq.py FIXTURE_DIR [DATA.h5]: the ONNX converter.

Unsupported ops, attributes and shapes (Pad other than zeros or on the batch
axis, Slice/Concat of the batch axis, Mul broadcasts other than [C,1,1], a
constant factor that cannot fold, Erf outside GELU, bad Clip bounds, ...)
end in one error line naming the node, exit 1 and no output file; supported
alternative spellings (MatMul + Add as a linear layer, Reshape to (batch,
-1), auto_pad SAME_UPPER, Identity, GELU as opset 20's node and as its erf
and tanh decompositions in other orders, Slice with out-of-range, negative
and chained indices) convert to models whose logits equal a numpy/PyTorch
computation, both through ccq_sim's float path and ccq eval --float.

With DATA.h5 (Fashion-MNIST), networks PyTorch exports with the new
operators (grouped/depthwise convolutions, Pad and Slice, torch.cat, every
activation, Mul and squeeze-and-excitation, a CIFAR-style ResNet-20 with
option-A shortcuts) convert with the expected nodes and reproduce PyTorch's
logits within 1e-4 and its accuracy under ccq eval --float; their w8a8
quantization runs in the integer engine in agreement with ccq_sim."""
import contextlib
import io
import json
import os
import sys
import tempfile

import h5py
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from ccqtest import Checks, ccq_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERT = [sys.executable, os.path.join(HERE, "..", "scripts", "onnx2ccq.py")]
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
import ccq_sim  # noqa: E402
import onnx2ccq  # noqa: E402
fx = sys.argv[1]
ccq = ccq_binary()
torch.set_num_threads(1)  # small tensors; ctest runs other tests beside this one
t = Checks("onnx2ccq")
rng = np.random.RandomState(3)


def graph(nodes, inits, in_shape=(None, 1, 4, 4), out_dim=3, name="g"):
    dims = ["batch" if d is None else d for d in in_shape]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_dim])
    g = helper.make_graph(nodes, name, [x], [y], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def convert(model, d, extra=()):
    """Run onnx2ccq's main in this process (the test's time is mostly start-up
    otherwise; the command line itself is checked once below): (exit code,
    stderr, output path)."""
    src, dst = os.path.join(d, "m.onnx"), os.path.join(d, "m.h5")
    if isinstance(model, bytes):
        open(src, "wb").write(model)
    else:
        onnx.save(model, src)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = onnx2ccq.main([src, dst, *extra])
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, err.getvalue(), dst


W3x16 = rng.randn(16, 3).astype(np.float32)
B3 = rng.randn(3).astype(np.float32)
flat = helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=1)


def expect_error(label, model, needles, extra=()):
    t.refusal(label)
    with tempfile.TemporaryDirectory() as d:
        rc, err, dst = convert(model, d, extra)
        lines = err.strip().splitlines()
        t.check(f"{label}: exit 1", rc == 1, f"rc={rc} stderr={err!r}")
        t.check(f"{label}: one line", len(lines) == 1 and lines[0].startswith("onnx2ccq: "), repr(err))
        for n in needles:
            t.check(f"{label}: mentions {n!r}", n in err, repr(err))
        t.check(f"{label}: no output", not os.path.exists(dst) and os.listdir(d) == ["m.onnx"], str(os.listdir(d)))


expect_error("unsupported op", graph([
    flat, helper.make_node("Softmax", ["f"], ["s"], name="squash"),
    helper.make_node("Gemm", ["s", "w", "b"], ["y"], name="fc", transB=1)], {"w": W3x16.T.copy(), "b": B3}),
    ["node 'squash' (Softmax): unsupported operator"])
expect_error("groups not dividing the channels", graph([
    helper.make_node("Conv", ["x", "cw"], ["c"], name="gconv", group=3, kernel_shape=[1, 1]),
    helper.make_node("Flatten", ["c"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
    {"cw": np.ones((3, 1, 1, 1), np.float32), "w": np.ones((3, 48), np.float32), "b": B3}, in_shape=(None, 2, 4, 4)),
    ["node 'gconv' (Conv)", "group=3"])
expect_error("unknown attribute", graph([
    helper.make_node("Flatten", ["x"], ["f"], name="flat2", axis=1, fancy=3),
    helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)], {"w": W3x16.T.copy(), "b": B3}),
    ["node 'flat2' (Flatten)", "unsupported attribute 'fancy'"])
expect_error("transA", graph([flat, helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fcA", transA=1)],
                             {"w": W3x16, "b": B3}), ["node 'fcA' (Gemm)", "transA"])
expect_error("broadcast add", graph([
    helper.make_node("Conv", ["x", "cw"], ["c"], name="c1", kernel_shape=[1, 1]),
    helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
    helper.make_node("Add", ["c", "g"], ["a"], name="badd"),
    helper.make_node("Flatten", ["a"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
    {"cw": np.ones((1, 1, 1, 1), np.float32), "w": np.ones((3, 16), np.float32), "b": B3}),
    ["node 'badd' (Add)", "broadcast"])
expect_error("max pool indices", graph([
    helper.make_node("MaxPool", ["x"], ["p", "idx"], name="mp", kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Flatten", ["p"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)], {"w": np.ones((3, 4), np.float32), "b": B3}),
    ["node 'mp' (MaxPool)", "Indices"])
expect_error("dynamic spatial size", graph([flat, helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
                                           {"w": W3x16.T.copy(), "b": B3}, in_shape=(None, 1, "h", 4)),
             ["static shape"])
expect_error("reshape that is not a flatten", graph([
    helper.make_node("Reshape", ["x", "shp"], ["r"], name="rs"),
    helper.make_node("Flatten", ["r"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
    {"shp": np.array([-1, 2, 8], np.int64), "w": W3x16.T.copy(), "b": B3}),
    ["node 'rs' (Reshape)", "(batch, -1)"])
expect_error("nan weight", graph([flat, helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fcn", transB=1)],
                                 {"w": np.full((3, 16), np.nan, np.float32), "b": B3}),
             ["node 'fcn' (Gemm)", "non-finite"])
expect_error("not onnx", b"this is not a protobuf \xff\xfe", ["not a readable ONNX model"])
expect_error("bad --std", graph([flat, helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
                                {"w": W3x16.T.copy(), "b": B3}), ["--std"], extra=("--std", "0"))
with tempfile.TemporaryDirectory() as d:
    rc, _, err = run(CONVERT + [os.path.join(d, "missing.onnx"), os.path.join(d, "o.h5")])
    t.check("missing file", rc == 1 and "missing.onnx: file not found" in err, err)
    onnx.save(graph([flat, helper.make_node("Softmax", ["f"], ["y"], name="sm")], {}), os.path.join(d, "m.onnx"))
    rc, _, err = run(CONVERT + [os.path.join(d, "m.onnx"), os.path.join(d, "o.h5")])
    t.check("command line: an error is exit 1 and one line", rc == 1 and err.count("\n") == 1
            and "node 'sm' (Softmax): unsupported operator" in err and not os.path.exists(os.path.join(d, "o.h5")), err)

def to_logits(nodes, inits, feat=16, in_shape=(None, 1, 4, 4), opset=13):
    """nodes computing tensor 't' from 'x', then Flatten and a 3-class Gemm."""
    m = graph(nodes + [helper.make_node("Flatten", ["t"], ["f"], axis=1),
                       helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
              dict(inits, w=np.ones((3, feat), np.float32), b=B3), in_shape=in_shape)
    m.opset_import[0].version = opset
    return m


I64 = lambda *v: np.array(v, np.int64)  # noqa: E731
F32 = lambda *v: np.array(v, np.float32)  # noqa: E731
conv1 = helper.make_node("Conv", ["x", "cw"], ["c"], name="c1", kernel_shape=[1, 1])
CW2 = {"cw": np.ones((2, 1, 1, 1), np.float32)}
expect_error("pad mode reflect", to_logits([helper.make_node("Pad", ["x", "p"], ["t"], name="refl", mode="reflect")],
                                           {"p": I64(0, 0, 1, 1, 0, 0, 1, 1)}), ["node 'refl' (Pad)", "reflect"])
expect_error("pad with ones", to_logits([helper.make_node("Pad", ["x", "p", "v"], ["t"], name="p1")],
                                        {"p": I64(0, 0, 1, 1, 0, 0, 1, 1), "v": F32(1.0)}), ["node 'p1' (Pad)", "zeros"])
expect_error("pad the batch", to_logits([helper.make_node("Pad", ["x", "p"], ["t"], name="pb")],
                                        {"p": I64(1, 0, 0, 0, 0, 0, 0, 0)}), ["node 'pb' (Pad)", "batch"])
expect_error("slice the batch", to_logits([helper.make_node("Slice", ["x", "s", "e", "a"], ["t"], name="sb")],
                                          {"s": I64(1), "e": I64(2 ** 62), "a": I64(0)}), ["node 'sb' (Slice)", "batch"])
expect_error("empty slice", to_logits([helper.make_node("Slice", ["x", "s", "e", "a"], ["t"], name="se")],
                                      {"s": I64(3), "e": I64(1), "a": I64(-1)}), ["node 'se' (Slice)", "empty"])
expect_error("concat the batch", to_logits([helper.make_node("Concat", ["x", "x"], ["t"], name="cb", axis=0)], {}),
             ["node 'cb' (Concat)", "batch"])
expect_error("concat a constant", to_logits([helper.make_node("Concat", ["x", "k"], ["t"], name="ck", axis=1)],
                                            {"k": np.zeros((1, 1, 4, 4), np.float32)}), ["node 'ck' (Concat)", "constant"])
expect_error("mul broadcast over channels", to_logits([conv1, helper.make_node("Mul", ["c", "x"], ["t"], name="mb")],
                                                      CW2), ["node 'mb' (Mul)", "shapes (2, 4, 4) and (1, 4, 4)"])
expect_error("mul by a constant that cannot fold", to_logits([
    helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "k"], ["t"], name="mk")], {"k": F32(2.0)}),
    ["node 'mk' (Mul)", "folds into"])
expect_error("erf outside gelu", to_logits([helper.make_node("Erf", ["x"], ["t"], name="erf")], {}),
             ["node 'erf' (Erf)", "GELU"])
expect_error("clip min above max", to_logits([helper.make_node("Clip", ["x", "lo", "hi"], ["t"], name="cl")],
                                             {"lo": F32(1.0), "hi": F32(0.5)}), ["node 'cl' (Clip)", "min"])
expect_error("clip bound an input", to_logits([helper.make_node("Clip", ["x", "", "x"], ["t"], name="cx")], {}),
             ["node 'cx' (Clip)", "must be a constant"])
expect_error("gelu approximation unknown", to_logits([helper.make_node("Gelu", ["x"], ["t"], name="g", approximate="fast")],
                                                    {}, opset=20), ["node 'g' (Gelu)", "fast"])


# Supported spellings evaluate to the same logits as a direct computation.
with h5py.File(os.path.join(fx, "tiny_data.h5"), "r") as f:
    imgs = f["test/images"][...]
x = torch.from_numpy(imgs).float() / 255.0  # mean 0, std 1 (converter defaults)


def ccq_logits(model, d):
    rc, err, dst = convert(model, d)
    t.check("converts", rc == 0, err)
    out = os.path.join(d, "l.h5")
    rc, so, se = run([ccq, "eval", dst, "--data", os.path.join(fx, "tiny_data.h5"), "--float", "--save-logits", out])
    t.check("evaluates", rc == 0, se)
    with h5py.File(out, "r") as f:
        return f["logits"][...]


with tempfile.TemporaryDirectory() as d:
    # Shape -> Gather -> Unsqueeze -> Concat -> Reshape (what x.view(x.size(0), -1) exports), MatMul + Add
    m = graph([
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Identity", ["r"], ["r2"]),
        helper.make_node("MatMul", ["r2", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["y"])],
        {"ax": np.array([0], np.int64), "minus1": np.array([-1], np.int64), "w": W3x16, "b": B3})
    got = ccq_logits(m, d)
    want = (x.reshape(len(x), -1) @ torch.from_numpy(W3x16) + torch.from_numpy(B3)).numpy()
    t.check("reshape + matmul + add", np.allclose(got, want, rtol=1e-5, atol=1e-5), f"{got} vs {want}")

with tempfile.TemporaryDirectory() as d:
    # auto_pad SAME_UPPER with stride 2 on an even input: PyTorch's equivalent pads (0 top/left, 1 bottom/right)
    cw = rng.randn(2, 1, 2, 2).astype(np.float32)
    m = graph([
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["c"], ["a"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0],
                         count_include_pad=1),
        helper.make_node("Flatten", ["a"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1, alpha=0.5)],
        {"cw": cw, "cb": np.array([0.1, -0.2], np.float32), "w": np.ones((3, 8), np.float32) * np.arange(3, dtype=np.float32)[:, None],
         "b": B3})
    got = ccq_logits(m, d)
    c = F.conv2d(x, torch.from_numpy(cw), torch.tensor([0.1, -0.2]), stride=2)
    a = F.avg_pool2d(F.pad(c, (1, 0, 1, 0)), 2, stride=1)  # zero padding counted, as count_include_pad=1
    w = torch.ones(3, 8) * torch.arange(3.0)[:, None] * 0.5
    want = (torch.flatten(a, 1) @ w.T + torch.from_numpy(B3)).numpy()
    t.check("same_upper conv + padded avgpool + scaled gemm", np.allclose(got, want, rtol=1e-5, atol=1e-5),
            f"{got} vs {want}")

# New operators in hand-built spellings: GELU as opset 20's node and as the
# decompositions exporters write in other orders, Slice with out-of-range and
# negative starts/ends/steps (chained, so merged into one slice). Each is
# compared with PyTorch/numpy through ccq_sim's float path (the converter
# alone) and through ccq eval --float (converter and C engine).
def float_check(label, model, want, d, data, ops=None, n=None, tol=1e-4, extra=()):
    """Convert model; its ops (with act fns) must be ops if given; ccq_sim's
    float forward and ccq eval --float must give want within tol relative to
    each image's largest logit. Returns the converted file's path."""
    rc, err, dst = convert(model, d, extra)
    t.check(f"{label}: converts", rc == 0, err)
    if rc != 0:
        return None
    net = ccq_sim.load(dst, quantized=False)
    got_ops = [nd["op"] + (":" + str(nd["fn"]) if nd["op"] == "act" else "") for nd in net["nodes"]]
    if ops is not None:
        t.check(f"{label}: nodes", got_ops == ops, f"{got_ops} vs {ops}")
    with h5py.File(data, "r") as f:
        imgs = f["test/images"][: n or None]
    rel = lambda got: (np.abs(got - want).max(1) / np.abs(want).max(1)).max()  # noqa: E731
    sim = ccq_sim.run(net, imgs, quantized=False, dtype=torch.float32)
    t.check(f"{label}: converted graph (ccq_sim float) matches", rel(sim) <= tol, f"{rel(sim):.3g}")
    out = os.path.join(d, "l.h5")
    cmd = [ccq, "eval", dst, "--data", data, "--float", "--json", "--save-logits", out] + (["--limit", str(n)] if n else [])
    rc, so, se = run(cmd)
    t.check(f"{label}: ccq eval --float runs", rc == 0, se)
    if rc == 0:
        with h5py.File(out, "r") as f:
            got = f["logits"][...]
        print(f"{label}: worst relative logit error ccq {rel(got):.2e}, ccq_sim {rel(sim):.2e}")
        t.check(f"{label}: ccq eval --float matches", rel(got) <= tol, f"{rel(got):.3g}")
        acc, want_acc = json.loads(so)["accuracy"], 100.0 * (want.argmax(1) == labels(data, len(want))).mean()
        t.check(f"{label}: accuracy", abs(acc - want_acc) <= 0.01 + 1e-9, f"{acc} vs {want_acc}")
    return dst


def labels(data, n):
    with h5py.File(data, "r") as f:
        return f["test/labels"][:n]


tiny = os.path.join(fx, "tiny_data.h5")
CW = (rng.randn(2, 1, 1, 1) * 3).astype(np.float32)
CB = np.array([-1.0, 0.5], np.float32)
conv_c = helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[1, 1])
c_t = F.conv2d(x, torch.from_numpy(CW), torch.from_numpy(CB))
W3x4, W3x32, W3x64 = (rng.randn(3, n).astype(np.float32) for n in (4, 32, 64))


def head(feat, w):
    return graph_logits(torch.flatten(feat, 1), w)


def graph_logits(f, w):
    return (f @ torch.from_numpy(w).T + torch.from_numpy(B3)).numpy()


def k(v):
    return numpy_helper.from_array(np.array(v, np.float32))


def with_head(nodes, inits, w, opset=13):
    m = graph(nodes + [helper.make_node("Flatten", ["t"], ["f"], axis=1),
                       helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
              dict(inits, cw=CW, cb=CB, w=w, b=B3))
    m.opset_import[0].version = opset
    return m


with tempfile.TemporaryDirectory() as d:
    m = with_head([conv_c, helper.make_node("Gelu", ["c"], ["g1"]),
                   helper.make_node("Gelu", ["c"], ["g2"], approximate="tanh"),
                   helper.make_node("Concat", ["g1", "g2"], ["t"], axis=1)], {}, W3x64, opset=20)
    want = head(torch.cat([F.gelu(c_t), F.gelu(c_t, approximate="tanh")], 1), W3x64)
    float_check("gelu (opset 20 node)", m, want, d, tiny,
                ["conv2d", "act:gelu", "act:gelu_tanh", "concat", "flatten", "linear"])

with tempfile.TemporaryDirectory() as d:
    # erf form, spelled (0.5 * x) * (1 + erf(x * (1/sqrt 2))), constants from Constant nodes
    m = with_head([conv_c,
                   helper.make_node("Constant", [], ["r2"], value=k(2 ** -0.5)),
                   helper.make_node("Mul", ["c", "r2"], ["u"]), helper.make_node("Erf", ["u"], ["e"]),
                   helper.make_node("Constant", [], ["one"], value=k(1.0)),
                   helper.make_node("Add", ["one", "e"], ["a"]),
                   helper.make_node("Constant", [], ["half"], value=k(0.5)),
                   helper.make_node("Mul", ["half", "c"], ["h"]), helper.make_node("Mul", ["a", "h"], ["t"])],
                  {}, W3x32)
    float_check("gelu (erf, other order)", m, head(F.gelu(c_t), W3x32), d, tiny,
                ["conv2d", "act:gelu", "flatten", "linear"])

with tempfile.TemporaryDirectory() as d:
    # tanh form with Pow(x, 3) and the 0.5 applied to (1 + tanh) first
    m = with_head([conv_c,
                   helper.make_node("Pow", ["c", "three"], ["p3"]), helper.make_node("Mul", ["p3", "kc"], ["q"]),
                   helper.make_node("Add", ["q", "c"], ["s"]), helper.make_node("Mul", ["s", "kk"], ["u"]),
                   helper.make_node("Tanh", ["u"], ["th"]), helper.make_node("Add", ["th", "one"], ["a"]),
                   helper.make_node("Mul", ["a", "half"], ["h"]), helper.make_node("Mul", ["h", "c"], ["t"])],
                  {"three": F32(3.0), "kc": F32(0.044715), "kk": F32(np.sqrt(2 / np.pi)), "one": F32(1.0),
                   "half": F32(0.5)}, W3x32)
    float_check("gelu (tanh form, Pow)", m, head(F.gelu(c_t, approximate="tanh"), W3x32), d, tiny,
                ["conv2d", "act:gelu_tanh", "flatten", "linear"])

with tempfile.TemporaryDirectory() as d:
    # ONNX normalisation of out-of-range and negative starts/ends, a negative step, two slices merged
    m = with_head([helper.make_node("Slice", ["x", "s0", "e0", "a0", "t0"], ["z"]),
                   helper.make_node("Slice", ["z", "s1", "e1"], ["t"])],
                  {"s0": I64(100, -100), "e0": I64(-100, 100), "a0": I64(3, -2), "t0": I64(-2, 1),
                   "s1": I64(0, 0, 1, 0), "e1": I64(2 ** 62, 5, -1, 2 ** 63 - 1)}, W3x4)
    xs = x.numpy()[:, :, -100:100, 100:-100:-2][:, :, 1:-1]
    float_check("slice normalisation, merged", m, graph_logits(torch.from_numpy(xs.reshape(len(xs), -1).copy()),
                                                              W3x4),
                d, tiny, ["slice", "flatten", "linear"])


# Networks PyTorch exports with the new operators, on Fashion-MNIST-shaped
# input (random weights: output agreement is the test). Each converts; the
# converted graph (ccq_sim's float path) and ccq eval --float reproduce
# PyTorch's logits within 1e-4 and its accuracy; then ccq quantize at w8a8
# and ccq eval agree with ccq_sim's simulation of the same integer network
# (argmax and logits), as test_qnet does for the reference models.
class GroupNet(nn.Module):
    """Depthwise, channel-multiplier and grouped convolutions; Relu6, HardSwish and a
    Hardtanh(-0.25, 0.3) after them (the clips fuse into their convolutions when quantized)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.dw, self.b2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.mult = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.grp = nn.Conv2d(16, 8, 1, groups=4)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        x = F.relu6(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.dw(x)))
        x = F.hardtanh(self.grp(F.hardswish(self.mult(x))), -0.25, 0.3)
        return self.fc(torch.flatten(F.max_pool2d(x, 2), 1))


class PadSliceNet(nn.Module):
    """Zero padding of channels and borders, negative pads, strided and reversed slices."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(5, 6, 3)
        self.fc = nn.Linear(6 * 12 * 8, 10)

    def forward(self, x):
        y = F.relu(self.c1(x))
        y = F.pad(y, (1, 2, 0, 1, 2, 1))          # W 1+2, H 0+1, C 2+1: 7x29x31
        y = y[:, 1:-1, ::2, 1::3]                 # 5x15x10
        y = torch.flip(y, [2, 3])                 # negative steps
        y = F.pad(y, (-1, 0, 0, -2))              # crops: 5x13x9
        return self.fc(torch.flatten(self.c2(F.pad(y, (1, 0, 1, 0))), 1))


class CatNet(nn.Module):
    """Inception-style branches joined with torch.cat along channels, a dense-style cat, a cat along W."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b1, self.b2, self.b3 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.dense = nn.Conv2d(20, 8, 3, padding=1)
        self.fc = nn.Linear(28, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        y = torch.cat([self.b1(x), F.relu(self.b2(x)), self.b3(F.max_pool2d(x, 3, 1, 1))], 1)
        y = F.max_pool2d(F.relu(y), 2)                                      # 20x14x14
        y = torch.cat([y, self.dense(y)], 1)                                # 28x14x14
        y = torch.cat([y[:, :, :, :7], y[:, :, :, 7:]], 3)                  # along W: the same tensor
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class ActNet(nn.Module):
    """Every activation ccq's act and clip nodes take, side by side."""
    FNS = (torch.sigmoid, F.hardsigmoid, F.hardswish, torch.tanh, lambda v: F.leaky_relu(v, 0.1),
           lambda v: F.elu(v, 0.7), F.gelu, lambda v: F.gelu(v, approximate="tanh"), F.relu6,
           lambda v: torch.clamp(v, -0.5, 0.8), F.silu)

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4 * len(self.FNS), 8, 1)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        x = self.b1(self.c1(x)) * 2
        return self.fc(torch.flatten(self.c2(torch.cat([f(x) for f in self.FNS], 1)), 1))


class MulNet(nn.Module):
    """Squeeze-and-excitation (a [C,1,1] gate), a product of two branches, constants folded."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3)
        self.se1, self.se2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.fc = nn.Linear(8 * 12 * 12, 10)

    def forward(self, x):
        a = F.relu(self.c1(x) * 0.5)
        y = a * (self.c2(x) / 4)
        y = F.max_pool2d(y, 2)
        y = y * torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))))
        return self.fc(torch.flatten(self.c3(y), 1))


class BlockA(nn.Module):
    """akamaster/pytorch_resnet_cifar10's BasicBlock with option A: the shortcut subsamples
    with x[:, :, ::2, ::2] and zero-pads the new channels."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or cin != planes else 0

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        return F.relu(out + x)


class ResNet20A(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BlockA(cin, planes, stride if i == 0 else 1))
                cin = planes
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, int(out.size(3)))  # akamaster: out.size()[3], a tensor when traced
        return self.linear(out.view(out.size(0), -1))


def randomise_bn(model, g):
    """Non-trivial BatchNorm statistics, so folding and standalone BN are exercised."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


def export(model, path, opset, keep_bn):
    import warnings
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 28, 28), path, opset_version=opset, training=mode,
                          do_constant_folding=not keep_bn, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def quant_check(label, fpath, data, imgs, d):
    """ccq quantize (w8a8) and ccq eval against ccq_sim's simulation of the same integer network."""
    q, out = os.path.join(d, "q.h5"), os.path.join(d, "ql.h5")
    rc, so, se = run([ccq, "quantize", fpath, "--data", data, "--wbits", "8", "--calib", "256", "-o", q])
    t.check(f"{label}: quantize", rc == 0, se)
    if rc != 0:
        return
    rc, so, se = run([ccq, "eval", q, "--data", data, "--limit", str(len(imgs)), "--save-logits", out])
    t.check(f"{label}: integer eval", rc == 0, se)
    if rc != 0:
        return
    with h5py.File(out, "r") as f:
        eng = f["logits_int"][...] * float(f["logits_int"].attrs["scale"])
    sim = ccq_sim.run(ccq_sim.load(q), imgs)
    agree = (sim.argmax(1) == eng.argmax(1)).mean() * 100
    err = (np.abs(sim - eng).max(1) / np.abs(eng).max(1)).max()
    print(f"{label}: w8a8 engine vs simulation on {len(imgs)} images: argmax agreement {agree:.1f}%, "
          f"worst relative logit gap {err:.2e}")
    t.check(f"{label}: w8a8 simulation agreement >= 99%", agree >= 99.0, f"{agree:.1f}%")
    # rounding ties aside (the engine's fixed-point multipliers), the logits are the simulation's
    t.check(f"{label}: w8a8 logits within 2% of the simulation's", err <= 0.02, f"{err:.3g}")


if len(sys.argv) > 2:
    data = sys.argv[2]
    N, N_SIM = 300, 150  # images: float comparisons, integer simulation (float64: most of the time)
    with h5py.File(data, "r") as f:
        imgs = f["test/images"][:N]
    MEAN, STD = 0.2860, 0.3530
    xin = (torch.from_numpy(imgs).float() / 255.0 - MEAN) / STD
    g = torch.Generator().manual_seed(9)
    torch.manual_seed(9)
    nets = [("groups", GroupNet(), 13, True, {"conv2d": 4, "clip": 2, "act": 1}),
            ("pad/slice", PadSliceNet(), 13, True, {"pad": 2, "slice": 1}),
            ("pad/slice, exporter folding", PadSliceNet(), 13, False, {"pad": 2, "slice": 1}),
            ("concat", CatNet(), 13, True, {"concat": 3}),
            ("activations opset 13", ActNet(), 13, True, {"act": 9, "clip": 2, "mul": 1}),
            ("activations opset 17", ActNet(), 17, False, {"act": 9, "clip": 2, "mul": 1}),
            ("mul", MulNet(), 13, True, {"mul": 2, "act": 1, "conv2d": 5}),
            ("resnet20 option A", ResNet20A(), 13, True, {"pad": 2, "slice": 2, "add": 9, "conv2d": 19})]
    for label, model, opset, keep_bn, counts in nets:
        randomise_bn(model, g)
        model.eval()
        with torch.no_grad():
            want = model(xin).numpy()
        with tempfile.TemporaryDirectory() as d:
            export(model, os.path.join(d, "src.onnx"), opset, keep_bn)
            fpath = float_check(label, onnx.load(os.path.join(d, "src.onnx")), want, d, data, n=N,
                                extra=("--mean", str(MEAN), "--std", str(STD)))
            if fpath is None:
                continue
            ops = [nd["op"] for nd in ccq_sim.load(fpath, quantized=False)["nodes"]]
            for op, c in counts.items():
                t.check(f"{label}: {c} {op} nodes", ops.count(op) == c, " ".join(ops))
            if not label.endswith("folding") and label != "activations opset 17":
                quant_check(label, fpath, data, imgs[:N_SIM], d)
t.finish()
