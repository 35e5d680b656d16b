#!/usr/bin/env python3
"""plot_pareto.py MODEL.h5 --data DATA.h5 --out-md OUT.md --out-png OUT.png [--searched LABEL=MODEL.h5 ...]
[--bits 2,3,4,8] [--learned-bits 2,3,4] [--ccq BIN]: test accuracy against model size in bytes.

For the float model MODEL.h5 it measures, with the real engine (`ccq quantize` then `ccq eval` on
the 10,000 test images, never used for any choice):
  - FP32 (`ccq eval --float`): 4 bytes per parameter (BatchNorm folded into the layers before it);
  - uniform levels at each --bits width, all layers at that width, from the start `--init auto`
    picks on the train split (the best of round-to-nearest, GPTQ and GPTQ with the scale search);
  - learned levels (`--levels learned`, a fitted int8 codebook of 2^b values per output channel) at
    each --learned-bits width, the same start rule;
  - every --allocated LABEL=FILE: a model of `ccq quantize --budget` (a width per layer), the
    points joined by one line;
  - GPTQ with magnitude pruning (the smallest float weights masked, GPTQ compensating: `ccq
    quantize --init gptq --sparsity F --prune before`) at each --pruned-bits width and each
    --sparsity fraction, one line per width;
  - every --searched LABEL=FILE: a quantized model file (e.g. a search's output).
Size of a quantized file: per conv/linear layer ceil(weights x bits / 8) bytes of levels (codes,
for learned levels), its codebook (2^bits bytes per output channel), a float32 scale and an int32
bias per output channel; a layer marked sparse (pruned) counts its sparse storage instead where
that is smaller: a bitmap (ceil(weights / 8)), the non-zero levels' codes (1 bit at 2 bits, else
`bits`) and a uint32 row index per output channel, exactly what the C export stores; activation
scales and zero points (8 bytes per node) are counted too.
Writes a markdown table (OUT.md: one row per point, with its command) and the plot (OUT.png: the
uniform and learned starts as lines, each searched model as a marker). The quantized starts live
in a temporary folder while the script runs."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import h5py


def sh(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"plot_pareto: {' '.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


def accuracy(ccq, model, data, extra=()):
    return json.loads(sh([ccq, "eval", model, "--data", data, "--json", *extra]))["accuracy"]


def size_bytes(path):
    """Bytes of a quantized model file as deployed (see the module text), and its bit widths."""
    total, widths = 0, set()
    with h5py.File(path, "r") as f:
        for name in f["nodes"]:
            g = f["nodes"][name]
            total += 8  # act_scale (float32) and act_zp
            if "levels" not in g:
                continue
            bits = int(g.attrs["bits"])
            widths.add(bits)
            cout = g["levels"].shape[0]
            lev = g["levels"][...]
            dense = -(-lev.size * bits // 8)
            sparse = -(-lev.size // 8) + -(-int((lev != 0).sum()) * (1 if bits == 2 else bits) // 8) + 4 * cout
            use = int(g.attrs.get("sparse", 0)) == 1 and "codebook" not in g and sparse < dense
            total += (sparse if use else dense) + 8 * cout
            if "codebook" in g:
                total += g["codebook"].size
    return total, sorted(widths)


def float_params(path):
    n = 0
    with h5py.File(path, "r") as f:
        for name in f["nodes"]:
            for k in ("weight", "bias", "gamma", "beta", "mean", "var"):
                if k in f["nodes"][name]:
                    n += f["nodes"][name][k].size
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-png", required=True)
    ap.add_argument("--searched", action="append", default=[], metavar="LABEL=FILE")
    ap.add_argument("--allocated", action="append", default=[], metavar="LABEL=FILE",
                    help="a model of `ccq quantize --budget` (a width per layer), drawn as one line")
    ap.add_argument("--bits", default="2,3,4,8")
    ap.add_argument("--learned-bits", default="2,3,4")
    ap.add_argument("--pruned-bits", default="", help="widths of the pruned GPTQ baselines (none by default)")
    ap.add_argument("--sparsity", default="0.3,0.5,0.7", help="their fractions of zero weights")
    ap.add_argument("--ccq", default="build/ccq")
    a = ap.parse_args()
    name = os.path.splitext(os.path.basename(a.model))[0]
    rows = []  # (kind, label, bytes, accuracy, command)
    acc = accuracy(a.ccq, a.model, a.data, ["--float"])
    rows.append(("fp32", "FP32", 4 * float_params(a.model), acc, f"ccq eval {a.model} --float"))
    with tempfile.TemporaryDirectory() as tmp:
        for kind, widths in (("uniform", a.bits), ("learned", a.learned_bits)):
            for b in [int(x) for x in widths.split(",") if x]:
                q = os.path.join(tmp, f"{kind}_w{b}.h5")
                cmd = [a.ccq, "quantize", a.model, "--data", a.data, "--wbits", str(b), "--init", "auto", "-o", q]
                if kind == "learned":
                    cmd[-2:-2] = ["--levels", "learned"]
                out = sh(cmd)
                chosen = next((ln.split(":")[-1].strip() for ln in out.splitlines() if "auto" in ln), "?")
                nbytes, _ = size_bytes(q)
                rows.append((kind, f"{kind} w{b} ({chosen})", nbytes, accuracy(a.ccq, q, a.data),
                             " ".join(["ccq"] + cmd[1:-2] + ["-o", "Q.h5"])))
        for b in [int(x) for x in a.pruned_bits.split(",") if x]:
            for f in a.sparsity.split(","):
                q = os.path.join(tmp, f"pruned_w{b}_{f}.h5")
                cmd = [a.ccq, "quantize", a.model, "--data", a.data, "--wbits", str(b), "--init", "gptq",
                       "--sparsity", f, "--prune", "before", "-o", q]
                sh(cmd)
                nbytes, _ = size_bytes(q)
                rows.append((f"pruned{b}", f"GPTQ w{b}, {f} of the weights pruned before", nbytes,
                             accuracy(a.ccq, q, a.data), " ".join(["ccq"] + cmd[1:-2] + ["-o", "Q.h5"])))
    for kind, items in (("allocated", a.allocated), ("searched", a.searched)):
        for s in items:
            label, path = s.split("=", 1)
            nbytes, _ = size_bytes(path)
            rows.append((kind, label, nbytes, accuracy(a.ccq, path, a.data), f"ccq eval {path}"))

    fp32 = rows[0][2]
    lines = [f"| point | bytes | x smaller than FP32 | test accuracy | command |", "|---|---|---|---|---|"]
    for kind, label, nbytes, accv, cmd in sorted(rows, key=lambda r: r[2]):
        lines.append(f"| {label} | {nbytes:,} | {fp32 / nbytes:.1f} | {accv:.2f}% | `{cmd}` |")
    os.makedirs(os.path.dirname(a.out_md) or ".", exist_ok=True)
    with open(a.out_md, "w") as f:
        f.write("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, style in (("uniform", "o-"), ("learned", "s-")):
        pts = sorted((r[2], r[3]) for r in rows if r[0] == kind)
        if pts:
            ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], style, label=f"{kind} levels, start (auto)")
    for b in [int(x) for x in a.pruned_bits.split(",") if x]:
        pts = sorted((r[2], r[3]) for r in rows if r[0] == f"pruned{b}")
        ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], "v--",
                label=f"GPTQ w{b} + magnitude pruning {a.sparsity} (sparse storage)")
    pts = sorted((r[2], r[3]) for r in rows if r[0] == "allocated")
    if pts:
        ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], "D-",
                label="a width per layer within a byte budget (ccq quantize --budget)")
    for kind, label, nbytes, accv, _ in rows:
        if kind == "searched":
            ax.plot(nbytes / 1024, accv, "*", markersize=13, label=label)
    ax.axhline(rows[0][3], color="gray", linestyle=":", label=f"FP32 ({rows[0][3]:.2f}%, {fp32 / 1024:,.0f} KiB)")
    ax.set_xscale("log")
    ax.set_xlabel("model size (KiB: levels at their width, codebooks, scales, biases)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{name}: accuracy against size")
    lo = min(r[3] for r in rows if r[3] > rows[0][3] - 8)
    ax.set_ylim(lo - 0.5, rows[0][3] + 0.7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(a.out_png) or ".", exist_ok=True)
    fig.savefig(a.out_png, dpi=110)
    print(open(a.out_md).read())


if __name__ == "__main__":
    main()
