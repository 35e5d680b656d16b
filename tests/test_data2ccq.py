#!/usr/bin/env python3
"""test_data2ccq.py: the data converter on .npz, IDX and image-folder input:
layout and values written, the deterministic splits, resizing and cropping,
that ccq reads (and evaluates) the output, and one-line errors for bad input
(with no output file left behind)."""
import contextlib
import glob
import gzip
import importlib.util
import io
import json
import os
import struct
import sys
import tempfile

import h5py
import numpy as np

from PIL import Image

from ccqtest import Checks, ccq_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
LENET = os.path.join(HERE, "..", "results", "models", "lenet.h5")
SCRIPT = os.path.join(HERE, "..", "scripts", "data2ccq.py")
CONVERT = [sys.executable, SCRIPT]
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
        t.refusal(label)
        out = P("bad.h5")
        rc, so, se = run(CONVERT + args + [out])
        lines = se.strip().splitlines()
        t.check(f"{label}: exit 1, one line", rc == 1 and len(lines) == 1 and lines[0].startswith("data2ccq: "), se)
        t.check(f"{label}: says {needle!r}", needle in se, se)
        t.check(f"{label}: no output", not glob.glob(out + "*"))

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


# ---- image folders ------------------------------------------------------------
def shape_image(label, i, h, w, rgb):
    """A synthetic image of class label (0 disc, 1 square, 2 stripes), varied by
    i; pixel (0, 0) holds i so the test can find the image after shuffling."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = h / 2 + i % 5 - 2, w / 2 + i % 3 - 1, min(h, w) / 3
    if label == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    elif label == 1:
        mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
    else:
        mask = (xx // (2 + i % 3)) % 2 == 0
    fg = np.array([40 + 7 * i % 200, 255 - 5 * i % 100, 90 + 3 * label]) if rgb else np.array([230 - i % 50])
    a = np.where(mask[..., None], fg, 20 + label * 10).astype(np.uint8)
    a[0, 0] = i
    return a if rgb else a[..., 0]


def save(path, a, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(a).save(path, **kw)


# Most folder runs call the script's main() in this process (a new interpreter
# costs ~0.5 s, most of this test's time); a few run it as a process too, to
# check the exit status and stderr as users see them.
spec = importlib.util.spec_from_file_location("data2ccq", SCRIPT)
data2ccq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(data2ccq)


def call(args, proc=False):
    if proc:
        return run(CONVERT + args)
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        try:
            rc = data2ccq.main(args)
        except SystemExit as e:
            rc = e.code
    return rc, so.getvalue(), se.getvalue()


with tempfile.TemporaryDirectory() as d:
    P = lambda *n: os.path.join(d, *n)  # noqa: E731

    def convert(args, out, proc=False):
        rc, so, se = call(args + [out], proc)
        t.check(f"{' '.join(args)}: converts", rc == 0 and os.path.exists(out), se)
        return so

    def read(path):
        with h5py.File(path, "r") as f:
            return {k: f[k][...] for k in ("train/images", "train/labels", "test/images", "test/labels")}, \
                dict(f.attrs)

    # 1. train/ + test/ layout, one size, PNG, grey and RGB mixed; class folders
    #    created out of order; a hidden folder, a text file and a val/ folder ignored.
    names = ["Mango", "apple", "zebra"]  # sorted by code point
    src = {}  # (split, label, i) -> the pixels saved
    for split, n in (("train", 12), ("test", 4)):
        for label in (2, 0, 1):
            for i in range(n):
                a = shape_image(label, i, 20, 24, rgb=i % 2 == 1)
                src[(split, label, i)] = a
                save(P("lay", split, names[label], f"img{i:02d}.png"), a)
    save(P("lay", "train", "apple", ".hidden", "x.png"), shape_image(0, 99, 5, 5, True))
    open(P("lay", "train", "apple", "notes.txt"), "w").write("not an image")
    save(P("lay", "val", "apple", "v.png"), shape_image(0, 1, 20, 24, True))
    so = convert(["--folder", P("lay")], P("lay.h5"), proc=True)
    v, attrs = read(P("lay.h5"))
    t.check("layout: class names sorted, stored", [str(n) for n in attrs.get("class_names", [])] == names and
            attrs["classes"] == 3, str(attrs))
    t.check("layout: shapes (default 3 channels: some images are colour)",
            v["train/images"].shape == (36, 3, 20, 24) and v["test/images"].shape == (12, 3, 20, 24),
            str(v["train/images"].shape))
    t.check("layout: label counts", list(np.bincount(v["train/labels"])) == [12] * 3 and
            list(np.bincount(v["test/labels"])) == [4] * 3 and v["train/labels"].dtype == np.int32)
    t.check("layout: images stored in a shuffled order", np.any(np.diff(v["train/labels"]) < 0))
    t.check("layout: val/ ignored, said so", "val (only train/ and test/ are read)" in so, so)

    def exact(split, x, y, channels):
        ok = True
        for img, label in zip(x, y):
            a = src[(split, int(label), int(img[0, 0, 0]))]
            if channels == 1:
                want = np.asarray(Image.fromarray(a).convert("L"))[None]
            else:
                want = np.repeat(a[None], 3, 0) if a.ndim == 2 else a.transpose(2, 0, 1)
            ok = ok and np.array_equal(img, want)
        return ok
    t.check("layout: pixels exact, grey replicated to RGB, channel first",
            exact("train", v["train/images"], v["train/labels"], 3) and
            exact("test", v["test/images"], v["test/labels"], 3))
    convert(["--folder", P("lay"), "--channels", "1"], P("lay1.h5"))
    v1, _ = read(P("lay1.h5"))
    t.check("layout --channels 1: colour to Pillow's luma, grey exact",
            v1["train/images"].shape == (36, 1, 20, 24) and exact("train", v1["train/images"], v1["train/labels"], 1))
    rc, so, se = run([ccq, "inspect", P("lay.h5")])
    t.check("layout: ccq reads it", rc == 0 and "36 images 3x20x24" in so and "12 images 3x20x24" in so, so + se)
    convert(["--folder", P("lay"), "--size", "16x30"], P("lay_hw.h5"))
    v2, _ = read(P("lay_hw.h5"))
    t.check("--size HxW: shape", v2["train/images"].shape == (36, 3, 16, 30), str(v2["train/images"].shape))

    # 2. a flat folder of mixed sizes, PNG and JPEG, grey and RGB, split by a
    #    seeded fraction; class sizes 80/90/100 -> 16/18/20 test images.
    sizes = [(28, 28), (32, 40), (40, 32), (36, 36), (30, 29)]
    kinds = [("png", False), ("png", True), ("jpg", True), ("jpg", False)]
    pngs = []  # (label, path, array) of PNGs to recompute resize + crop
    for label, n in enumerate((80, 90, 100)):
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            ext, rgb = kinds[(i // len(sizes)) % len(kinds)]
            a = shape_image(label, i, h, w, rgb)
            path = P("flat", ["circle", "square", "stripes"][label], f"{i:03d}.{ext}")
            save(path, a, **({"quality": 90} if ext == "jpg" else {}))
            if ext == "png" and i < 40:
                pngs.append((label, a))
    args = ["--folder", P("flat"), "--size", "28", "--channels", "1", "--test-fraction", "0.2", "--seed", "5"]
    convert(args, P("flat_a.h5"))
    convert(args, P("flat_b.h5"))
    a5, attrs = read(P("flat_a.h5"))
    b5, _ = read(P("flat_b.h5"))
    t.check("fraction: shapes", a5["train/images"].shape == (216, 1, 28, 28) and
            a5["test/images"].shape == (54, 1, 28, 28), str(a5["test/images"].shape))
    t.check("fraction: stratified split sizes", list(np.bincount(a5["test/labels"])) == [16, 18, 20] and
            list(np.bincount(a5["train/labels"])) == [64, 72, 80], str(np.bincount(a5["test/labels"])))
    t.check("fraction: class names", [str(n) for n in attrs["class_names"]] == ["circle", "square", "stripes"])
    t.check("fraction: same seed, identical datasets", all(np.array_equal(a5[k], b5[k]) for k in a5))
    convert(args[:-1] + ["6"], P("flat_c.h5"))
    c6, _ = read(P("flat_c.h5"))
    t.check("fraction: another seed, same sizes, other images",
            list(np.bincount(c6["test/labels"])) == [16, 18, 20] and
            not np.array_equal(np.sort(a5["test/images"], axis=0), np.sort(c6["test/images"], axis=0)))

    def torchvision_like(a, s):
        # Grey first, then torchvision's Resize(s) (shorter side to s, longer
        # int(s * long / short), bilinear) and CenterCrop(s) (offset int(round(d / 2))).
        im = Image.fromarray(a).convert("L")
        w, h = im.size
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return np.asarray(im.crop((left, top, left + s, top + s)))
    every = np.concatenate([a5["train/images"], a5["test/images"]])[:, 0]
    labels = np.concatenate([a5["train/labels"], a5["test/labels"]])
    t.check("--size: resize shorter side + centre crop as torchvision (every size, grey and RGB PNG)",
            all(any(np.array_equal(torchvision_like(a, 28), img) for img in every[labels == label])
                for label, a in pngs), f"{len(pngs)} images")
    rc, so, se = run([ccq, "eval", LENET, "--data", P("flat_a.h5"), "--float", "--json"])
    try:
        ev = json.loads(so)
    except ValueError:
        ev = {}
    t.check("ccq eval runs lenet on the converted folder", rc == 0 and ev.get("images") == 54, so + se)
    rc, so, se = run([ccq, "eval", LENET, "--data", P("flat_a.h5"), "--split", "train", "--wbits", "4",
                      "--calib", "64", "--json"])
    t.check("ccq eval --wbits calibrates on its train split", rc == 0 and '"images": 216' in so, so + se)

    # grey only -> 1 channel by default; test/ beside the class folders (no train/)
    for split in ("", "test"):
        for label in (0, 1):
            for i in range(3):
                save(P("grey", split, f"c{label}", f"{i}.png"), shape_image(label, i, 8, 8, rgb=False))
    convert(["--folder", P("grey")], P("grey.h5"))
    g, attrs = read(P("grey.h5"))
    t.check("grey only: 1 channel; test/ beside the classes",
            g["train/images"].shape == (6, 1, 8, 8) and g["test/images"].shape == (6, 1, 8, 8) and
            [str(n) for n in attrs["class_names"]] == ["c0", "c1"], str(g["train/images"].shape))

    # ---- bad folders: one line, exit 2, no output (an existing one untouched)
    def bad_folder(label, args, needle, out=None, proc=False):
        t.refusal(label)
        out = out or P("bad.h5")
        rc, so, se = call(args + [out], proc)
        lines = se.strip().splitlines()
        t.check(f"{label}: exit 2, one line", rc == 2 and len(lines) == 1 and lines[0].startswith("data2ccq: "), se)
        t.check(f"{label}: says {needle!r}", needle in se, se)
        t.check(f"{label}: no output", not glob.glob(out + "*") or out == P("keep.h5") and
                glob.glob(out + "*") == [out] and open(out, "rb").read() == b"keep")

    def tiny(root, classes=("a", "b"), n=3, hw=(8, 8)):
        for c in classes:
            for i in range(n):
                save(os.path.join(root, c, f"{i}.png"), shape_image(0, i, *hw, rgb=False))
        return root

    bad_folder("missing folder", ["--folder", P("nope"), "--test-fraction", "0.5"], P("nope") + ": no such folder")
    os.makedirs(P("files"))
    save(P("files", "x.png"), shape_image(0, 0, 8, 8, False))
    bad_folder("no class subfolders", ["--folder", P("files"), "--test-fraction", "0.5"],
               P("files") + ": no class subfolders")
    tiny(P("empty"))
    os.makedirs(P("empty", "c"))
    open(P("empty", "c", "readme.txt"), "w").write("x")
    bad_folder("empty class", ["--folder", P("empty"), "--test-fraction", "0.5"], P("empty", "c") + ": empty class")
    tiny(P("one"), classes=("only",))
    bad_folder("one class", ["--folder", P("one"), "--test-fraction", "0.5"], "only one class subfolder ('only')")
    tiny(P("trunc"))
    raw = open(P("trunc", "b", "1.png"), "rb").read()
    open(P("trunc", "b", "1.png"), "wb").write(raw[:len(raw) // 2])
    open(P("keep.h5"), "wb").write(b"keep")
    bad_folder("truncated image", ["--folder", P("trunc"), "--test-fraction", "0.5"],
               P("trunc", "b", "1.png") + ": cannot read image", out=P("keep.h5"), proc=True)
    tiny(P("junk"))
    open(P("junk", "a", "9.jpg"), "w").write("not a jpeg")
    bad_folder("not an image", ["--folder", P("junk"), "--test-fraction", "0.5"],
               P("junk", "a", "9.jpg") + ": cannot read image")
    tiny(P("wide"))
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(P("wide", "a", "16bit.png"))
    bad_folder("16-bit image", ["--folder", P("wide"), "--test-fraction", "0.5"],
               P("wide", "a", "16bit.png") + ": I")
    bad_folder("mixed sizes", ["--folder", P("flat"), "--test-fraction", "0.2"], "give --size")
    rc, so, se = call(["--folder", P("flat"), "--test-fraction", "0.2", P("bad.h5")])
    t.check("mixed sizes: names two files", len([w for w in se.split() if w.startswith(P("flat"))]) == 2, se)
    tiny(P("differ", "train"), classes=("a", "b", "c"))
    tiny(P("differ", "test"), classes=("a", "b", "d"))
    bad_folder("test classes differ", ["--folder", P("differ")],
               P("differ", "test") + ": classes differ from " + P("differ", "train") + "'s: missing ['c']; extra ['d']")
    bad_folder("no test split", ["--folder", P("trunc")], "no test/ subfolder: give --test-fraction")
    bad_folder("fraction with test/", ["--folder", P("lay"), "--test-fraction", "0.2"], "does not apply")
    tiny(P("single"), n=1)
    bad_folder("class of 1 image", ["--folder", P("single"), "--test-fraction", "0.5"], "has 1 image")
    bad_folder("unwritable output", ["--folder", P("grey")], "cannot write", out=P("no", "dir", "x.h5"))
    bad_folder("fraction out of range", ["--folder", P("grey"), "--test-fraction", "1"], "--test-fraction 1.0")
    bad_folder("bad size", ["--folder", P("grey"), "--size", "0x8"], "expected H or HxW", proc=True)
    bad_folder("bad channels", ["--folder", P("grey"), "--channels", "2"], "--channels")
    bad_folder("folder options elsewhere", ["--npz", P("x.npz"), "--size", "8"], "apply only to --folder")
t.finish()
