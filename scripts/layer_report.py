"""layer_report.py START.h5 RESULT.h5 DATA.h5 [--ccq BIN] [--md OUT.md]: what a search changed,
layer by layer, between two quantized ccq model files of the same network (the start, e.g. the
generation-0 snapshot `model.g000000.h5` of a search with run.snapshots, and the model it kept).

For every weighted layer: its kind (depthwise when groups = input channels, grouped, dense conv,
linear), weights, the levels the search moved (count and share), and the layer's relative weight
error ||W - s q|| / ||W|| against the float weights the file keeps, at the start and after. Then
by kind: the share of all moved levels, and the test accuracy (ccq eval) of the start with only
that kind's searched levels put in: where the search's gain comes from.

Writes a markdown section to stdout (or --md). Reads the files only; the swapped models are
temporary files that are removed."""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np


def layers(path):
    out = []
    with h5py.File(path, "r") as f:
        if not f.attrs.get("quantized", 0):
            sys.exit(f"layer_report.py: {path}: not a quantized ccq model")
        shapes = {}
        keys = sorted(f["nodes"].keys())
        for k in keys:
            g = f["nodes"][k]
            shapes[int(k)] = [int(v) for v in g.attrs["shape"]] if "shape" in g.attrs else None
        in_shape = [int(v) for v in f["input"].attrs["shape"]]
        for k in keys:
            g = f["nodes"][k]
            if "levels" not in g:
                continue
            op = g.attrs["op"].decode() if isinstance(g.attrs["op"], bytes) else str(g.attrs["op"])
            name = g.attrs["name"].decode() if isinstance(g.attrs["name"], bytes) else str(g.attrs["name"])
            groups = int(g.attrs.get("groups", 1))
            src = int(g.attrs["inputs"][0])
            cin = (in_shape if src < 0 else shapes[src])[0]
            kind = "linear" if op == "linear" else ("depthwise" if groups > 1 and groups == cin else
                                                  "grouped" if groups > 1 else
                                                  "pointwise" if g["levels"].shape[2:] == (1, 1) else "dense conv")
            out.append({"key": k, "name": name, "kind": kind, "levels": g["levels"][...].astype(np.int32),
                        "wscale": g["wscale"][...].astype(np.float64),
                        "weight": g["weight"][...].astype(np.float64) if "weight" in g else None,
                        "bits": int(g.attrs["bits"])})
    return out


def werr(l):
    if l["weight"] is None:
        return float("nan")
    s = l["wscale"].reshape(-1, *([1] * (l["levels"].ndim - 1)))
    return float(np.linalg.norm(l["weight"] - s * l["levels"]) / max(np.linalg.norm(l["weight"]), 1e-30))


def accuracy(ccq, model, data):
    r = subprocess.run([ccq, "eval", model, "--data", data], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"layer_report.py: ccq eval {model}: {r.stderr.strip()}")
    return float(re.search(r"^accuracy\s+([0-9.]+)%", r.stdout, re.M).group(1))


def swapped(start, result, keys, tmpdir, tag):
    """A copy of START with the levels of the nodes in keys taken from RESULT."""
    p = os.path.join(tmpdir, f"swap_{tag}.h5")
    with open(start, "rb") as a, open(p, "wb") as b:
        b.write(a.read())
    with h5py.File(p, "r+") as f, h5py.File(result, "r") as r:
        for k in keys:
            f["nodes"][k]["levels"][...] = r["nodes"][k]["levels"][...]
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("start")
    ap.add_argument("result")
    ap.add_argument("data")
    ap.add_argument("--ccq", default="build/ccq")
    ap.add_argument("--md")
    a = ap.parse_args()
    s, r = layers(a.start), layers(a.result)
    if [l["key"] for l in s] != [l["key"] for l in r] or any(x["levels"].shape != y["levels"].shape
                                                          for x, y in zip(s, r)):
        sys.exit("layer_report.py: START and RESULT are not the same network")
    for x, y in zip(s, r):
        if not np.array_equal(x["wscale"], y["wscale"]):
            sys.exit(f"layer_report.py: {x['name']}: the scales differ; this report compares levels only")
    rows = ["| layer | kind | bits | weights | levels moved | share | weight error start -> searched |",
            "|---|---|---|---|---|---|---|"]
    kinds = {}
    total_moved = 0
    for x, y in zip(s, r):
        n = x["levels"].size
        moved = int(np.count_nonzero(x["levels"] != y["levels"]))
        total_moved += moved
        kd = kinds.setdefault(x["kind"], {"weights": 0, "moved": 0, "keys": [], "layers": 0})
        kd["weights"] += n
        kd["moved"] += moved
        kd["keys"].append(x["key"])
        kd["layers"] += 1
        rows.append(f"| {x['name']} | {x['kind']} | {x['bits']} | {n:,} | {moved:,} | {100.0 * moved / n:.2f}% | "
                    f"{werr(x):.4f} -> {werr(y):.4f} |")
    acc_start, acc_result = accuracy(a.ccq, a.start, a.data), accuracy(a.ccq, a.result, a.data)
    krows = ["| kind | layers | weights | levels moved (share of the kind) | share of all moves | "
             "test accuracy: start + this kind's searched levels only |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as td:
        for kind, kd in kinds.items():
            acc = accuracy(a.ccq, swapped(a.start, a.result, kd["keys"], td, kind), a.data)
            krows.append(f"| {kind} | {kd['layers']} | {kd['weights']:,} | {kd['moved']:,} "
                         f"({100.0 * kd['moved'] / kd['weights']:.2f}%) | "
                         f"{100.0 * kd['moved'] / max(total_moved, 1):.1f}% | {acc:.2f}% |")
    text = "\n".join([f"Start {acc_start:.2f}%, searched {acc_result:.2f}% (test, `ccq eval`); "
                      f"{total_moved:,} levels moved in all.", "", *krows, "", *rows, ""])
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
