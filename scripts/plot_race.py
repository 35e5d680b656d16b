#!/usr/bin/env python3
"""plot_race.py OUT.png --title T [--search DIR=LABEL]... [--ste CURVE.json=LABEL]... [--ref ACC=LABEL]...
[--keep OLD.json=LABEL[->NEW]]...:
test accuracy against wall-clock for ccq searches and STE fine-tunes from the
same start, and a JSON of the curves beside OUT.png (OUT.json).

A search curve comes from a run made with run.snapshots = true in DIR
(files model.gGEN.h5, log.jsonl.time): at each snapshot, the seconds since
the search loop started (LOG.time's elapsed at that generation; 0 for the
start) and the test accuracy of the snapshot (the model kept so far, chosen
on validation) by `ccq eval`. An STE curve is ste_finetune.py's --curve
file (seconds of training and validation; test accuracy of the levels
chosen so far on validation, by `ccq eval`). Both curves are step
functions: what a user stopping at that moment would ship. The test split
never chose anything. --keep takes the curve labelled LABEL from an earlier
OUT.json (a run whose directory is gone), renamed NEW if given, so earlier measurements stay on the
plot beside new ones."""
import argparse
import json
import os
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def die(msg):
    print(f"plot_race: {msg}", file=sys.stderr)
    sys.exit(1)


def test_acc(model, data):
    ccq = os.environ.get("CCQ_BIN", os.path.join(ROOT, "build", "ccq"))
    r = subprocess.run([ccq, "eval", model, "--data", data, "--json"], capture_output=True, text=True)
    if r.returncode:
        die(f"{model}: ccq eval failed: {r.stderr.strip()}")
    return json.loads(r.stdout)["accuracy"] / 100.0  # ccq eval reports percent; curves hold fractions


def search_curve(d, data):
    tpath = os.path.join(d, "log.jsonl.time")
    if not os.path.isfile(tpath):
        die(f"{tpath}: no such file (a search run directory with run.snapshots = true)")
    elapsed = {json.loads(l)["gen"]: json.loads(l)["elapsed"] for l in open(tpath)}
    snaps = sorted((int(m.group(1)), f) for f in os.listdir(d) if (m := re.match(r".*\.g(\d+)\.h5$", f)))
    if not snaps:
        die(f"{d}: no snapshots (run the search with --set run.snapshots=true)")
    pts = []
    for g, f in snaps:
        acc = test_acc(os.path.join(d, f), data)
        pts.append({"gen": g, "seconds": 0.0 if g == 0 else elapsed[g], "test_acc": acc})
    return pts


def ste_curve(path):
    try:
        c = json.load(open(path))
    except (OSError, ValueError) as e:
        die(f"{path}: cannot read an STE curve ({e})")
    recs = c["records"] if isinstance(c, dict) else c
    return [{"seconds": r["seconds"], "test_acc": r["test_acc"]} for r in recs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--title", default="")
    ap.add_argument("--data", default=os.path.join(ROOT, "build", "data", "fashion-mnist.h5"))
    ap.add_argument("--search", action="append", default=[])
    ap.add_argument("--ste", action="append", default=[])
    ap.add_argument("--ref", action="append", default=[])
    ap.add_argument("--keep", action="append", default=[])
    a = ap.parse_args()
    curves = []
    for k in a.keep:
        p, _, label = k.partition("=")
        label, _, new = label.partition("->")
        try:
            old = json.load(open(p))
        except (OSError, ValueError) as e:
            die(f"{p}: cannot read earlier curves ({e})")
        got = [c for c in old if c.get("label") == label]
        if not got:
            die(f"{p}: no curve labelled {label!r}")
        curves += [dict(c, label=new or label) for c in got]
    for s in a.search:
        d, _, label = s.partition("=")
        curves.append({"kind": "search", "label": label or d, "points": search_curve(d, a.data)})
    for s in a.ste:
        p, _, label = s.partition("=")
        curves.append({"kind": "ste", "label": label or p, "points": ste_curve(p)})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in curves:
        xs = [p["seconds"] for p in c["points"]]
        ys = [100 * p["test_acc"] for p in c["points"]]
        ax.step(xs, ys, where="post", label=c["label"], lw=2 if c["kind"] == "search" else 1.3,
                ls="-" if c["kind"] == "search" else "--")
        ax.plot(xs, ys, "o" if c["kind"] == "search" else "s", ms=3, color=ax.lines[-1].get_color())
    for r in a.ref:
        v, _, label = r.partition("=")
        ax.axhline(float(v), color="gray", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[1], float(v), " " + label, va="center", fontsize=7, color="gray")
    ax.set_xlabel("wall-clock seconds (2 cores)")
    ax.set_ylabel("test accuracy of the model kept so far (%)")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(curves, f, indent=1)
    print(f"plot_race: wrote {a.out}")


if __name__ == "__main__":
    main()
