#!/usr/bin/env python3
"""data2ccq.py: convert an image classification data set into a ccq data file.

Sources:
  --fashion-mnist OUT.h5        the IDX files of Debian's dataset-fashion-mnist
  --idx DIR OUT.h5              any MNIST-style IDX directory (train-/t10k- files)
  --npz IN.npz OUT.h5           x (uint8, NxHxW or NxHxWxC) and y (integer labels);
                                or x_train/y_train/x_test/y_test. With only x/y,
                                the last --test images of a seeded permutation
                                become the test split.
  --folder DIR OUT.h5           an image folder: DIR/CLASS/*.png|jpg|..., one
                                subfolder per class (sorted names -> labels 0..),
                                the test split from DIR/test/CLASS/* (and
                                DIR/train/CLASS/* when present) or a seeded,
                                per-class fraction (--test-fraction F --seed S).
                                --size H[xW] resizes the shorter side and
                                centre-crops (torchvision's Resize + CenterCrop);
                                --channels 1|3 (default 3 if any image is colour).
                                Images are stored in a seeded random order. Its
                                errors exit 2.

Layout written (documented in README.md, "Data file"):
  /                attrs format="ccq-data", version=1, classes, source,
                 class_names (--folder only: UTF-8 strings, index = label)
  /train/images    uint8 [N, C, H, W]   (channel-first, raw pixels)
  /train/labels    int32 [N]            (0 <= label < classes)
  /test/images, /test/labels            same shapes for the test split

What it does not do: normalise, augment, or hold out a validation split (the
search takes its validation images from the train split by index), or read
16-bit and float images (refused, naming the file).
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

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


# ---- image folders (--folder) ---------------------------------------------
#
# The layout and the preprocessing follow torchvision's ImageFolder, Resize(int)
# and CenterCrop, so a model trained with them sees the same pixels: classes are
# the sorted subfolder names (hidden ones skipped), images are found recursively
# by extension in sorted order, and resizing is Pillow's bilinear (antialiased
# when shrinking). Every image is opened twice: once for its header (mode and
# size, to choose the channel count and check sizes before decoding anything),
# once to decode it into a preallocated array.

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
GREY_MODES = {"1", "L", "LA", "La"}
WIDE_MODES = {"I", "F"}  # 32-bit int and float; "I;16*" too (checked by prefix)


def image_modules():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("Pillow is missing: install python3-pil (scripts/setup.sh does)")
    return Image


def class_folders(root, skip=()):
    """Sorted class subfolder names of root (hidden ones and `skip` left out)."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder")
    try:
        names = sorted(e.name for e in os.scandir(root)
                       if e.is_dir() and not e.name.startswith(".") and e.name not in skip)
    except OSError as e:
        raise DataError(f"{root}: cannot list: {e.strerror or e}")
    if not names:
        raise DataError(f"{root}: no class subfolders (expected {os.path.join(root, 'CLASS', 'IMAGE.png')})")
    if len(names) < 2:
        raise DataError(f"{root}: only one class subfolder ('{names[0]}'): a classifier needs at least 2")
    return names


def class_images(folder):
    """Image files under folder, recursively, in torchvision's order (sorted by
    folder, then name); hidden files and folders skipped."""
    found = []
    for d, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [n for n in dirs if not n.startswith(".")]
        found.append((d, sorted(f for f in files if f.lower().endswith(IMAGE_EXTS) and not f.startswith("."))))
    out = [os.path.join(d, f) for d, files in sorted(found) for f in files]
    if not out:
        raise DataError(f"{folder}: empty class: no images ({', '.join(IMAGE_EXTS)})")
    return out


def folder_layout(d, fraction):
    """(train root, test root or None, folders ignored) for DIR; see the module doc."""
    if not os.path.isdir(d):
        raise DataError(f"{d}: no such folder")
    train, test = os.path.join(d, "train"), os.path.join(d, "test")
    has_train, has_test = os.path.isdir(train), os.path.isdir(test)
    if has_test and fraction is not None:
        raise DataError(f"{test}: the folder already has a test split: --test-fraction does not apply")
    if not has_test and fraction is None:
        raise DataError(f"{d}: no test/ subfolder: give --test-fraction F (and --seed S) to hold out a test split")
    ignored = []
    if has_train:  # then only train/ (and test/) are read: say what else was there
        try:
            ignored = sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith(".")
                             and e.name not in ("train", "test"))
        except OSError as e:
            raise DataError(f"{d}: cannot list: {e.strerror or e}")
    return (train if has_train else d), (test if has_test else None), ignored


def image_header(path, Image):
    """(mode, height, width) without decoding the pixels."""
    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad files
        raise DataError(f"{path}: cannot read image: {one_line(e)}")
    if mode in WIDE_MODES or mode.startswith("I;16"):
        raise DataError(f"{path}: {mode} image (16-bit or float pixels): convert it to 8 bits per channel")
    return mode, h, w


def one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def resize_crop(im, h, w, Image):
    """Scale so the image covers h x w, then centre-crop to it. For h == w this is
    torchvision's Resize(h) (shorter side to h, longer int(h * long / short)) then
    CenterCrop(h) (offset int(round((size - crop) / 2)))."""
    w0, h0 = im.size
    if h * w0 >= w * h0:  # height is the binding side
        nh, nw = h, max(w, int(h * w0 / h0))
    else:
        nh, nw = max(h, int(w * h0 / w0)), w
    if (nw, nh) != (w0, h0):
        im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
    return im.crop((left, top, left + w, top + h))


def decode_image(path, channels, size, Image):
    """uint8 [channels, H, W]: converted to L (ITU-R 601-2 luma) or RGB first
    (alpha dropped, grey replicated), then resized and cropped if size is given."""
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L" if channels == 1 else "RGB")
    except Exception as e:
        raise DataError(f"{path}: cannot read image: {one_line(e)}")
    if size:
        im = resize_crop(im, size[0], size[1], Image)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def seeded(seed, *key):
    """A numpy RandomState keyed by (seed, purpose...): stable across numpy versions."""
    return np.random.RandomState([seed, *key])


def split_by_fraction(per_class, names, fraction, seed):
    """Per class: round(fraction * n) images (at least 1, at most n - 1) to test,
    chosen by a permutation keyed by the seed and the class name, so a class's
    split depends only on its own files."""
    train, test = [], []
    for name, paths in zip(names, per_class):
        n = len(paths)
        if n < 2:
            raise DataError(f"{os.path.dirname(paths[0])}: class '{name}' has 1 image: --test-fraction needs at least 2")
        k = min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1)
        perm = seeded(seed, 2, zlib.crc32(name.encode("utf-8"))).permutation(n)
        held = set(perm[:k].tolist())
        test.append([p for i, p in enumerate(paths) if i in held])
        train.append([p for i, p in enumerate(paths) if i not in held])
    return train, test


def load_folder(d, channels, size, fraction, seed):
    """Read an image folder; returns (splits, class names, notes)."""
    Image = image_modules()
    train_root, test_root, ignored = folder_layout(d, fraction)
    names = class_folders(train_root, skip=("test",) if train_root == d else ())
    per_class = [class_images(os.path.join(train_root, n)) for n in names]
    if test_root is None:
        train, test = split_by_fraction(per_class, names, fraction, seed)
    else:
        test_names = class_folders(test_root)
        if test_names != names:
            missing = [n for n in names if n not in test_names]
            extra = [n for n in test_names if n not in names]
            raise DataError(f"{test_root}: classes differ from {train_root}'s: "
                            + "; ".join(([f"missing {missing}"] if missing else []) + ([f"extra {extra}"] if extra else [])))
        train, test = per_class, [class_images(os.path.join(test_root, n)) for n in names]

    # Pass 1: headers only. Channel count and the common size (without --size).
    colour, first = False, None
    for paths in train + test:
        for p in paths:
            mode, h, w = image_header(p, Image)
            colour = colour or mode not in GREY_MODES
            if size is None:
                if first is None:
                    first = (p, h, w)
                elif (h, w) != first[1:]:
                    raise DataError(f"{p} is {h}x{w} but {first[0]} is {first[1]}x{first[2]} (HxW): "
                                    f"give --size H[xW] to resize and centre-crop")
    c = channels or (3 if colour else 1)
    hw = size or first[1:]

    # Pass 2: decode into one array per split, stored in a seeded random order
    # (ccq calibrates on the first train images, and --limit takes the first).
    splits = {}
    for split, groups, key in (("train", train, 0), ("test", test, 1)):
        items = [(p, label) for label, paths in enumerate(groups) for p in paths]
        order = seeded(seed, key).permutation(len(items))
        x = np.empty((len(items), c) + tuple(hw), dtype=np.uint8)
        y = np.empty(len(items), dtype=np.int32)
        for i, j in enumerate(order):
            p, label = items[j]
            x[i] = decode_image(p, c, size, Image)
            y[i] = label
        splits[split] = (x, y)
    notes = [f"ignored {os.path.join(d, n)} (only train/ and test/ are read)" for n in ignored]
    return splits, names, notes


def write(out_path, splits, classes, source, class_names=None):
    """Write the data file atomically: a temporary file in the same folder, renamed
    over out_path only when complete (removed on any failure)."""
    import h5py
    tmp = f"{out_path}.{os.getpid()}.tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = np.bytes_(FORMAT)
            f.attrs["version"] = np.int32(VERSION)
            f.attrs["classes"] = np.int32(classes)
            f.attrs["source"] = np.bytes_(source)
            if class_names is not None:
                f.attrs.create("class_names", data=list(class_names), dtype=h5py.string_dtype("utf-8"))
            for split, (x, y) in splits.items():
                g = f.create_group(split)
                g.create_dataset("images", data=x)
                g.create_dataset("labels", data=y)
        os.replace(tmp, out_path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise DataError(f"{out_path}: cannot write: {one_line(e)}")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Parser(argparse.ArgumentParser):
    """argparse with the scripts' one-line error (exit 2) instead of usage + error."""

    def error(self, message):
        print(f"data2ccq: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_size(text):
    try:
        hw = [int(v) for v in text.lower().split("x")]
    except ValueError:
        hw = []
    if len(hw) not in (1, 2) or not all(1 <= v <= 65536 for v in hw):
        raise argparse.ArgumentTypeError(f"{text!r}: expected H or HxW, positive integers")
    return (hw[0], hw[-1])


def main(argv=None):
    ap = Parser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--fashion-mnist", action="store_true", help=f"read {FASHION_DIR}")
    src.add_argument("--idx", metavar="DIR", help="directory with MNIST-style IDX files")
    src.add_argument("--npz", metavar="IN.npz", help="numpy archive with x and y")
    src.add_argument("--folder", metavar="DIR", help="image folder: DIR/CLASS/IMAGE (and DIR/test/CLASS/IMAGE)")
    ap.add_argument("--test", type=int, default=10000, help="test images when the .npz has only x/y (default 10000)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the .npz split, and of --folder's test split and image order (default 0)")
    ap.add_argument("--channels", type=int, choices=(1, 3),
                    help="--folder: channels stored (default 3 if any image is colour, else 1)")
    ap.add_argument("--size", type=parse_size, metavar="H[xW]",
                    help="--folder: scale to cover HxW (shorter side to H if square), centre-crop "
                         "(default: keep the size, which all images must share)")
    ap.add_argument("--test-fraction", type=float, metavar="F",
                    help="--folder without a test/ subfolder: fraction of each class held out as test (0 < F < 1)")
    ap.add_argument("out", metavar="OUT.h5")
    a = ap.parse_args(argv)
    if not a.folder and (a.channels or a.size or a.test_fraction is not None):
        ap.error("--channels, --size and --test-fraction apply only to --folder")
    if a.test_fraction is not None and not 0 < a.test_fraction < 1:
        ap.error(f"--test-fraction {a.test_fraction}: must be between 0 and 1 (exclusive)")
    if not 0 <= a.seed < 2**32:
        ap.error(f"--seed {a.seed}: must be in [0, 2^32)")
    names, notes = None, []
    try:
        if a.folder:
            where = a.folder.rstrip("/") or "/"
            splits, names, notes = load_folder(where, a.channels, a.size, a.test_fraction, a.seed)
            classes = len(names)
        else:
            if a.npz:
                where = a.npz
                splits = load_npz(a.npz, a.test, a.seed)
            else:
                where = FASHION_DIR if a.fashion_mnist else a.idx
                splits = load_idx_dir(where)
            splits, classes = check_and_normalise(splits, where)
        write(a.out, splits, classes, os.path.abspath(where), names)
    except DataError as e:
        print(f"data2ccq: {e}", file=sys.stderr)
        return 2 if a.folder else 1
    for n in notes:
        print(f"data2ccq: {n}")
    tr, te = splits["train"][0], splits["test"][0]
    print(f"data2ccq: wrote {a.out}: train {tr.shape}, test {te.shape}, {classes} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
