#!/usr/bin/env python3
"""make_fixtures.py OUTDIR: small model and data files for the C unit tests
and the command-line tests, good ones and deliberately broken ones.

Every broken file differs from a good one in exactly one way, so a test that
expects a given error message pins down which check produced it.
"""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import onnx2ccq  # noqa: E402


def tiny_nodes():
    """conv 1->2 3x3 pad 1 (+bias) -> BN -> relu -> maxpool 2 -> flatten -> linear 8->3, on a 1x4x4 input."""
    w = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) / 10 - 0.8
    return [
        {"op": "conv2d", "name": "conv", "inputs": [-1], "shape": (2, 4, 4),
         "attrs": {"kernel": [3, 3], "stride": [1, 1], "pad": [1, 1, 1, 1], "dilation": [1, 1]},
         "data": {"weight": w, "bias": np.array([0.5, -0.25], np.float32)}},
        {"op": "batchnorm", "name": "bn", "inputs": [0], "shape": (2, 4, 4), "attrs": {"eps": np.float32(1e-5)},
         "data": {"gamma": np.array([1.0, 2.0], np.float32), "beta": np.array([0.0, 0.1], np.float32),
                  "mean": np.array([0.1, -0.1], np.float32), "var": np.array([1.0, 4.0], np.float32)}},
        {"op": "relu", "name": "relu", "inputs": [1], "shape": (2, 4, 4), "attrs": {}, "data": {}},
        {"op": "maxpool", "name": "pool", "inputs": [2], "shape": (2, 2, 2),
         "attrs": {"kernel": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0], "ceil_mode": 0}, "data": {}},
        {"op": "flatten", "name": "flat", "inputs": [3], "shape": (8,), "attrs": {}, "data": {}},
        {"op": "linear", "name": "fc", "inputs": [4], "shape": (3,), "attrs": {},
         "data": {"weight": (np.arange(24, dtype=np.float32).reshape(3, 8) - 12) / 20,
                  "bias": np.array([0.1, 0.0, -0.1], np.float32)}},
    ]


def ops_nodes():
    """Every op of the op table beyond tiny's, on a 1x4x4 input: conv 1->2, depthwise conv, clip, act,
    slice, channel pad, grouped conv, add, concat, globalavgpool, mul (broadcast), flatten, linear."""
    r = np.random.RandomState(3)
    w = lambda *s: (r.randn(*s) * 0.5).astype(np.float32)  # noqa: E731
    win = {"kernel": [3, 3], "stride": [1, 1], "pad": [1, 1, 1, 1], "dilation": [1, 1]}
    return [
        {"op": "conv2d", "name": "c1", "inputs": [-1], "shape": (2, 4, 4), "attrs": dict(win),
         "data": {"weight": w(2, 1, 3, 3), "bias": w(2)}},                                              # 0
        {"op": "conv2d", "name": "dw", "inputs": [0], "shape": (2, 4, 4), "attrs": dict(win, groups=2),
         "data": {"weight": w(2, 1, 3, 3)}},                                                            # 1
        {"op": "clip", "name": "clip", "inputs": [1], "shape": (2, 4, 4),
         "attrs": {"min": np.float32(-1), "max": np.float32(2)}, "data": {}},                          # 2
        {"op": "act", "name": "sig", "inputs": [2], "shape": (2, 4, 4), "attrs": {"fn": "sigmoid"}, "data": {}},  # 3
        {"op": "slice", "name": "sub", "inputs": [3], "shape": (2, 2, 2),
         "attrs": {"start": [0, 0, 0], "step": [1, 2, 2]}, "data": {}},                                # 4
        {"op": "pad", "name": "chpad", "inputs": [4], "shape": (4, 2, 2), "attrs": {"pads": [1, 0, 0, 1, 0, 0]},
         "data": {}},                                                                                   # 5
        {"op": "conv2d", "name": "gc", "inputs": [3], "shape": (4, 2, 2),
         "attrs": dict(win, stride=[2, 2], groups=2), "data": {"weight": w(4, 1, 3, 3), "bias": w(4)}},  # 6
        {"op": "add", "name": "res", "inputs": [6, 5], "shape": (4, 2, 2), "attrs": {}, "data": {}},     # 7
        {"op": "concat", "name": "cat", "inputs": [7, 5], "shape": (8, 2, 2), "attrs": {"axis": 0}, "data": {}},  # 8
        {"op": "globalavgpool", "name": "gap", "inputs": [8], "shape": (8, 1, 1), "attrs": {}, "data": {}},  # 9
        {"op": "mul", "name": "gate", "inputs": [8, 9], "shape": (8, 2, 2), "attrs": {}, "data": {}},    # 10
        {"op": "flatten", "name": "flat", "inputs": [10], "shape": (32,), "attrs": {}, "data": {}},      # 11
        {"op": "linear", "name": "fc", "inputs": [11], "shape": (3,), "attrs": {},
         "data": {"weight": w(3, 32), "bias": w(3)}},                                                   # 12
    ]


def write_model(path, nodes, in_shape=(1, 4, 4)):
    onnx2ccq.write(path, "tiny", in_shape, np.array([0.5], np.float32), np.array([0.25], np.float32), nodes)


def write_data(path, shape=(1, 4, 4), classes=3, n_train=6, n_test=4, bad_label=False):
    rng = np.random.RandomState(7)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = np.bytes_("ccq-data")
        f.attrs["version"] = np.int32(1)
        f.attrs["classes"] = np.int32(classes)
        for split, n in (("train", n_train), ("test", n_test)):
            g = f.create_group(split)
            g.create_dataset("images", data=rng.randint(0, 256, (n,) + shape).astype(np.uint8))
            y = (np.arange(n) % classes).astype(np.int32)
            if bad_label:
                y[1] = classes
            g.create_dataset("labels", data=y)


def write_expected(model_path, data_path, out_path):
    """Logits of the tiny model on the test images, computed by PyTorch's own layers."""
    import torch
    import torch.nn.functional as F
    nodes = tiny_nodes()
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    with h5py.File(data_path, "r") as f:
        x = torch.from_numpy(f["test/images"][...]).float()
    x = (x / 255.0 - 0.5) / 0.25
    c, bn, _, _, _, fc = nodes
    y = F.conv2d(x, t(c["data"]["weight"]), t(c["data"]["bias"]), stride=1, padding=1)
    d = bn["data"]
    y = F.batch_norm(y, t(d["mean"]), t(d["var"]), t(d["gamma"]), t(d["beta"]), False, 0.0, 1e-5)
    y = F.max_pool2d(F.relu(y), 2)
    y = F.linear(torch.flatten(y, 1), t(fc["data"]["weight"]), t(fc["data"]["bias"]))
    with h5py.File(out_path, "w") as f:
        f.create_dataset("logits", data=y.numpy().astype(np.float32))


def mutate(src, dst, fn):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)  # noqa: E731

    write_model(p("tiny.h5"), tiny_nodes())
    write_data(p("tiny_data.h5"))
    write_data(p("data_5x5.h5"), shape=(1, 5, 5))
    write_data(p("data_badlabel.h5"), bad_label=True)

    def set_nan(f):
        w = f["nodes/0000/weight"][...]
        w[1, 0, 2, 2] = np.nan
        f["nodes/0000/weight"][...] = w
    mutate(p("tiny.h5"), p("bad_nan.h5"), set_nan)

    def wrong_shape(f):
        f["nodes/0003"].attrs["shape"] = np.array([2, 3, 3], np.int32)
    mutate(p("tiny.h5"), p("bad_shape.h5"), wrong_shape)

    def wrong_weight(f):
        del f["nodes/0005/weight"]
        f["nodes/0005"].create_dataset("weight", data=np.zeros((3, 9), np.float32))
    mutate(p("tiny.h5"), p("bad_weight_dims.h5"), wrong_weight)

    def unknown_op(f):
        f["nodes/0002"].attrs["op"] = np.bytes_("sigmoid")
    mutate(p("tiny.h5"), p("bad_op.h5"), unknown_op)

    def forward_ref(f):
        f["nodes/0001"].attrs["inputs"] = np.array([3], np.int32)
    mutate(p("tiny.h5"), p("bad_inputs.h5"), forward_ref)

    def no_stride(f):
        del f["nodes/0000"].attrs["stride"]
    mutate(p("tiny.h5"), p("bad_missing_attr.h5"), no_stride)

    def version2(f):
        f.attrs["version"] = np.int32(2)
    mutate(p("tiny.h5"), p("bad_version.h5"), version2)

    def neg_var(f):
        f["nodes/0001/var"][...] = np.array([1.0, -5.0], np.float32)
    mutate(p("tiny.h5"), p("bad_var.h5"), neg_var)

    def vlen_strings(f):
        # h5py writes Python str as variable-length UTF-8: readers must take both kinds
        f.attrs["format"] = "ccq-model"
        f.attrs["name"] = "tiny"
        for k in f["nodes"]:
            f["nodes"][k].attrs["op"] = f["nodes"][k].attrs["op"].decode()
    mutate(p("tiny.h5"), p("tiny_vlen.h5"), vlen_strings)
    write_expected(p("tiny.h5"), p("tiny_data.h5"), p("tiny_expected.h5"))

    def overflow(f):
        # finite weights whose products overflow float32: activations become inf
        f["nodes/0000/weight"][...] = np.full((2, 1, 3, 3), 3e38, np.float32)
    mutate(p("tiny.h5"), p("bad_overflow.h5"), overflow)

    # the ops of the op table: a good file and one broken variant per check
    write_model(p("tiny_ops.h5"), ops_nodes())
    ops_broken = {
        "bad_groups.h5": lambda f: f["nodes/0001"].attrs.__setitem__("groups", np.int32(3)),
        "bad_slice.h5": lambda f: f["nodes/0004"].attrs.__setitem__("start", np.array([0, 0, 3], np.int32)),
        "bad_slice_step.h5": lambda f: f["nodes/0004"].attrs.__setitem__("step", np.array([1, 0, 2], np.int32)),
        "bad_concat.h5": lambda f: (f["nodes/0008"].attrs.__setitem__("axis", np.int32(1)),
                                     f["nodes/0008"].attrs.__setitem__("inputs", np.array([7, 4], np.int32))),
        "bad_act.h5": lambda f: f["nodes/0003"].attrs.__setitem__("fn", np.bytes_("swish")),
        "bad_clip.h5": lambda f: f["nodes/0002"].attrs.__setitem__("max", np.float32(-2)),
        "bad_mul.h5": lambda f: f["nodes/0010"].attrs.__setitem__("inputs", np.array([8, 4], np.int32)),
        "bad_arity.h5": lambda f: f["nodes/0008"].attrs.__setitem__("inputs", np.array([7], np.int32)),
        "bad_pad.h5": lambda f: f["nodes/0005"].attrs.__setitem__("pads", np.array([1, 0, 0, -1, 0, 0], np.int32)),
        "bad_fused_clip.h5": lambda f: f["nodes/0004"].attrs.__setitem__("clip", np.array([0, 6], np.float32)),
    }
    for name, fn in ops_broken.items():
        mutate(p("tiny_ops.h5"), p(name), fn)

    # a linear layer too wide for int32 accumulators at 8 bits (K = 190*190 = 36100)
    big = [{"op": "flatten", "name": "flat", "inputs": [-1], "shape": (36100,), "attrs": {}, "data": {}},
           {"op": "linear", "name": "wide", "inputs": [0], "shape": (2,), "attrs": {},
            "data": {"weight": np.random.RandomState(1).randn(2, 36100).astype(np.float32)}}]
    write_model(p("bigk.h5"), big, in_shape=(1, 190, 190))
    write_data(p("data_190.h5"), shape=(1, 190, 190), classes=2, n_train=3, n_test=2)

    # a data file whose header claims 2^31 - 1 images of 4096 x 4096 pixels (the data is never written)
    with h5py.File(p("data_huge.h5"), "w") as f:
        f.attrs["format"] = np.bytes_("ccq-data")
        f.attrs["version"] = np.int32(1)
        f.attrs["classes"] = np.int32(3)
        for split in ("train", "test"):
            g = f.create_group(split)
            g.create_dataset("images", shape=(2**31 - 1, 1, 4096, 4096), dtype=np.uint8, chunks=(1, 1, 64, 64))
            g.create_dataset("labels", shape=(2**31 - 1,), dtype=np.int32, chunks=(1024,))

    raw = open(p("tiny.h5"), "rb").read()
    with open(p("truncated.h5"), "wb") as fo:
        fo.write(raw[: len(raw) // 2])
    with open(p("not_hdf5.h5"), "w") as fo:
        fo.write("this is a text file, not HDF5\n")
    with h5py.File(p("foreign.h5"), "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    print(f"make_fixtures: wrote {out}")


if __name__ == "__main__":
    main()
