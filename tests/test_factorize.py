#!/usr/bin/env python3
"""test_factorize.py DATA.h5 LENET.h5 OPSNET.h5: `ccq factorize` (factorize.h, cpd.h).

  - the rewrite is exact: at full rank (--rank full --float) a network of convs with non-square
    kernels, a stride, padding or dilation on one axis only, a strided 1x1 conv and a linear layer
    gives the float logits of the original within 1e-4 of their largest magnitude (and lenet too);
    each axis's stride, padding and dilation sit on its own depthwise conv (or on the other one, or
    on the first 1x1, when that axis's kernel is 1), checked node by node;
  - lenet at ratio 0.25, w4 (ADMM, the default): every factor node's levels within +-7 and its
    float weights levels x scale to float32 rounding (the grid the engine runs); every layer's ADMM error at or
    below CP-ALS + RTN's (the printed table), which is also what --method als reports as its grid
    error; the integer model above 85% test accuracy and ADMM above CP-ALS + RTN; the same file twice;
  - the C export of the factorized model gives ccq eval's int32 logits bit for bit (gcc, 300 images);
  - a search of the factorized model is bit-identical on 1 and 2 ranks and accepts changes;
  - --layers NAME=R gives that layer its own rank, the others the ratio's;
  - refusals (exit 2 unless said, one line, nothing written): --rank 0, --rank with --ratio, a ratio
    out of range, an unknown layer, a layer's rank of 0 or not a number, a rank above the exact
    decomposition's (conv2: 400), the logits layer, a non-weighted node, a grouped conv, a quantized
    model, --method with --rank full, an unknown method, --wbits 9, a bad --ridge, no --data, no -o,
    -o equal to the model, a missing model (exit 3), a truncated model (exit 4), layer names over 110
    characters that meet once cut to fit (exit 6)."""
import os
import re
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run, search_ini

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import onnx2ccq  # noqa: E402

data, lenet, opsnet = sys.argv[1], sys.argv[2], sys.argv[3]
ccq = ccq_binary()
t = Checks("factorize")
MPI2 = ["mpirun", "--oversubscribe", "-np", "2"]


def conv(name, src, shape, cin, k, stride, pad, dil=(1, 1), bias=True, seed=0):
    r = np.random.RandomState(seed)
    w = (r.randn(shape[0], cin, k[0], k[1]) * np.sqrt(2.0 / (cin * k[0] * k[1]))).astype(np.float32)
    d = {"weight": w}
    if bias:
        d["bias"] = (r.randn(shape[0]) * 0.1).astype(np.float32)
    return {"op": "conv2d", "name": name, "inputs": [src], "shape": shape,
            "attrs": {"kernel": list(k), "stride": list(stride), "pad": list(pad), "dilation": list(dil)}, "data": d}


def linear(name, src, n_out, n_in, seed):
    r = np.random.RandomState(seed)
    return {"op": "linear", "name": name, "inputs": [src], "shape": (n_out,), "attrs": {},
            "data": {"weight": (r.randn(n_out, n_in) * np.sqrt(2.0 / n_in)).astype(np.float32),
                     "bias": (r.randn(n_out) * 0.1).astype(np.float32)}}


def relu(name, src, shape):
    return {"op": "relu", "name": name, "inputs": [src], "shape": shape, "attrs": {}, "data": {}}


# pad: top, left, bottom, right
nodes = [
    conv("c1", -1, (6, 28, 28), 1, (3, 3), (1, 1), (1, 1, 1, 1), seed=1),           # 0
    relu("r1", 0, (6, 28, 28)),                                                       # 1
    conv("ca", 1, (8, 14, 28), 6, (3, 5), (2, 1), (1, 2, 0, 2), seed=2),             # 2 stride on H only
    relu("r2", 2, (8, 14, 28)),                                                       # 3
    conv("cb", 3, (10, 12, 15), 8, (3, 1), (1, 2), (1, 1, 1, 0), (2, 1), seed=3),    # 4 kw = 1, W stride + pad
    conv("cc", 4, (12, 6, 8), 10, (1, 1), (2, 2), (0, 0, 0, 0), bias=False, seed=4),  # 5 strided 1x1
    conv("cd", 5, (8, 3, 8), 12, (1, 3), (2, 1), (0, 2, 0, 2), (1, 2), seed=5),      # 6 kh = 1, H stride
    {"op": "flatten", "name": "flat", "inputs": [6], "shape": (192,), "attrs": {}, "data": {}},  # 7
    linear("fc1", 7, 20, 192, 6),                                                     # 8
    relu("r3", 8, (20,)),                                                             # 9
    linear("fc2", 9, 10, 20, 7),                                                      # 10
]


def logits(path, out):
    rc, so, se = run([ccq, "eval", path, "--data", data, "--float", "--limit", "200", "--save-logits", out])
    t.check(f"eval --float {os.path.basename(path)}", rc == 0, se)
    with h5py.File(out) as f:
        return f["logits"][...]


def node_attrs(path):
    with h5py.File(path) as f:
        g = f["nodes"]
        return {g[k].attrs["name"].decode(): (dict(g[k].attrs), {d: g[k][d][...] for d in g[k]}) for k in sorted(g)}


with tempfile.TemporaryDirectory() as root:
    P = lambda n: os.path.join(root, n)  # noqa: E731
    cpnet = P("cpnet.h5")
    onnx2ccq.write(cpnet, "cpnet", (1, 28, 28), np.array([0.286], np.float32), np.array([0.353], np.float32), nodes)

    # ---- exact at full rank
    for name, src in (("cpnet", cpnet), ("lenet", lenet)):
        rc, so, se = run([ccq, "factorize", src, "--rank", "full", "--float", "-o", P(f"{name}_full.h5")])
        t.check(f"{name}: --rank full --float runs", rc == 0, se)
        a, b = logits(src, P(f"{name}_a.h5")), logits(P(f"{name}_full.h5"), P(f"{name}_b.h5"))
        err = float(np.abs(a - b).max() / np.abs(a).max())
        t.check(f"{name}: full rank reproduces the float logits within 1e-4 (got {err:.2e})", err < 1e-4)
    nd = node_attrs(P("cpnet_full.h5"))
    t.check("cpnet: the default layers are every conv and linear but the first and the logits",
            sorted(n for n in nd if n.endswith("/cp_out")) == ["ca/cp_out", "cb/cp_out", "cc/cp_out", "cd/cp_out",
                                                               "fc1/cp_out"] and "c1" in nd and "fc2" in nd, str(nd.keys()))

    def geo(n):
        a = nd[n][0]
        return [list(a["kernel"]), list(a["stride"]), list(a["pad"]), list(a["dilation"]), int(a.get("groups", 1)),
                int(a["shape"][0])]
    # ca: 6 -> 8, 3x5, stride (2, 1), pad (1, 2, 0, 2); full rank: the larger of Cout/Cin dense -> R = 6*3*5
    want = {
        "ca/cp_in": [[1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1, 90],
        "ca/cp_h": [[3, 1], [2, 1], [1, 0, 0, 0], [1, 1], 90, 90],
        "ca/cp_w": [[1, 5], [1, 1], [0, 2, 0, 2], [1, 1], 90, 90],
        "ca/cp_out": [[1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1, 8],
        # cb: kw = 1: the W stride and padding on the kh x 1 conv, with the H dilation; R = 10*3 (Cout dense)
        "cb/cp_in": [[1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1, 24],
        "cb/cp_h": [[3, 1], [1, 2], [1, 1, 1, 0], [2, 1], 24, 24],
        # cc: 1x1: the stride on the first 1x1
        "cc/cp_in": [[1, 1], [2, 2], [0, 0, 0, 0], [1, 1], 1, 10],
        # cd: kh = 1: the H stride on the 1 x kw conv, with the W dilation; R = 8*3 (Cin dense)
        "cd/cp_w": [[1, 3], [2, 1], [0, 2, 0, 2], [1, 2], 24, 24],
    }
    for n, g in want.items():
        t.check(f"cpnet: {n} carries kernel, stride, pad, dilation, groups, channels {g}", n in nd and geo(n) == g,
                str(geo(n)) if n in nd else "missing")
    t.check("cpnet: no cb/cp_w, no cd/cp_h, no cc depthwise", not any(n in nd for n in ("cb/cp_w", "cd/cp_h", "cc/cp_h",
                                                                                      "cc/cp_w")))
    t.check("cpnet: the bias on cp_out only", "bias" in nd["ca/cp_out"][1] and "bias" not in nd["ca/cp_in"][1]
            and "bias" not in nd["cc/cp_out"][1])

    # ---- quantized, ADMM against CP-ALS + RTN
    def table(out):
        return {m.group(1): [float(x) for x in m.group(2, 3, 4)] for m in
                re.finditer(r"^(\S+)\s+\d+\s+\d+\s+\d+\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out, re.M)}

    runs = {}
    for method in ("admm", "als"):
        rc, so, se = run([ccq, "factorize", lenet, "--data", data, "--ratio", "0.25", "--wbits", "4", "--calib", "256",
                          "--method", method, "--refit", "0", "-o", P(f"l_{method}.h5")])
        t.check(f"lenet {method}: runs", rc == 0, se)
        runs[method] = table(so)
    t.check("lenet: two layers reported", sorted(runs["admm"]) == ["/conv2/Conv", "/fc1/Gemm"], str(runs))
    for n, (ef, ertn, egrid) in runs["admm"].items():
        t.check(f"{n}: ADMM's error ({egrid}) at or below CP-ALS + RTN's ({ertn})", egrid <= ertn)
        t.check(f"{n}: --method als's grid error is ADMM's start", runs["als"][n][2] == ertn and runs["als"][n][1] == ertn)
        t.check(f"{n}: the grid costs error ({egrid} >= {ef})", egrid >= ef)
    fac = {n: v for n, v in node_attrs(P("l_admm.h5")).items() if "/cp_" in n}
    t.check("lenet: conv2 as four factor layers, fc1 as two", len(fac) == 6, str(fac.keys()))
    for n, (at, ds) in fac.items():
        lv, w, s = ds["levels"].astype(np.int64), ds["weight"], ds["wscale"]
        per = lv.reshape(lv.shape[0], -1)
        t.check(f"{n}: 4-bit levels within +-7", at["bits"] == 4 and np.abs(lv).max() <= 7)
        # the float weights are the fit's grid values, levels x scale in double rounded to float32
        dev = np.abs(w.reshape(per.shape).astype(np.float64) - per * s[:, None].astype(np.float64))
        t.check(f"{n}: weights are levels x scale", np.all(dev <= 1e-6 * s[:, None] * 7), f"{dev.max()}")
    rc, so, se = run([ccq, "factorize", lenet, "--data", data, "--ratio", "0.25", "--wbits", "4", "--calib", "256",
                      "--refit", "0", "-o", P("l_admm2.h5")])
    t.check("the same file twice", rc == 0 and open(P("l_admm.h5"), "rb").read() == open(P("l_admm2.h5"), "rb").read())
    acc = {}
    for method in ("admm", "als"):
        rc, so, se = run([ccq, "eval", P(f"l_{method}.h5"), "--data", data])
        acc[method] = float(re.search(r"accuracy\s+([0-9.]+)%", so).group(1)) if rc == 0 else 0.0
    t.check(f"lenet ratio 0.25 w4: ADMM {acc['admm']}% above 85% and above CP-ALS + RTN {acc['als']}%",
            acc["admm"] > 85.0 and acc["admm"] > acc["als"])

    # ---- the data-aware refit of the last factors (the default, on 256 of the calibration images)
    def refit_table(out):
        return {m.group(1): (float(m.group(2)), float(m.group(3)), int(m.group(4)), int(m.group(5))) for m in
                re.finditer(r"^(\S+)\s+([0-9.]+)\s+([0-9.]+)\s+(\d+)/(\d+)\s*$", out, re.M)}

    rfit = {}
    for method in ("admm", "als"):
        rc, so, se = run([ccq, "factorize", lenet, "--data", data, "--ratio", "0.25", "--wbits", "4", "--calib", "256",
                          "--method", method, "-o", P(f"l_{method}_refit.h5")])
        t.check(f"lenet {method} + refit: runs", rc == 0, se)
        rt = refit_table(so)
        t.check(f"{method} + refit: both layers reported", sorted(rt) == ["/conv2/Conv", "/fc1/Gemm"], so)
        for n, (eb, ea, nref, nch) in rt.items():
            t.check(f"{method} {n}: the refit's output error {ea} at or below the fit's {eb}", ea <= eb)
            t.check(f"{method} {n}: refitted channels counted ({nref}/{nch})", 0 <= nref <= nch and nch > 0)
        t.check(f"{method}: the refit lowers the output error of some layer by a tenth",
                any(ea < 0.9 * eb for eb, ea, _, _ in rt.values()), str(rt))
        rc, so, se = run([ccq, "eval", P(f"l_{method}_refit.h5"), "--data", data])
        rfit[method] = float(re.search(r"accuracy\s+([0-9.]+)%", so).group(1)) if rc == 0 else 0.0
        t.check(f"lenet ratio 0.25 w4, {method}: the refit ({rfit[method]}%) is more accurate than the fit alone "
                f"({acc[method]}%)", rfit[method] > acc[method])
    lv0 = {n: ds["levels"] for n, (at, ds) in node_attrs(P("l_admm.h5")).items() if "/cp_" in n}
    fac = {n: v for n, v in node_attrs(P("l_admm_refit.h5")).items() if "/cp_" in n}
    for n, (at, ds) in fac.items():
        lv, w, s = ds["levels"].astype(np.int64), ds["weight"], ds["wscale"]
        per = lv.reshape(lv.shape[0], -1)
        last = n.endswith("/cp_out")
        t.check(f"refit {n}: 4-bit levels within +-7", at["bits"] == 4 and np.abs(lv).max() <= 7)
        dev = np.abs(w.reshape(per.shape).astype(np.float64) - per * s[:, None].astype(np.float64))
        t.check(f"refit {n}: weights are levels x scale", np.all(dev <= 1e-6 * s[:, None] * 7), f"{dev.max()}")
        t.check(f"refit {n}: " + ("the last factor refitted" if last else "an earlier factor kept"),
                (not np.array_equal(ds["levels"], lv0[n])) if last else np.array_equal(ds["levels"], lv0[n]))
    rc, so, se = run([ccq, "factorize", lenet, "--data", data, "--ratio", "0.25", "--wbits", "4", "--calib", "256",
                      "-o", P("l_admm_refit2.h5")])
    t.check("refit: the same file twice", rc == 0 and open(P("l_admm_refit.h5"), "rb").read()
            == open(P("l_admm_refit2.h5"), "rb").read())

    # ---- a rank per layer (NAME=R) beside the ratio's
    rc, so, se = run([ccq, "factorize", lenet, "--data", data, "--ratio", "0.25", "--calib", "64", "--layers",
                      "/conv2/Conv=7,/fc1/Gemm", "-o", P("l_ranks.h5")])
    ranks = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(/\S+)\s+(\d+)\s", so, re.M)}
    t.check("--layers NAME=R: that rank for that layer, the ratio's for the other",
            rc == 0 and ranks == {"/conv2/Conv": 7, "/fc1/Gemm": 23}, f"{ranks} {se}")

    # ---- what ships is what was searched: the C export of the factorized model, bit for bit
    rc, so, se = run([ccq, "eval", P("l_admm_refit.h5"), "--data", data, "--limit", "300", "--save-logits", P("ql.h5")])
    rc2, so2, se2 = run([ccq, "export", P("l_admm_refit.h5"), "--format", "c", P("cexp"), "--name", "net"])
    exe = P("cexp/driver")
    rc3, so3, se3 = run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-I", P("cexp"),
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "cexport_driver.c"),
                         P("cexp/net.c"), "-o", exe])
    t.check("C export of the factorized model builds without a warning", rc == 0 and rc2 == 0 and rc3 == 0,
            se + se2 + se3)
    if rc == 0 and rc3 == 0:
        with h5py.File(data) as f:
            f["test/images"][:300].tofile(P("img.bin"))
        rc4, so4, se4 = run([exe, P("img.bin"), P("logits.bin"), "300"])
        with h5py.File(P("ql.h5")) as f:
            want = f["logits_int"][...]
        got = np.fromfile(P("logits.bin"), dtype="<i4").reshape(want.shape) if rc4 == 0 else None
        t.check("C export: int32 logits identical to ccq eval's on 300 images", got is not None
                and np.array_equal(got, want), se4)

    # ---- the search refines the factor levels, identically on 1 and 2 ranks
    outs = {}
    for np_ in (1, 2):
        d = P(f"s{np_}")
        cfg = search_ini(d, P("l_admm_refit.h5"), data, run={"budget": 300}, search={"group": "layer_confidence"})
        rc, so, se = run(([ccq] if np_ == 1 else MPI2 + [ccq]) + ["search", cfg])
        t.check(f"search of the factorized model on {np_} ranks runs", rc == 0, se[-1500:])
        outs[np_] = {n: open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl")}
    t.check("search: bit-identical model and log on 1 and 2 ranks", outs[1] == outs[2])
    last = outs[1]["log.jsonl"].decode().strip().splitlines()[-1]
    t.check("search: changes accepted", '"accepted_total": 0' not in last and "accepted_total" in last, last)

    # ---- refusals
    with open(lenet, "rb") as f:
        raw = f.read()
    with open(P("trunc.h5"), "wb") as f:
        f.write(raw[: len(raw) // 3])
    rc, so, se = run([ccq, "quantize", lenet, "--data", data, "--wbits", "4", "--calib", "64", "-o", P("q.h5")])
    base = [lenet, "--data", data]
    bad = [
        ("--rank 0", base + ["--rank", "0"], 2, "--rank"),
        ("--rank and --ratio", base + ["--rank", "4", "--ratio", "0.5"], 2, "exclude"),
        ("ratio out of range", base + ["--ratio", "0"], 2, "--ratio"),
        ("unknown layer", base + ["--layers", "/conv2/Conv,/nope"], 2, "'/nope'"),
        ("a layer's rank 0", base + ["--layers", "/conv2/Conv=0"], 2, "'/conv2/Conv=0'"),
        ("a rank above the exact one", base + ["--rank", "401"], 2, "exact decomposition's rank 400"),
        ("a layer's rank not a number", base + ["--layers", "/conv2/Conv=x"], 2, "rank after '='"),
        ("the logits layer", base + ["--layers", "/fc2/Gemm"], 2, "logits"),
        ("a node without weights", base + ["--layers", "/MaxPool"], 2, "not a conv2d or linear"),
        ("a grouped conv", [opsnet, "--data", data, "--layers", "dw"], 2, "grouped"),
        ("a quantized model", [P("q.h5"), "--data", data], 2, "quantized"),
        ("--method with --rank full", base + ["--rank", "full", "--method", "als"], 2, "--rank full"),
        ("unknown method", base + ["--method", "svd"], 2, "--method"),
        ("--wbits 9", base + ["--wbits", "9"], 2, "--wbits"),
        ("bad --ridge", base + ["--ridge", "2"], 2, "--ridge"),
        ("bad --refit", base + ["--refit", "-1"], 2, "--refit"),
        ("--refit not a number", base + ["--refit", "x"], 2, "--refit"),
        ("--refit with --float", [lenet, "--float", "--refit", "16"], 2, "--float"),
        ("--refit with --rank full", base + ["--rank", "full", "--refit", "16"], 2, "--rank full"),
        ("no --data", [lenet], 2, "--data"),
        ("no -o", base, 2, "-o"),
        ("missing model", [P("none.h5"), "--data", data], 3, "none.h5"),
        ("truncated model", [P("trunc.h5"), "--data", data], 4, "trunc.h5"),
    ]
    for label, args, code, needle in bad:
        t.refusal(label)
        out = P("bad_out.h5")
        argv = [ccq, "factorize", *args] + ([] if label == "no -o" else ["-o", out])
        rc, so, se = run(argv)
        lines = se.strip().splitlines()
        t.check(f"{label}: exit {code}, one line naming '{needle}'", rc == code and len(lines) == 1 and needle in se,
                f"rc={rc} {se!r}")
        t.check(f"{label}: nothing written", not os.path.exists(out))
    # names cut to fit that would meet: refused, not confused
    import copy
    long_nodes = copy.deepcopy(nodes)
    long_nodes[2]["name"], long_nodes[4]["name"] = "x" * 115 + "a", "x" * 115 + "b"
    longnet = P("longnet.h5")
    onnx2ccq.write(longnet, "longnet", (1, 28, 28), np.array([0.286], np.float32), np.array([0.353], np.float32),
                   long_nodes)
    t.refusal("factor names that would collide")
    rc, so, se = run([ccq, "factorize", longnet, "--rank", "2", "--float", "-o", P("long_out.h5")])
    t.check("names over 110 characters that meet when cut: exit 6, one line", rc == 6 and "not unique" in se
            and len(se.strip().splitlines()) == 1 and not os.path.exists(P("long_out.h5")), f"rc={rc} {se!r}")
    t.refusal("-o is the model")
    rc, so, se = run([ccq, "factorize", P("l_admm.h5"), "--data", data, "-o", P("l_admm.h5")])
    t.check("-o equal to the model: exit 2, one line", rc == 2 and len(se.strip().splitlines()) == 1, se)
t.finish()
