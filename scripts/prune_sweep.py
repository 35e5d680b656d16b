#!/usr/bin/env python3
"""prune_sweep.py: the two orders of weight pruning and quantization, measured (results/prune.md).

  prune_sweep.py --ccq BUILD/ccq --data DATA.h5 --model NAME=MODEL.h5 [--model ...] --bits 4[,8]
                 --sparsity 0.25,0.5,0.75,0.9 [--init gptq] --work DIR --out-md OUT.md --out-png OUT.png

For every model, width and sparsity: `ccq quantize --init I --sparsity F --prune before` (the
smallest float weights masked, GPTQ compensating) and `--prune after` (the smallest real levels of
the unpruned GPTQ model zeroed), and the unpruned model; `ccq eval` on the whole test split and
`ccq inspect`'s zero levels. Writes a markdown table and a plot of test accuracy against the
fraction of zero weight levels, one panel per model. Every number comes from those commands."""
import argparse
import json
import os
import re
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--ccq", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--model", action="append", required=True)
ap.add_argument("--bits", default="4")
ap.add_argument("--sparsity", default="0.25,0.5,0.75,0.9")
ap.add_argument("--init", default="gptq")
ap.add_argument("--first-last-8", action="store_true", help="quantize with --first-last-8 (those layers dense)")
ap.add_argument("--work", required=True)
ap.add_argument("--out-md", required=True)
ap.add_argument("--out-png", required=True)
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
FL = ["--first-last-8"] if a.first_last_8 else []


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def measure(path):
    ev = json.loads(sh([a.ccq, "eval", path, "--data", a.data, "--json"]))
    m = re.search(r"sparsity\s+(\d+) of (\d+) weight levels zero", sh([a.ccq, "inspect", path]))
    return ev["accuracy"], int(m.group(1)) / int(m.group(2))


rows, curves = [], {}
for spec in a.model:
    name, path = spec.split("=", 1)
    for b in [int(x) for x in a.bits.split(",")]:
        base = os.path.join(a.work, f"{name}_w{b}.h5")
        sh([a.ccq, "quantize", path, "--data", a.data, "--wbits", str(b), "--init", a.init, "-o", base, *FL])
        acc0, z0 = measure(base)
        rows.append((name, b, "-", 0.0, "unpruned", acc0, z0))
        for order in ("before", "after"):
            pts = [(z0, acc0)]
            for f in a.sparsity.split(","):
                out = os.path.join(a.work, f"{name}_w{b}_{order}_{f}.h5")
                sh([a.ccq, "quantize", path, "--data", a.data, "--wbits", str(b), "--init", a.init,
                    "--sparsity", f, "--prune", order, "-o", out, *FL])
                acc, z = measure(out)
                rows.append((name, b, f, float(f), order, acc, z))
                pts.append((z, acc))
                print(f"{name} w{b} {order} {f}: {acc:.2f}% test, {100 * z:.2f}% zero levels", flush=True)
            curves[(name, b, order)] = pts

md = ["| model | weight bits | sparsity asked | order | test accuracy | zero weight levels |", "|---|---|---|---|---|---|"]
for name, b, f, _, order, acc, z in rows:
    md.append(f"| {name} | {b} | {f} | {order} | {acc:.2f}% | {100 * z:.2f}% |")
open(a.out_md, "w").write("\n".join(md) + "\n")

names = [s.split("=", 1)[0] for s in a.model]
fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
for ax, name in zip(axes[0], names):
    for (n, b, order), pts in sorted(curves.items()):
        if n != name:
            continue
        ax.plot([100 * z for z, _ in pts], [acc for _, acc in pts], "o-" if order == "before" else "s--",
                label=f"w{b}, prune {order} GPTQ" if order == "before" else f"w{b}, GPTQ then prune")
    ax.set_title(name)
    ax.set_xlabel("zero weight levels (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(a.out_png, dpi=120)
print(f"wrote {a.out_md} and {a.out_png}")
