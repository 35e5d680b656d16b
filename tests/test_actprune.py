#!/usr/bin/env python3
"""test_actprune.py DATA.h5 LENET.h5: activation pruning (model.h act_thresh, `ccq prune-act`,
`ccq eval --act-zeros`).

On lenet at w4 (round-to-nearest):
  - prune-act writes the same model with thresholds on at least two nodes and nothing else
    changed (levels, scales, zero points), the same file twice for the same seed;
  - the integer engine with thresholds gives int32 logits identical to scripts/ccq_int.py (the
    numpy reference, which applies |q - zp| < t -> zp after each node), on every kernel ISA, and
    different from the model without them; --act-zeros counts, per node, exactly the levels at
    the zero point the reference counts;
  - the bound holds: on a data file whose train split is 1,000 images (the sample is then the
    whole split), the pruned model loses at most floor(P x 1000 / 100) correct predictions there
    against the unpruned one; with a bound of 0 it loses none; with --max-xent-rise 1 its
    cross-entropy there (float, from the logits) rises at most 1%; the greedy ascent (--rounds 4)
    starts from the default's answer, gains zeros and keeps the bound;
  - a search from the pruned file keeps the thresholds and is identical on 1 and 2 ranks;
  - bad thresholds in a file (out of range, on the logits, on a node without its own scale, in a
    float model) are exit 4, bad flags exit 2, one line, nothing written."""
import json
import os
import re
import shutil
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, h5_contents, run, search_ini

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
import ccq_int  # noqa: E402

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("actprune")
MPI2 = ["mpirun", "--oversubscribe", "-np", "2"]


def thresholds(path):
    with h5py.File(path, "r") as f:
        return {int(k): int(g.attrs.get("act_thresh", 0)) for k, g in f["nodes"].items()}


def contents(path):
    """Every dataset and attribute but act_thresh, for comparing two model files."""
    return h5_contents(path, skip_attrs=("act_thresh",))


def logits(q, n, env=None):
    lg = q + ".logits.h5"
    rc, so, se = run([ccq, "eval", q, "--data", data, "--limit", str(n), "--save-logits", lg],
                     env=dict(os.environ, **(env or {})))
    if rc:
        return None
    with h5py.File(lg, "r") as f:
        return f["logits_int"][...]


with tempfile.TemporaryDirectory() as work:
    P = lambda n: os.path.join(work, n)  # noqa: E731
    rc, so, se = run([ccq, "quantize", model, "--data", data, "--wbits", "4", "--calib", "256", "-o", P("q.h5")])
    t.check("quantize lenet w4", rc == 0, se)
    rc, so, se = run([ccq, "prune-act", P("q.h5"), "--data", data, "--images", "512", "--max-drop", "0.5",
                      "-o", P("p.h5")])
    t.check("prune-act", rc == 0 and "wrote" in so, se)
    print(so.strip())
    th = thresholds(P("p.h5"))
    t.check("thresholds on at least two nodes", sum(v > 0 for v in th.values()) >= 2, f"{th}")
    t.check("nothing but the thresholds changed", contents(P("p.h5")) == contents(P("q.h5")))
    rc, so2, se = run([ccq, "prune-act", P("q.h5"), "--data", data, "--images", "512", "--max-drop", "0.5",
                       "-o", P("p2.h5")])
    t.check("the same thresholds and report again", rc == 0 and thresholds(P("p2.h5")) == th
            and so2.replace("p2.h5", "p.h5").split("joint evaluations")[0] == so.split("joint evaluations")[0], se)
    # prune-act replaces thresholds already there: from the pruned file, the same answer
    rc, so, se = run([ccq, "prune-act", P("p.h5"), "--data", data, "--images", "512", "--max-drop", "0.5",
                      "-o", P("p3.h5")])
    t.check("thresholds in the input are replaced, not added to", rc == 0 and thresholds(P("p3.h5")) == th, se)

    # exact: the engine against the numpy reference, every ISA
    N = 300
    ref = ccq_int.run(ccq_int.load(P("p.h5")), h5py.File(data, "r")["test/images"][:N])
    for isa in ("scalar", "avx2", "avx512vnni"):
        got = logits(P("p.h5"), N, {"CCQ_ISA": isa})
        t.check(f"{isa}: pruned logits identical to ccq_int.py", got is not None and np.array_equal(got, ref))
    plain = logits(P("q.h5"), N)
    t.check("the thresholds change the logits", plain is not None and not np.array_equal(plain, ref))
    rc, so, se = run([ccq, "eval", P("p.h5"), "--data", data, "--limit", str(N), "--json", "--act-zeros"])
    js = json.loads(so) if rc == 0 else {}
    net = ccq_int.load(P("p.h5"))
    _, acts = ccq_int.run(net, h5py.File(data, "r")["test/images"][:N], keep=True)
    want = {i: int((acts[i] == nd["act_zp"]).sum()) for i, nd in enumerate(net["nodes"])}
    nodes = js.get("act_nodes", [])
    t.check("--act-zeros: every node with its own scale listed with its threshold",
            len(nodes) >= 3 and all(n["thresh"] == th[n["node"]] for n in nodes), f"{nodes}")
    t.check("--act-zeros: zeros per node exactly the reference's",
            nodes and all(n["zeros"] == want[n["node"]] for n in nodes),
            f"{[(n['node'], n['zeros'], want[n['node']]) for n in nodes]}")
    tot = sum(n["zeros"] for n in nodes) / max(1, sum(n["levels"] for n in nodes))
    t.check("--act-zeros: the total is the nodes' sum", abs(js.get("act_zero_fraction", -1) - tot) < 1e-6)

    # the bound, checked outside ccq: a data file whose train split is 1,000 images
    small = P("small.h5")
    with h5py.File(data, "r") as f, h5py.File(small, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        for split, n in (("train", 1000), ("test", 100)):
            grp = g.create_group(split)
            for k, v in f[split].attrs.items():
                grp.attrs[k] = v
            for ds in f[split]:
                grp[ds] = f[split][ds][:n]

    def train_correct(q):
        rc, so, se = run([ccq, "eval", q, "--data", small, "--split", "train", "--json"])
        return json.loads(so)["correct"] if rc == 0 else None

    c0 = train_correct(P("q.h5"))
    for drop, allowed in (("1", 10), ("0", 0), ("2.5", 25)):
        out = P(f"b{drop}.h5")
        rc, so, se = run([ccq, "prune-act", P("q.h5"), "--data", small, "--images", "5000", "--max-drop", drop,
                          "-o", out])
        c = train_correct(out) if rc == 0 else None
        n_th = sum(v > 0 for v in thresholds(out).values()) if rc == 0 else 0
        t.check(f"--max-drop {drop}: at most {allowed} fewer correct on the whole sample",
                c is not None and c0 is not None and c0 - c <= allowed and f"at most {allowed} fewer" in so,
                f"rc {rc} {se} {c0} -> {c}")
        if drop != "0":
            t.check(f"--max-drop {drop}: thresholds set", n_th >= 1, f"{thresholds(out)}")
    def train_xent(q):
        lg = q + ".train.h5"
        rc, so, se = run([ccq, "eval", q, "--data", small, "--split", "train", "--save-logits", lg])
        if rc:
            return None
        with h5py.File(lg, "r") as f, h5py.File(small, "r") as d:
            z = f["logits"][...].astype(np.float64)
            y = d["train/labels"][...]
        z -= z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))

    x0 = train_xent(P("q.h5"))
    rc, so, se = run([ccq, "prune-act", P("q.h5"), "--data", small, "--images", "5000", "--max-drop", "2.5",
                      "--max-xent-rise", "1", "-o", P("x1.h5")])
    x1 = train_xent(P("x1.h5")) if rc == 0 else None
    t.check("--max-xent-rise 1: the sample's cross-entropy (float, from the logits) rises at most 1%",
            x1 is not None and x1 <= x0 * 1.01 + 1e-4 and "1.00% more cross-entropy" in so, f"{x0} -> {x1}: {se}")
    zr = lambda s: [float(x) for x in re.findall(r"([0-9.]+)%", s.split("prune-act: zeros ")[1].split(";")[0])]
    rc, so, se = run([ccq, "prune-act", P("q.h5"), "--data", small, "--images", "5000", "--max-drop", "2.5",
                      "-o", P("r0.h5")])
    t.check("by default the result is the one-tolerance answer", rc == 0 and zr(so)[1] == zr(so)[2], so[-300:])
    rc, so4, se = run([ccq, "prune-act", P("q.h5"), "--data", small, "--images", "5000", "--max-drop", "2.5",
                       "--rounds", "4", "-o", P("r4.h5")])
    c4 = train_correct(P("r4.h5")) if rc == 0 else None
    t.check("--rounds 4: the ascent starts from the same answer, gains zeros and keeps the bound",
            rc == 0 and zr(so4)[1] == zr(so)[1] and zr(so4)[2] >= zr(so4)[1] and c0 - c4 <= 25, so4[-300:])

    # a search from the pruned model keeps the thresholds; 1 and 2 ranks identical
    res = {}
    for np_ in (1, 2):
        d = P(f"s{np_}")
        cfg = search_ini(d, P("p.h5"), data, run={"budget": 120}, search={"group": "layer_confidence"})
        cmd = ([ccq] if np_ == 1 else MPI2 + [ccq]) + ["search", cfg]
        rc, so, se = run(cmd)
        t.check(f"search from the pruned file on {np_} rank(s)", rc == 0, se[-600:])
        if rc == 0:
            res[np_] = tuple(open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5"))
            t.check(f"{np_} rank(s): the result keeps the thresholds", thresholds(os.path.join(d, "out.h5")) == th)
    t.check("search from the pruned file: 1 and 2 ranks identical", len(res) == 2 and res[1] == res[2])

    # bad thresholds in a file: exit 4, one line naming the file and act_thresh
    with h5py.File(P("q.h5"), "r") as f:
        out_node = int(f.attrs["output"])
        pool = next(int(k) for k, g in f["nodes"].items() if g.attrs["op"] in (b"maxpool", "maxpool", b"flatten", "flatten"))
        conv = next(int(k) for k, g in f["nodes"].items() if "levels" in g)
    for label, node, val, float_model, msg in (
            ("act_thresh 256", conv, 256, False, "act_thresh"),
            ("act_thresh -1", conv, -1, False, "act_thresh"),
            ("act_thresh on the logits", out_node, 3, False, "no act_thresh"),
            ("act_thresh on a node without its own scale", pool, 3, False, "keeps its input's scale"),
            ("act_thresh in a float model", 0, 3, True, "float model")):
        bad = P("bad.h5")
        shutil.copy(model if float_model else P("q.h5"), bad)
        with h5py.File(bad, "r+") as f:
            f["nodes"][f"{node:04d}"].attrs["act_thresh"] = np.int64(val)
        t.refusal(label)
        cmd = [ccq, "inspect", bad] if float_model else [ccq, "eval", bad, "--data", data, "--limit", "10"]
        rc, so, se = run(cmd)
        t.check(f"refused: {label}", rc == 4 and msg in se and "bad.h5" in se and len(se.strip().splitlines()) == 1,
                f"rc {rc}: {se!r}")
    # bad flags: exit 2 (3 for a missing file), one line, no output
    o = P("none.h5")
    for label, args, code, msg in (
            ("missing -o", [P("q.h5"), "--data", data], 2, "missing -o"),
            ("missing --data", [P("q.h5"), "-o", o], 2, "missing --data"),
            ("--max-drop three decimals", [P("q.h5"), "--data", data, "-o", o, "--max-drop", "0.125"], 2, "--max-drop"),
            ("--max-drop above 100", [P("q.h5"), "--data", data, "-o", o, "--max-drop", "101"], 2, "--max-drop"),
            ("--max-drop not a number", [P("q.h5"), "--data", data, "-o", o, "--max-drop", "x"], 2, "--max-drop"),
            ("--max-drop negative", [P("q.h5"), "--data", data, "-o", o, "--max-drop", "-1"], 2, "--max-drop"),
            ("--max-xent-rise not a number", [P("q.h5"), "--data", data, "-o", o, "--max-xent-rise", "lots"], 2,
             "--max-xent-rise"),
            ("--images 0", [P("q.h5"), "--data", data, "-o", o, "--images", "0"], 2, "--images"),
            ("--rounds -1", [P("q.h5"), "--data", data, "-o", o, "--rounds", "-1"], 2, "--rounds"),
            ("unknown flag", [P("q.h5"), "--data", data, "-o", o, "--bogus", "1"], 2, "unknown option"),
            ("a float model", [model, "--data", data, "-o", o], 2, "float model"),
            ("-o is the input", [P("q.h5"), "--data", data, "-o", P("q.h5")], 2, "q.h5"),
            ("a missing model", [P("nope.h5"), "--data", data, "-o", o], 3, "nope.h5")):
        t.refusal("prune-act " + label)
        rc, so, se = run([ccq, "prune-act", *args])
        t.check(f"prune-act refused: {label}", rc == code and msg in se and len(se.strip().splitlines()) == 1
                and not os.path.exists(o), f"rc {rc}: {se!r}")
    t.refusal("eval --act-zeros --float")
    rc, so, se = run([ccq, "eval", model, "--data", data, "--float", "--act-zeros"])
    t.check("eval --act-zeros --float refused", rc == 2 and "--act-zeros" in se, f"rc {rc}: {se!r}")
t.finish()
