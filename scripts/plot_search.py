#!/usr/bin/env python3
"""plot_search.py OUT.png LOG.jsonl[=LABEL]...: curves of one or more search
logs against evaluations: the context's batch fitness (thin) and the
validation fitness of the model kept (markers, at each checkpoint). Reads
only the JSON-lines log that `ccq search` writes."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: plot_search.py OUT.png LOG.jsonl[=LABEL]...")
    out = sys.argv[1]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arg in sys.argv[2:]:
        path, _, label = arg.partition("=")
        recs = [json.loads(l) for l in open(path) if l.strip()]
        if not recs:
            sys.exit(f"plot_search: {path}: empty log")
        label = label or path
        line, = ax.plot([r["evaluations"] for r in recs], [r["context"] for r in recs], lw=0.6, alpha=0.5)
        val = [(r["evaluations"], r["best_val"]) for r in recs if "best_val" in r]
        if val:
            ax.plot(*zip(*val), "o-", color=line.get_color(), ms=3, label=f"{label}: validation (model kept)")
    ax.set_xlabel("fitness evaluations (forward passes of a batch)")
    ax.set_ylabel("cross-entropy, nats per image")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("ccq search: context batch fitness (thin) and validation fitness (markers)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot_search: wrote {out}")


if __name__ == "__main__":
    main()
