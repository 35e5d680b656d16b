#!/usr/bin/env python3
"""test_data2ccq.py: the data converter on .npz and IDX input: layout and
values written, the deterministic split, and one-line errors for bad input
(with no output file left behind)."""
import gzip
import os
import struct
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERT = [sys.executable, os.path.join(HERE, "..", "scripts", "data2ccq.py")]
ccq = ccq_binary()
t = Checks("data2ccq")
rng = np.random.RandomState(11)

with tempfile.TemporaryDirectory() as d:
    P = lambda n: os.path.join(d, n)  # noqa: E731
    # N x H x W x C images with x/y only: split by a seeded permutation
    x = rng.randint(0, 256, (50, 6, 5, 3)).astype(np.uint8)
    y = (np.arange(50) % 4).astype(np.int64)
    np.savez(P("hwc.npz"), x=x, y=y)
    rc, so, se = run(CONVERT + ["--npz", P("hwc.npz"), "--test", "10", "--seed", "2", P("hwc.h5")])
    t.check("npz converts", rc == 0, se)
    perm = np.random.RandomState(2).permutation(50)
    with h5py.File(P("hwc.h5"), "r") as f:
        t.check("format attrs", f.attrs["format"] == b"ccq-data" and f.attrs["version"] == 1 and f.attrs["classes"] == 4)
        t.check("train shape NCHW", f["train/images"].shape == (40, 3, 6, 5), str(f["train/images"].shape))
        t.check("test images are the permutation's tail, channel first",
                np.array_equal(f["test/images"][...], x[perm[-10:]].transpose(0, 3, 1, 2)))
        t.check("labels int32 and aligned", f["test/labels"].dtype == np.int32 and
                np.array_equal(f["test/labels"][...], y[perm[-10:]]))
    rc, so, se = run([ccq, "inspect", P("hwc.h5")])
    t.check("ccq reads it", rc == 0 and "40 images 3x6x5" in so and "10 images 3x6x5" in so, so + se)

    # explicit splits, N x H x W
    np.savez(P("split.npz"), x_train=x[:30, :, :, 0], y_train=y[:30], x_test=x[30:, :, :, 0], y_test=y[30:])
    rc, so, se = run(CONVERT + ["--npz", P("split.npz"), P("split.h5")])
    with h5py.File(P("split.h5"), "r") as f:
        t.check("explicit splits", rc == 0 and f["train/images"].shape == (30, 1, 6, 5) and
                f["test/images"].shape == (20, 1, 6, 5), se)

    # IDX directory (gzip and plain)
    os.mkdir(P("idx"))
    def idx(path, arr, gz):
        raw = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
        (gzip.open if gz else open)(path + (".gz" if gz else ""), "wb").write(raw)
    idx(P("idx/train-images-idx3-ubyte"), x[:20, :, :, 0], True)
    idx(P("idx/train-labels-idx1-ubyte"), y[:20].astype(np.uint8), False)
    idx(P("idx/t10k-images-idx3-ubyte"), x[20:, :, :, 0], False)
    idx(P("idx/t10k-labels-idx1-ubyte"), y[20:].astype(np.uint8), True)
    rc, so, se = run(CONVERT + ["--idx", P("idx"), P("idx.h5")])
    with h5py.File(P("idx.h5"), "r") as f:
        t.check("idx converts", rc == 0 and np.array_equal(f["train/images"][...][:, 0], x[:20, :, :, 0]), se)

    def bad(label, args, needle):
        out = P("bad.h5")
        rc, so, se = run(CONVERT + args + [out])
        lines = se.strip().splitlines()
        t.check(f"{label}: exit 1, one line", rc == 1 and len(lines) == 1 and lines[0].startswith("data2ccq: "), se)
        t.check(f"{label}: says {needle!r}", needle in se, se)
        t.check(f"{label}: no output", not os.path.exists(out) and not os.path.exists(out + ".tmp"))

    np.savez(P("float.npz"), x=x.astype(np.float32), y=y)
    bad("float images", ["--npz", P("float.npz"), "--test", "10"], "images must be uint8")
    np.savez(P("short.npz"), x=x, y=y[:10])
    bad("label count", ["--npz", P("short.npz")], "50 images but y has 10 labels")
    np.savez(P("nox.npz"), images=x)
    bad("missing arrays", ["--npz", P("nox.npz")], "needs arrays x and y")
    np.savez(P("neg.npz"), x=x, y=y - 1)
    bad("negative label", ["--npz", P("neg.npz"), "--test", "10"], "negative label")
    bad("test too large", ["--npz", P("hwc.npz"), "--test", "50"], "--test 50")
    open(P("junk.npz"), "w").write("junk")
    bad("not npz", ["--npz", P("junk.npz")], "not a readable .npz")
    open(P("idx/t10k-labels-idx1-ubyte.gz"), "wb").write(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    bad("truncated idx", ["--idx", P("idx")], "expected 5 data bytes, found 2")
t.finish()
