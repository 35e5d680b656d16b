#!/usr/bin/env python3
"""bench_bytes.py OUT.md [--ranks N] [--gens G] [--wide K]: what a search sends per generation,
for lenet, ResNet-20 and a ResNet-20 K times wider (about K^2 times the weights; untrained, random
weights from a fixed seed: the bytes do not depend on what the weights are).

Each model runs `mpirun -np N ccq search configs/resnet20_w2a8.ini` with a round-to-nearest start
for G generations (validation at every 5th) and the payload bytes rank 0 handed to MPI are read
from LOG.time (`mpi_bytes_rank0`, cumulative): per generation without and with a validation. Writes
a markdown table to OUT.md (and stdout). Needs build/ccq and build/data/fashion-mnist.h5."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import h5py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def wide_resnet20(k, path, data):
    import torch
    import torch.nn as nn
    import ccq_torch as ct

    class Wide(ct.ResNet20):
        def __init__(self):
            nn.Module.__init__(self)
            w = [int(round(c * k)) for c in (16, 32, 64)]
            self.conv1 = nn.Conv2d(1, w[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(w[0])
            layers, cin = [], w[0]
            for cout, stride in ((w[0], 1), (w[1], 2), (w[2], 2)):
                for i in range(3):
                    layers.append(ct.BasicBlock(cin, cout, stride if i == 0 else 1))
                    cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(w[2], 10)

    torch.manual_seed(1)
    m = Wide()
    with h5py.File(data, "r") as f:
        mean, std = [float(f.attrs.get("mean", 0.286))], [float(f.attrs.get("std", 0.353))]
    ct.export_ccq(m, (1, 28, 28), path, mean, std, f"resnet20x{k:g}")
    return m


def weights(path):
    n = 0
    with h5py.File(path, "r") as f:
        for k in f["nodes"]:
            if "weight" in f["nodes"][k]:
                n += f["nodes"][k]["weight"].size
    return n


def measure(model, ranks, gens, d):
    log = os.path.join(d, "log.jsonl")
    sets = {"model.model": model, "quant.init": "rtn", "run.budget": 1, "run.checkpoint_every": 5,
            "search.val_images": 1000, "run.log": log, "run.output": os.path.join(d, "out.h5"),
            "run.checkpoint": os.path.join(d, "ckpt.h5")}
    # lambda 32 + combine + confirmation: about 34 evaluations a generation
    sets["run.budget"] = 34 * gens
    cmd = ["mpirun", "--oversubscribe", "-np", str(ranks), os.path.join(ROOT, "build", "ccq"), "search",
           os.path.join(ROOT, "configs", "resnet20_w2a8.ini")]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    recs = [json.loads(x) for x in open(log + ".time")]
    plain, val = [], []
    for a, b in zip(recs, recs[1:]):
        (val if b["gen"] % 5 == 0 else plain).append(b["mpi_bytes_rank0"] - a["mpi_bytes_rank0"])
    return plain, val, recs[-1]["gen"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--gens", type=int, default=12)
    ap.add_argument("--wide", type=float, default=3.2)
    a = ap.parse_args()
    data = os.path.join(ROOT, "build", "data", "fashion-mnist.h5")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        wide = os.path.join(d, "wide.h5")
        wide_resnet20(a.wide, wide, data)
        for name, path in (("lenet", os.path.join(ROOT, "results", "models", "lenet.h5")),
                           ("resnet20", os.path.join(ROOT, "results", "models", "resnet20.h5")),
                           (f"resnet20 x{a.wide:g} wide (random weights)", wide)):
            sub = os.path.join(d, name.split()[0])
            os.makedirs(sub, exist_ok=True)
            plain, val, g = measure(path, a.ranks, a.gens, sub)
            rows.append((name, weights(path), g, min(plain), max(plain), min(val) if val else 0,
                         max(val) if val else 0))
    lines = [f"| model | weights | generations | bytes per generation (rank 0's payload to MPI), min-max | "
             f"with a validation (every 5th) |", "|---|---|---|---|---|"]
    for n, w, g, p0, p1, v0, v1 in rows:
        lines.append(f"| {n} | {w:,} | {g} | {p0:,}-{p1:,} | {v0:,}-{v1:,} |")
    text = "\n".join(lines) + "\n"
    open(a.out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
