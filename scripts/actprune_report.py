#!/usr/bin/env python3
"""actprune_report.py: the tables and plot of results/actprune.md from `ccq prune-act` runs.

  actprune_report.py --base BASE.eval.json --run LABEL=PREFIX [--run ...] --out-md OUT.md
                     --out-png OUT.png [--title T] [--max-loss 0.3]

BASE.eval.json is `ccq eval MODEL --act-zeros --json` on the unpruned model; each PREFIX names a
run's files: PREFIX.out (prune-act's stdout) and PREFIX.eval.json (`ccq eval OUT --act-zeros
--json` on its output, the test split). Writes a markdown fragment: the runs (bound, rounds, the
sample's accuracy and zeros before and after, test accuracy and zeros, seconds), and for the run
with the most test zeros among those losing at most --max-loss points of test accuracy, every
node's threshold and zeros; and a plot: test accuracy lost against the fraction of zero
activations (left), per-node zeros without and with that run's thresholds (right). Numbers come
from the files only."""
import argparse
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--run", action="append", required=True)
ap.add_argument("--out-md", required=True)
ap.add_argument("--out-png", required=True)
ap.add_argument("--title", default="")
ap.add_argument("--max-loss", type=float, default=0.3)
a = ap.parse_args()

base = json.load(open(a.base))
runs = []
for spec in a.run:
    label, prefix = spec.split("=", 1)
    out = open(prefix + ".out").read()
    ev = json.load(open(prefix + ".eval.json"))
    head = re.search(r"bound: at most (\d+) fewer correct \(([0-9.]+) points\)", out)
    tail = re.search(r"prune-act: zeros ([0-9.]+)% -> ([0-9.]+)% \(one tolerance\) -> ([0-9.]+)%; accuracy "
                     r"([0-9.]+)% -> ([0-9.]+)% -> ([0-9.]+)%.*?(\d+) joint evaluations, ([0-9.]+) s", out)
    alone = {int(m.group(1)): (int(m.group(2)), float(m.group(3)))
             for m in re.finditer(r"prune-act:\s+(\d+) .*? alone\s+(\d+)\s+([0-9.]+)%", out)}
    runs.append(dict(label=label, bound=float(head.group(2)), z0=float(tail.group(1)), z2=float(tail.group(2)),
                     z=float(tail.group(3)), a0=float(tail.group(4)), a2=float(tail.group(5)),
                     a=float(tail.group(6)), evals=int(tail.group(7)), secs=float(tail.group(8)), ev=ev,
                     alone=alone, rounds0=(re.search(r"greedy rounds at most 0\b", out) is not None
                                           or "rounds 0" in label)))

loss = lambda r: base["accuracy"] - r["ev"]["accuracy"]  # noqa: E731
ok = [r for r in runs if loss(r) <= a.max_loss + 1e-9]
best = max(ok, key=lambda r: r["ev"]["act_zero_fraction"]) if ok else None

md = []
md.append(f"Unpruned: test accuracy {base['accuracy']:.2f}%, {100 * base['act_zero_fraction']:.2f}% of the "
          f"activation levels of the {len(base['act_nodes'])} nodes with their own scale at the zero point "
          "(ReLU's zeros).\n")
md.append("| run | bound on the sample (points) | sample accuracy: unpruned -> one tolerance -> result | "
          "sample zeros: unpruned -> one tolerance -> result | test accuracy | test accuracy lost (points) | "
          "test zeros | joint evaluations | seconds |")
md.append("|---|---|---|---|---|---|---|---|---|")
for r in runs:
    md.append(f"| {r['label']} | {r['bound']:.2f} | {r['a0']:.2f}% -> {r['a2']:.2f}% -> {r['a']:.2f}% | "
              f"{r['z0']:.2f}% -> {r['z2']:.2f}% -> {r['z']:.2f}% | {r['ev']['accuracy']:.2f}% | {loss(r):+.2f} | "
              f"{100 * r['ev']['act_zero_fraction']:.2f}% | {r['evals']} | {r['secs']:.0f} |")
md.append("")
if best:
    md.append(f"Per node, the run with the most test zeros within {a.max_loss} points of test accuracy "
              f"({best['label']}: {best['ev']['accuracy']:.2f}%, {loss(best):+.2f} points, "
              f"{100 * best['ev']['act_zero_fraction']:.2f}% zeros), on the test split; 'alone' is the "
              "largest threshold that keeps the bound with no other node pruned, and the zeros it gives on "
              "the sample:\n")
    md.append("| node | op | name | levels per image | zeros unpruned | threshold alone (sample zeros) | "
              "threshold | zeros |")
    md.append("|---|---|---|---|---|---|---|---|")
    bz = {n["node"]: n for n in base["act_nodes"]}
    for n in best["ev"]["act_nodes"]:
        al = best["alone"].get(n["node"])
        per = n["levels"] // best["ev"]["images"]
        md.append(f"| {n['node']} | {n['op']} | {n['name']} | {per} | {100 * bz[n['node']]['zero_fraction']:.2f}% | "
                  f"{al[0]} ({al[1]:.2f}%) | {n['thresh']} | {100 * n['zero_fraction']:.2f}% |"
                  if al else
                  f"| {n['node']} | {n['op']} | {n['name']} | {per} | {100 * bz[n['node']]['zero_fraction']:.2f}% | - | "
                  f"{n['thresh']} | {100 * n['zero_fraction']:.2f}% |")
else:
    md.append(f"No run lost at most {a.max_loss} points of test accuracy.")
open(a.out_md, "w").write("\n".join(md) + "\n")

fig, ax = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.6]})
at = {}  # runs that land on the same point share one label
for r in runs:
    mk = "s" if r["rounds0"] else "o"
    xy = (round(100 * r["ev"]["act_zero_fraction"], 4), round(loss(r), 4))
    ax[0].plot(*xy, mk, color="C1" if r["rounds0"] else "C0")
    at.setdefault(xy, []).append(r["label"])
for xy, labels in at.items():
    ax[0].annotate("\n".join(labels), xy, fontsize=6, xytext=(4, 2), textcoords="offset points")
ax[0].plot(100 * base["act_zero_fraction"], 0.0, "k^")
ax[0].annotate("unpruned", (100 * base["act_zero_fraction"], 0.0), fontsize=7, xytext=(4, 2), textcoords="offset points")
ax[0].axhline(a.max_loss, color="grey", ls="--", lw=0.8)
ax[0].set_xlabel("zero activations, test split (%)")
ax[0].set_ylabel("test accuracy lost (points)")
ax[0].set_title("runs (squares: one tolerance only; circles: with the greedy ascent)", fontsize=8)
if best:
    nodes = best["ev"]["act_nodes"]
    bz = {n["node"]: n for n in base["act_nodes"]}
    x = range(len(nodes))
    ax[1].bar([i - 0.2 for i in x], [100 * bz[n["node"]]["zero_fraction"] for n in nodes], 0.4, label="unpruned")
    ax[1].bar([i + 0.2 for i in x], [100 * n["zero_fraction"] for n in nodes], 0.4, label=best["label"])
    ax[1].set_xticks(list(x))
    ax[1].set_xticklabels([f"{n['node']} {n['op']}" for n in nodes], rotation=90, fontsize=6)
    ax[1].set_ylabel("zero activations, test split (%)")
    ax[1].legend(fontsize=7)
    ax[1].set_title("per node", fontsize=8)
fig.suptitle(a.title, fontsize=10)
fig.tight_layout()
fig.savefig(a.out_png, dpi=120)
print(f"wrote {a.out_md} and {a.out_png}")
