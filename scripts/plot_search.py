#!/usr/bin/env python3
"""plot_search.py OUT.png LOG.jsonl[=LABEL]...: curves of one or more search
logs against evaluations. Left: fitness, the context's on each generation's
batch (thin) and on the held-out validation images at each checkpoint
(markers). Right: accuracy, the context's on each generation's batch (thin,
smoothed over 25 generations) and on the validation images (markers). Reads
only the JSON-lines log that `ccq search` writes; the test split is never in
it (report test accuracy with `ccq eval` on the final model)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(v, k=25):
    if len(v) < k:
        return np.asarray(v, dtype=float)
    c = np.cumsum(np.insert(np.asarray(v, dtype=float), 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: plot_search.py OUT.png LOG.jsonl[=LABEL]...")
    out = sys.argv[1]
    fig, (ax, ac) = plt.subplots(1, 2, figsize=(13, 4.8))
    for arg in sys.argv[2:]:
        path, _, label = arg.partition("=")
        try:
            recs = [json.loads(l) for l in open(path) if l.strip()]
        except (OSError, ValueError) as e:
            sys.exit(f"plot_search: {path}: {e}")
        if not recs:
            sys.exit(f"plot_search: {path}: empty log")
        label = label or path
        ev = [r["evaluations"] for r in recs]
        line, = ax.plot(ev, [r["context"] for r in recs], lw=0.6, alpha=0.4)
        col = line.get_color()
        val = [(r["evaluations"], r.get("val", r["best_val"])) for r in recs if "best_val" in r]
        if val:
            ax.plot(*zip(*val), "o-", color=col, ms=3, label=label)
        if "context_acc" in recs[0]:
            ac.plot(ev, 100 * smooth([r["context_acc"] for r in recs]), lw=0.6, alpha=0.5, color=col)
        va = [(r["evaluations"], 100 * r["val_acc"]) for r in recs if "val_acc" in r]
        if va:
            ac.plot(*zip(*va), "o-", color=col, ms=3, label=label)
    ax.set_xlabel("fitness evaluations (forward passes of a batch)")
    ax.set_ylabel("cross-entropy, nats per image")
    ax.set_yscale("log")
    ax.set_title("fitness: batch (thin), validation (markers)")
    ac.set_xlabel("fitness evaluations (forward passes of a batch)")
    ac.set_ylabel("accuracy, %")
    ac.set_title("accuracy: batch, 25-generation mean (thin), validation (markers)")
    for a in (ax, ac):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot_search: wrote {out}")


if __name__ == "__main__":
    main()
