#!/usr/bin/env python3
"""test_cexport.py: `ccq export --format c` is portable and exact.

  test_cexport.py DATA.h5 MODEL.h5 --bits 8,4,2 [--first-last-8] [--cross-images N] [--arm-bits B,..]
                  [--arm-images N] [--arm-fast-bits B,..] [--arm-only]
  test_cexport.py DATA.h5 --xnet        (a generated network of the ops the others lack, 3-channel data)
  test_cexport.py DATA.h5 --errors FIXTURE_DIR

For each width the model is quantized (`ccq quantize --wbits B`, 64 calibration images: the levels
need not be good, only exported exactly), run by `ccq eval --save-logits` on the first 1,000 test
images (/logits_int), exported with `ccq export --format c --name net`, and compiled with
tests/cexport_driver.c:
  - natively by gcc and by clang, each with and without -DNET_FAST, with
    -std=c99 -Wall -Wextra -Werror -pedantic -O2 (so: no warning at all), and run: gcc's default
    and clang's NET_FAST build on the 1,000 images, the two others on --cross-images (default all):
    int32 logits identical to ccq eval's, bit for bit;
  - once with gcc's undefined-behaviour and address sanitizers on 50 images (no signed overflow,
    no out-of-range shift or access: what would make another compiler or target differ);
  - for 32-bit ARM (arm-linux-gnueabihf-gcc -static: the default path with the same flags, i.e.
    scalar armhf code, at the --arm-bits widths; NET_FAST with -O3 -mfpu=neon, vectorised, at
    --arm-fast-bits) and run under qemu-arm on the first --arm-images images (default 1,000):
    identical logits again;
  - the export's footprint: levels bytes = sum over layers of ceil(weights x bits / 8) (packed at
    their real width; learned levels: their codes, the codebook a table of constants), arena <= the
    sum of the tensors, the generated code includes nothing beyond <stdint.h> and <string.h> and
    never allocates.
--xnet checks first that the quantized network holds the ops it is made for.
--errors: unsupported or invalid exports (a float model, another format, bad names, an output
directory that is a file or cannot be made, outputs that would overwrite the input, damaged and
missing models, a layer whose accumulators could overflow) give one stderr line, the documented
exit code, nothing on stdout and no output: no file, no temporary, no new directory, old files
untouched; then the good path (default name, new folder, replacing old files, help texts).
A missing compiler or emulator is a failure (scripts/setup.sh installs them), never a skip."""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, layer_bytes, prune_act_copy, run

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "cexport_driver.c")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
# NET_FAST for ARM as a fast build would be made: -O3 with NEON (vectorised); the default path at -O2
# without NEON (Debian armhf's baseline: scalar code).
ARM_FAST = ["-O3", "-mfpu=neon"]
ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("model", nargs="?")
ap.add_argument("--bits", default="4")
ap.add_argument("--first-last-8", action="store_true")
ap.add_argument("--levels", default="uniform", help="quantize with --levels (learned: codes and a codebook table)")
ap.add_argument("--sparsity", default=None, metavar="F",
                help="quantize with --sparsity F (weights pruned before GPTQ's rounding, stored sparse where smaller)")
ap.add_argument("--prune-act", default=None, metavar="P",
                help="after quantizing, ccq prune-act --max-drop P on 256 train images: activation thresholds "
                     "(at least two nodes must get one) exported with the rest")
ap.add_argument("--budget", default=None,
                help="quantize with --budget BYTES (a width per layer among 2,3,4,8) instead of --wbits; --bits "
                     "then only names the case")
ap.add_argument("--images", type=int, default=1000)
ap.add_argument("--arm-images", type=int, default=1000)
ap.add_argument("--arm-bits", default=None, help="widths run under qemu-arm (default: all)")
ap.add_argument("--arm-fast-bits", default="")
ap.add_argument("--arm-only", action="store_true", help="skip the native builds")
ap.add_argument("--cross-images", type=int, default=None,
                help="images for the gcc NET_FAST and clang default builds (default: all)")
ap.add_argument("--xnet", action="store_true")
ap.add_argument("--errors", metavar="FIXTURE_DIR")
a = ap.parse_args()
ccq = ccq_binary()
label = "errors" if a.errors else "xnet" if a.xnet else os.path.splitext(os.path.basename(a.model))[0]
t = Checks(f"cexport {label}")
T0 = time.time()


def tool(name):
    p = shutil.which(name)
    t.check(f"{name} is installed (scripts/setup.sh)", p is not None, f"{name} not found on PATH")
    return p


def same_logits(what, path, ref):
    if not os.path.exists(path):
        t.check(f"{what}: logits written", False, path)
        return
    got = np.fromfile(path, "<i4")
    n = got.size // ref.shape[1]
    got = got.reshape(n, ref.shape[1])
    ok = n == ref.shape[0] and np.array_equal(got, ref)
    bad = int((got != ref[:n]).any(1).sum()) if n <= ref.shape[0] else -1
    t.check(f"{what}: int32 logits identical to ccq eval's on {ref.shape[0]} images", ok,
            f"{n} images written, {bad} differ")


def export_and_check(work, qpath, ref, arm, arm_fast, arm_images):
    """Exports qpath as `net` into work/net, checks the footprint, builds and compares."""
    out = os.path.join(work, "net")
    rc, so, se = run([ccq, "export", qpath, "--format", "c", out, "--name", "net"])
    t.check(f"{qpath}: export", rc == 0 and se == "", se)
    if rc:
        return
    print(so.strip())
    src = open(os.path.join(out, "net.c")).read()
    incs = set(re.findall(r'#include [<"]([^>"]+)[>"]', src + open(os.path.join(out, "net.h")).read()))
    t.check("only <stdint.h>, <string.h> and its own header are included", incs <= {"stdint.h", "string.h", "net.h"},
            f"{incs}")
    t.check("no allocation in the generated code", not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", src))
    want, n_sparse = 0, 0
    with h5py.File(qpath, "r") as f:
        for k in f["nodes"]:
            g = f["nodes"][k]
            if "levels" not in g:
                continue
            b = layer_bytes(g)
            n_sparse += b != -(-g["levels"].size * int(g.attrs["bits"]) // 8)
            want += b
    m = re.search(r"levels (\d+) \((\d+) weights", so)
    t.check("levels packed at their widths (sparse layers: bitmap, codes, row index): the bytes counted here",
            m and int(m.group(1)) == want, f"printed {m and m.group(1)}, want {want}")
    if a.sparsity:
        t.check("--sparsity: at least one layer stored sparse", n_sparse >= 1, f"{n_sparse}")
    m = re.search(r"activation arena (\d+) \((\d+) without reuse\)", so)
    t.check("the arena is no larger than every tensor apart", m and int(m.group(1)) <= int(m.group(2)), so)
    n = ref.shape[0]
    imgs = os.path.join(work, "images.u8")
    few = n if a.cross_images is None else min(n, a.cross_images)
    builds = [] if a.arm_only else [("gcc", "", n), ("clang", "NET_FAST", n), ("gcc", "NET_FAST", few), ("clang", "", few)]
    for cc, fast, k in builds:
        exe = os.path.join(work, f"drv_{cc}{fast}")
        cmd = [cc] + CFLAGS + ([f"-D{fast}"] if fast else []) + ["-I", out, DRIVER, os.path.join(out, "net.c"), "-o", exe]
        rc, so, se = run(cmd)
        t.check(f"{cc} {fast or 'default'}: compiles with {' '.join(CFLAGS)}, no diagnostics", rc == 0 and se == "",
                se[-2000:])
        if rc:
            continue
        lg = exe + ".i32"
        rc, so, se = run([exe, imgs, lg, str(k)])
        t.check(f"{cc} {fast or 'default'}: runs", rc == 0, se)
        same_logits(f"{cc} {fast or 'default'}", lg, ref[:k])
    # sanitizers: no undefined behaviour, no access outside an object
    exe = os.path.join(work, "drv_san")
    rc = 1
    if not a.arm_only:
        rc, so, se = run(["gcc"] + CFLAGS[:-1] + ["-O1", "-fsanitize=undefined,address", "-fno-sanitize-recover=all",
                                                   "-I", out, DRIVER, os.path.join(out, "net.c"), "-o", exe])
        t.check("gcc -fsanitize=undefined,address: compiles", rc == 0, se[-2000:])
    if rc == 0:
        k = min(n, 50)
        rc, so, se = run([exe, imgs, exe + ".i32", str(k)], env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
        t.check(f"sanitized build runs {k} images without a report", rc == 0 and "runtime error" not in se, se[-2000:])
        if rc == 0:
            same_logits("sanitized", exe + ".i32", ref[:k])
    # 32-bit ARM under qemu
    k = min(n, arm_images)
    for fast in ("",) * arm + ("NET_FAST",) * arm_fast:
        exe = os.path.join(work, f"drv_arm{fast}")
        cmd = ["arm-linux-gnueabihf-gcc"] + CFLAGS + ["-static"] + (ARM_FAST + [f"-D{fast}"] if fast else []) + \
              ["-I", out, DRIVER, os.path.join(out, "net.c"), "-o", exe]
        rc, so, se = run(cmd)
        t.check(f"arm-linux-gnueabihf-gcc {' '.join(ARM_FAST) + ' ' + fast if fast else 'default'}: compiles, "
                "no diagnostics", rc == 0 and se == "", se[-2000:])
        if rc:
            continue
        t0 = time.time()
        rc, so, se = run(["qemu-arm", exe, imgs, exe + ".i32", str(k)])
        t.check(f"ARM {fast or 'default'} under qemu-arm: runs", rc == 0, se)
        print(f"  ARM {fast or 'default'}: {k} images under qemu-arm in {time.time() - t0:.1f} s")
        same_logits(f"32-bit ARM {fast or 'default'} (qemu-arm)", exe + ".i32", ref[:k])


def quantized_case(work, model, data, bits, fl8, arm, arm_fast):
    q = os.path.join(work, f"q_w{bits}.h5")
    cmd = [ccq, "quantize", model, "--data", data, "--calib", "64", "-o", q]
    if a.budget:
        cmd += ["--budget", a.budget, "--init", "rtn", "--alloc-images", "256", "--alloc-gens", "4"]
    else:
        cmd += ["--wbits", str(bits)]
    if a.levels != "uniform":
        cmd += ["--levels", a.levels]
    if a.sparsity:
        cmd += ["--sparsity", a.sparsity]
    rc, so, se = run(cmd + (["--first-last-8"] if fl8 else []))
    t.check(f"quantize {os.path.basename(model)} w{bits}{' (first/last 8)' if fl8 else ''} {a.levels}", rc == 0, se)
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
    rc, so, se = run([ccq, "eval", q, "--data", data, "--limit", str(a.images), "--save-logits", lg])
    t.check("ccq eval --save-logits", rc == 0, se)
    if rc:
        return
    with h5py.File(lg, "r") as f:
        ref = f["logits_int"][...]
    with h5py.File(data, "r") as f:
        f["test/images"][:ref.shape[0]].tofile(os.path.join(work, "images.u8"))
    print(f"{os.path.basename(model)} w{bits}:")
    if a.xnet:
        with h5py.File(q, "r") as f:
            nd = [f["nodes"][k] for k in sorted(f["nodes"].keys())]
            ops = {(g.attrs["op"].decode(), int(g.attrs.get("relu", 0))) for g in nd}
            bits_used = {int(g.attrs["bits"]) for g in nd if "bits" in g.attrs}
        need = {("conv2d", 0), ("maxpool", 0), ("relu", 0), ("batchnorm", 1), ("avgpool", 0), ("act", 0),
                ("mul", 0), ("flatten", 0), ("concat", 0), ("pad", 0), ("slice", 0), ("linear", 0), ("add", 1)}
        t.check("the quantized xnet has its ops (standalone relu, batchnorm and add with a fused relu)",
                need <= ops, f"missing {need - ops}")
        t.check("layer widths as asked", bits_used == ({3, 8} if fl8 else {bits}), f"{bits_used}")
    export_and_check(work, q, ref, arm, arm_fast, a.arm_images)


# ---- xnet: the ops and cases the reference models and the every-op network do not have ----------------


def window_out(n, k, s, p0, p1, d=1, ceil=0):
    num = n + p0 + p1 - d * (k - 1) - 1
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + p0:
        o -= 1
    return o


def make_xnet(work):
    """3x12x12 input (a colour image: the NHWC transpose), dilated and grouped dilated convs with
    asymmetric padding, maxpool and avgpool in ceil mode with and without count_include_pad, a
    standalone relu and batchnorm (the latter with a fused relu), mul of equal shapes, flattened
    tensors padded, sliced backwards and concatenated, an add with a fused relu, and a dead branch
    (computed by the engine, not needed for the logits). Random weights, random images."""
    import onnx2ccq
    rng = np.random.default_rng(11)
    W = lambda *s: (rng.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5).astype(np.float32)  # noqa: E731
    B = lambda n: (rng.standard_normal(n) * 0.1).astype(np.float32)  # noqa: E731

    def node(op, name, inputs, shape, data=None, **attrs):
        return {"op": op, "name": name, "inputs": inputs, "shape": shape, "attrs": attrs, "data": data or {}}
    h0, w0 = window_out(12, 3, 1, 2, 0, 2), window_out(12, 3, 1, 1, 2, 2)                    # 10 x 11
    h1, w1 = window_out(h0, 3, 2, 1, 1, 1, 1), window_out(w0, 3, 2, 1, 1, 1, 1)                # ceil mode
    h4, w4 = window_out(h1, 3, 2, 1, 1, 1, 1), window_out(w1, 3, 2, 1, 1, 1, 1)
    h5, w5 = window_out(h1, 3, 2, 1, 1), window_out(w1, 3, 2, 1, 1)
    h6, w6 = window_out(h4, 3, 1, 1, 1, 2), window_out(w4, 3, 1, 1, 1, 1)
    f9, f10 = 8 * h6 * w6, 8 * h5 * w5
    nodes = [
        node("conv2d", "dil", [-1], (8, h0, w0), {"weight": W(8, 3, 3, 3), "bias": B(8)},
             kernel=[3, 3], stride=[1, 1], pad=[2, 1, 0, 2], dilation=[2, 2]),                   # 0
        node("maxpool", "mp_ceil", [0], (8, h1, w1), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=1),  # 1
        node("relu", "relu_alone", [1], (8, h1, w1)),                                             # 2
        node("batchnorm", "bn_alone", [2], (8, h1, w1), {"gamma": 1 + B(8), "beta": B(8), "mean": B(8),
                                                         "var": 0.5 + np.abs(B(8))}, eps=np.float32(1e-5)),  # 3
        node("relu", "bn_relu", [3], (8, h1, w1)),                                                # 4 (fused into 3)
        node("avgpool", "ap_ceil", [4], (8, h4, w4), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=1,
             count_include_pad=0),                                                                # 5
        node("avgpool", "ap_cip", [4], (8, h5, w5), kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1], ceil_mode=0,
             count_include_pad=1),                                                                # 6
        node("conv2d", "gdil", [5], (8, h6, w6), {"weight": W(8, 2, 3, 3), "bias": B(8)},
             kernel=[3, 3], stride=[1, 1], pad=[1, 1, 1, 1], dilation=[2, 1], groups=4),         # 7
        node("act", "sig", [7], (8, h6, w6), fn="sigmoid"),                                       # 8
        node("mul", "silu", [7, 8], (8, h6, w6)),                                                 # 9
        node("act", "dead", [9], (8, h6, w6), fn="tanh"),                                         # 10: unused
        node("flatten", "f_a", [9], (f9,)),                                                       # 11
        node("flatten", "f_b", [6], (f10,)),                                                      # 12
        node("concat", "cat_f", [11, 12], (f9 + f10,), axis=0),                                   # 13
        node("pad", "pad_f", [13], (f9 + f10 + 8,), pads=[3, 5]),                                 # 14
        node("slice", "rev_f", [14], ((f9 + f10 + 8) // 2,), start=[f9 + f10 + 7], step=[-2]),   # 15
        node("linear", "fc1", [15], (16,), {"weight": W(16, (f9 + f10 + 8) // 2), "bias": B(16)}),  # 16
        node("add", "twice", [16, 16], (16,)),                                                    # 17
        node("relu", "add_relu", [17], (16,)),                                                    # 18 (fused into 17)
        node("linear", "fc2", [18], (5,), {"weight": W(5, 16), "bias": B(5)}),                    # 19
    ]
    model = os.path.join(work, "xnet.h5")
    onnx2ccq.write(model, "xnet", (3, 12, 12), np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32), nodes)
    import data2ccq
    data = os.path.join(work, "xdata.h5")
    x = lambda n: rng.integers(0, 256, (n, 3, 12, 12), dtype=np.uint8)  # noqa: E731
    y = lambda n: rng.integers(0, 5, n).astype(np.int32)  # noqa: E731
    data2ccq.write(data, {"train": (x(256), y(256)), "test": (x(1000), y(1000))}, 5, "random")
    return model, data


def errors(fx, data):
    USAGE, IO, FORMAT, LIMIT = 2, 3, 4, 6
    work = tempfile.mkdtemp(prefix="ccq_cexport_err_")
    lenet = os.path.join(HERE, "..", "results", "models", "lenet.h5")
    q = os.path.join(work, "q.h5")
    rc, so, se = run([ccq, "quantize", lenet, "--data", data, "--wbits", "2", "--calib", "16", "-o", q])
    t.check("quantize lenet w2", rc == 0, se)

    def listing():
        return {os.path.relpath(os.path.join(d, f), work): os.path.getmtime(os.path.join(d, f))
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

    out = os.path.join(work, "out")
    expect("no arguments", [], USAGE, ["missing MODEL.h5"])
    expect("missing --format", [q, out], USAGE, ["--format"])
    expect("--format tflite", [q, "--format", "tflite", out], USAGE, ["--format must be c or onnx", "'tflite'"])
    expect("--input with --format c", [q, "--format", "c", out, "--input", "float"], USAGE, ["--input is for --format onnx"])
    expect("missing OUT_DIR", [q, "--format", "c"], USAGE, ["missing OUT_DIR"])
    expect("unknown flag", [q, "--format", "c", out, "--fast"], USAGE, ["unknown flag '--fast'"])
    expect("extra argument", [q, "--format", "c", out, "more"], USAGE, ["unexpected argument 'more'"])
    for bad in ("1net", "my-net", "cq_net", "", "x" * 49, "na\u00efve"):
        expect(f"--name {bad!r}", [q, "--format", "c", out, "--name", bad], USAGE, ["--name"])
    expect("float model", [lenet, "--format", "c", out], USAGE, ["float model", "quantize it first"])
    expect("missing model", [os.path.join(work, "nope.h5"), "--format", "c", out], IO, ["nope.h5"])
    expect("not HDF5", [os.path.join(fx, "not_hdf5.h5"), "--format", "c", out], FORMAT, ["not an HDF5 file"])
    expect("truncated model", [os.path.join(fx, "truncated.h5"), "--format", "c", out], FORMAT, ["truncated"])
    expect("data file as model", [data, "--format", "c", out], FORMAT, ["not a ccq model file"])
    afile = os.path.join(work, "afile")
    open(afile, "w").write("x")
    expect("OUT_DIR is a file", [q, "--format", "c", afile], IO, ["afile", "not a directory"])
    expect("OUT_DIR's parent missing", [q, "--format", "c", os.path.join(work, "no", "out")], IO,
           ["cannot be created", "missing"])
    expect("OUT_DIR is the input", [q, "--format", "c", q], USAGE, ["is the input model"])
    # the default name of a model called net.h is net: net.h in its own folder would be overwritten
    alias = os.path.join(work, "alias")
    os.makedirs(alias)
    shutil.copy(q, os.path.join(alias, "net.h"))
    expect("an output would overwrite the input", [os.path.join(alias, "net.h"), "--format", "c", alias], USAGE,
           ["would overwrite the input model"])
    os.makedirs(os.path.join(work, "dirs", "x.c"))
    expect("an output path is a directory", [q, "--format", "c", os.path.join(work, "dirs"), "--name", "x"], IO,
           ["is a directory"])
    # a layer whose int32 accumulators could overflow: qnet_init's refusal, exit 6
    big = os.path.join(work, "big.h5")
    shutil.copy(q, big)
    with h5py.File(big, "r+") as f:
        last = f["nodes"][sorted(f["nodes"].keys())[-1]]
        last["bias"][0] = np.float32(1e12)
    expect("accumulators could overflow", [big, "--format", "c", out], LIMIT, ["overflow int32 accumulators"])
    # an existing output folder: a failed export leaves its files alone
    keep = os.path.join(work, "keep")
    os.makedirs(keep)
    open(os.path.join(keep, "net.c"), "w").write("old")
    expect("failure with old outputs in place", [lenet, "--format", "c", keep, "--name", "net"], USAGE, ["float"])
    t.check("old output untouched", open(os.path.join(keep, "net.c")).read() == "old")
    # success: a new folder, the default name from the file, no temporaries; replaces old files
    rc, so, se = run([ccq, "export", q, "--format", "c", out])
    t.check("export into a new folder", rc == 0 and se == "", se)
    t.check("default name from the file name", sorted(os.listdir(out)) == ["q.c", "q.h"], f"{os.listdir(out)}")
    t.check("the footprint is printed", all(s in so for s in ("flash:", "RAM:", "-DQ_FAST")), so)
    rc, so, se = run([ccq, "export", q, "--format", "c", keep, "--name", "net"])
    t.check("export over old files", rc == 0 and sorted(os.listdir(keep)) == ["net.c", "net.h"], se)
    t.check("old files replaced", "net_run" in open(os.path.join(keep, "net.c")).read())
    rc, so, se = run([ccq, "export", "--help"])
    t.check("export --help", rc == 0 and "--format c" in so and se == "", se)
    rc, so, se = run([ccq, "help"])
    t.check("ccq help lists export", rc == 0 and "export MODEL.h5 --format c" in so)
    shutil.rmtree(work)


if a.errors:
    errors(a.errors, a.data)
else:
    work = tempfile.mkdtemp(prefix=f"ccq_cexport_{label}_")
    try:
        for tl in ("gcc", "clang", "arm-linux-gnueabihf-gcc", "qemu-arm"):
            tool(tl)
        arm_fast = {int(b) for b in a.arm_fast_bits.split(",") if b}
        widths = [(4, False), (3, True)] if a.xnet else [(int(b), a.first_last_8) for b in a.bits.split(",")]
        arm = {w for w, _ in widths} if a.arm_bits is None else {int(b) for b in a.arm_bits.split(",") if b}
        model, data = a.model, a.data
        if a.xnet:
            sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
            model, data = make_xnet(work)
        for bits, fl8 in widths:
            quantized_case(work, model, data, bits, fl8, bits in arm, bits in arm_fast)
    finally:
        shutil.rmtree(work, ignore_errors=True)
print(f"{time.time() - T0:.1f} s")
t.finish()
