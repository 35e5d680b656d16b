#!/usr/bin/env python3
"""test_onnx2ccq.py FIXTURE_DIR: the ONNX converter on hand-built graphs.

Unsupported ops and attributes end in one error line naming the node, exit 1
and no output file; supported alternative spellings (MatMul + Add as a
linear layer, Reshape to (batch, -1), auto_pad SAME_UPPER, Identity) convert
to models whose ccq logits equal a numpy/PyTorch computation."""
import os
import sys
import tempfile

import h5py
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from ccqtest import Checks, ccq_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERT = [sys.executable, os.path.join(HERE, "..", "scripts", "onnx2ccq.py")]
fx = sys.argv[1]
ccq = ccq_binary()
t = Checks("onnx2ccq")
rng = np.random.RandomState(3)


def graph(nodes, inits, in_shape=(None, 1, 4, 4), out_dim=3, name="g"):
    dims = ["batch" if d is None else d for d in in_shape]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_dim])
    g = helper.make_graph(nodes, name, [x], [y], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def convert(model, d, extra=()):
    src, dst = os.path.join(d, "m.onnx"), os.path.join(d, "m.h5")
    if isinstance(model, bytes):
        open(src, "wb").write(model)
    else:
        onnx.save(model, src)
    rc, out, err = run(CONVERT + [src, dst, *extra])
    return rc, err, dst


W3x16 = rng.randn(16, 3).astype(np.float32)
B3 = rng.randn(3).astype(np.float32)
flat = helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=1)


def expect_error(label, model, needles, extra=()):
    with tempfile.TemporaryDirectory() as d:
        rc, err, dst = convert(model, d, extra)
        lines = err.strip().splitlines()
        t.check(f"{label}: exit 1", rc == 1, f"rc={rc} stderr={err!r}")
        t.check(f"{label}: one line", len(lines) == 1 and lines[0].startswith("onnx2ccq: "), repr(err))
        for n in needles:
            t.check(f"{label}: mentions {n!r}", n in err, repr(err))
        t.check(f"{label}: no output", not os.path.exists(dst) and os.listdir(d) == ["m.onnx"], str(os.listdir(d)))


expect_error("unsupported op", graph([
    flat, helper.make_node("Sigmoid", ["f"], ["s"], name="squash"),
    helper.make_node("Gemm", ["s", "w", "b"], ["y"], name="fc", transB=1)], {"w": W3x16.T.copy(), "b": B3}),
    ["node 'squash' (Sigmoid): unsupported operator"])
expect_error("grouped conv", graph([
    helper.make_node("Conv", ["x", "cw"], ["c"], name="gconv", group=2, kernel_shape=[1, 1]),
    helper.make_node("Flatten", ["c"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
    {"cw": np.ones((2, 1, 1, 1), np.float32), "w": np.ones((3, 32), np.float32), "b": B3}, in_shape=(None, 2, 4, 4)),
    ["node 'gconv' (Conv)", "group=2"])
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
t.finish()
