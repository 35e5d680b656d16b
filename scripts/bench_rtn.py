#!/usr/bin/env python3
"""bench_rtn.py: round-to-nearest (RTN) test accuracy of both reference
models at every weight width, with and without 8-bit first/last layers, and
the measured comparisons behind ccq's quantization defaults (activation range
rule, weight scale rule). Writes results/rtn.md. These are the numbers the
search has to beat. Every figure is one `ccq eval` run on the full test
split; the command line of each is in the table's configuration column."""
import datetime
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CCQ = os.path.join(ROOT, "build", "ccq")
DATA = os.path.join(ROOT, "build", "data", "fashion-mnist.h5")


def ev(model, *flags):
    cmd = [CCQ, "eval", os.path.join(ROOT, "results", "models", model + ".h5"), "--data", DATA, "--json", *flags]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_rtn: {' '.join(cmd)} failed: {p.stderr.strip()}")
    return json.loads(p.stdout)["accuracy"]


def main():
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    L = ["# Round-to-nearest baselines and quantization defaults\n",
         f"Measured by `./scripts/bench_rtn.py` on {datetime.date.today().isoformat()}, commit {commit}, CPU {cpu}. "
         "Each number is the test accuracy (10,000 Fashion-MNIST test images) of one `ccq eval` run of the integer "
         "engine; calibration uses the first 1,024 training images. Integer results are exact and identical on every "
         "kernel path.\n"]
    models = ("lenet", "resnet20")
    fp32 = {m: ev(m, "--float") for m in models}
    L.append("## RTN accuracy by weight width (8-bit activations; percentile 99.99 ranges, max-abs weight scales)\n")
    L.append("| model | FP32 | layers | w8a8 | w4a8 | w3a8 | w2a8 |\n|---|---|---|---|---|---|---|")
    for m in models:
        for fl8 in (False, True):
            accs = [ev(m, "--wbits", str(b), *(["--first-last-8"] if fl8 else [])) for b in (8, 4, 3, 2)]
            L.append(f"| {m} | {fp32[m]:.2f} | {'first/last 8-bit' if fl8 else 'all layers'} | "
                     + " | ".join(f"{a:.2f}" for a in accs) + " |")
    L.append("\n## Activation range rule\n")
    L.append("Per-tensor uint8 ranges from the calibration images: the minimum and maximum, or the P-th and "
             "(100-P)-th percentiles (4096-bin histogram). Weights max-abs, all layers at the stated width.\n")
    rules = [("minmax", ["--act-rule", "minmax"]), ("p99.9", ["--percentile", "99.9"]),
             ("p99.99 (default)", ["--percentile", "99.99"]), ("p99.999", ["--percentile", "99.999"])]
    L.append("| model | bits | " + " | ".join(r[0] for r in rules) + " |\n|---|---|" + "---|" * len(rules))
    for m in models:
        for b in (8, 4):
            L.append(f"| {m} | w{b}a8 | " + " | ".join(f"{ev(m, '--wbits', str(b), *f):.2f}" for _, f in rules) + " |")
    L.append("\n## Weight scale rule\n")
    L.append("Per-output-channel symmetric scale: max |w| / qmax, or the clipping ratio (1.00 down to 0.20 in "
             "steps of 0.01) that minimises the channel's squared rounding error. All layers at the stated width.\n")
    L.append("| model | bits | maxabs | mse |\n|---|---|---|---|")
    for m in models:
        for b in (4, 3, 2):
            L.append(f"| {m} | w{b}a8 | {ev(m, '--wbits', str(b)):.2f} | {ev(m, '--wbits', str(b), '--wscale', 'mse'):.2f} |")
    out = os.path.join(ROOT, "results", "rtn.md")
    notes = ""
    if os.path.exists(out):
        old = open(out).read()
        if "<!-- notes -->" in old:
            notes = old[old.index("<!-- notes -->"):]
    open(out, "w").write("\n".join(L) + "\n\n" + (notes or "<!-- notes -->\n"))
    print(f"bench_rtn: wrote {out}")


if __name__ == "__main__":
    main()
