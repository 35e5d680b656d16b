#!/usr/bin/env python3
"""data2ccq.py: convert an image classification data set into a ccq data file.

Sources:
  --fashion-mnist OUT.h5        the IDX files of Debian's dataset-fashion-mnist
  --idx DIR OUT.h5              any MNIST-style IDX directory (train-/t10k- files)
  --npz IN.npz OUT.h5           x (uint8, NxHxW or NxHxWxC) and y (integer labels);
                                or x_train/y_train/x_test/y_test. With only x/y,
                                the last --test images of a seeded permutation
                                become the test split.

Layout written (documented in README.md, "Data file"):
  /                attrs format="ccq-data", version=1, classes, source
  /train/images    uint8 [N, C, H, W]   (channel-first, raw pixels)
  /train/labels    int32 [N]            (0 <= label < classes)
  /test/images, /test/labels            same shapes for the test split

What it does not do: normalise, augment, or hold out a validation split (the
search takes its validation images from the train split by index).
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np

FORMAT = "ccq-data"
VERSION = 1
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


class DataError(Exception):
    pass


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}")
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    hdr = 4 + 4 * ndim
    if len(raw) < hdr:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:hdr])
    n = int(np.prod(dims))
    if len(raw) - hdr != n:
        raise DataError(f"{path}: expected {n} data bytes, found {len(raw) - hdr}")
    return np.frombuffer(raw, dtype=np.uint8, offset=hdr).reshape(dims)


def find_idx(d, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise DataError(f"{os.path.join(d, stem)}[.gz]: not found")


def load_idx_dir(d):
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(find_idx(d, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(find_idx(d, f"{prefix}-labels-idx1-ubyte"))
        out[split] = (x, y)
    return out


def to_nchw(x, where):
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, found {x.dtype}")
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise DataError(f"{where}: images must be NxHxW or NxHxWxC, found shape {x.shape}")


def load_npz(path, n_test, seed):
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file: {e}")
    keys = set(z.files)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        return {"train": (z["x_train"], z["y_train"]), "test": (z["x_test"], z["y_test"])}
    if not {"x", "y"} <= keys:
        raise DataError(f"{path}: needs arrays x and y (or x_train/y_train/x_test/y_test), found {sorted(keys)}")
    x, y = z["x"], z["y"]
    if len(x) != len(y):
        raise DataError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
    if not 0 < n_test < len(x):
        raise DataError(f"{path}: --test {n_test} must be between 1 and {len(x) - 1}")
    perm = np.random.RandomState(seed).permutation(len(x))
    tr, te = perm[:-n_test], perm[-n_test:]
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te])}


def check_and_normalise(splits, where):
    out = {}
    shape = None
    for split in ("train", "test"):
        x, y = splits[split]
        x = to_nchw(x, f"{where} [{split}]")
        y = np.asarray(y)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where} [{split}]: labels must be a 1-D integer array, found {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{where} [{split}]: {len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{where} [{split}]: no images")
        if y.min() < 0:
            raise DataError(f"{where} [{split}]: negative label {int(y.min())}")
        if shape is None:
            shape = x.shape[1:]
        elif x.shape[1:] != shape:
            raise DataError(f"{where}: train images are {shape} but test images are {x.shape[1:]}")
        out[split] = (x, y.astype(np.int32))
    classes = int(max(out["train"][1].max(), out["test"][1].max())) + 1
    return out, classes


def write(out_path, splits, classes, source):
    import h5py
    tmp = out_path + ".tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = np.bytes_(FORMAT)
            f.attrs["version"] = np.int32(VERSION)
            f.attrs["classes"] = np.int32(classes)
            f.attrs["source"] = np.bytes_(source)
            for split, (x, y) in splits.items():
                g = f.create_group(split)
                g.create_dataset("images", data=x)
                g.create_dataset("labels", data=y)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--fashion-mnist", action="store_true", help=f"read {FASHION_DIR}")
    src.add_argument("--idx", metavar="DIR", help="directory with MNIST-style IDX files")
    src.add_argument("--npz", metavar="IN.npz", help="numpy archive with x and y")
    ap.add_argument("--test", type=int, default=10000, help="test images when the .npz has only x/y (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="permutation seed for the .npz split (default 0)")
    ap.add_argument("out", metavar="OUT.h5")
    a = ap.parse_args(argv)
    try:
        if a.npz:
            where = a.npz
            splits = load_npz(a.npz, a.test, a.seed)
        else:
            where = FASHION_DIR if a.fashion_mnist else a.idx
            splits = load_idx_dir(where)
        splits, classes = check_and_normalise(splits, where)
        write(a.out, splits, classes, os.path.abspath(where))
    except DataError as e:
        print(f"data2ccq: {e}", file=sys.stderr)
        return 1
    tr, te = splits["train"][0], splits["test"][0]
    print(f"data2ccq: wrote {a.out}: train {tr.shape}, test {te.shape}, {classes} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
