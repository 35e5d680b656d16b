#!/usr/bin/env python3
"""factorize_report.py: CP-factorized layers measured (results/factorize.md).

  factorize_report.py --ccq BUILD/ccq --data DATA.h5 --model NAME=MODEL.h5=CONFIG.ini [--model ...]
                      --ratios 0.25,0.5,0.75 --wbits 4 --budget NAME=EVALS,... --work DIR
                      --out-md OUT.md --out-png-prefix PREFIX [--no-search]

For every model: FP32 (`ccq eval --float`), the original at w4 and w8 (`ccq quantize --init rtn`,
round-to-nearest as the layers factorize leaves unfactorized), and at every ratio: the float
factorization (`ccq factorize --method als --float`, then `ccq eval --float`), CP-ALS + RTN
(`--method als --refit 0`), ADMM on the grid (`--refit 0`), each of the two with the data-aware
refit of the last factors (`--refit 256`, the default), and ADMM + refit + `ccq search`
(scripts/search_record.sh, 2 ranks, the model's config with run.budget set; its record in
results/search_runs/). Test accuracy
on the whole test split, parameters and MACs from `ccq inspect`, forward speed from `ccq bench`
(one thread) of the original w4 and of each ADMM model, measured last and one at a time. Writes a
markdown table and two plots per model: test accuracy against parameters and against MACs."""
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
ap.add_argument("--model", action="append", required=True, help="NAME=MODEL.h5=CONFIG.ini")
ap.add_argument("--ratios", default="0.25,0.5,0.75")
ap.add_argument("--wbits", type=int, default=4)
ap.add_argument("--budget", default="", help="NAME=EVALS,...: the search's evaluations per model")
ap.add_argument("--no-search", action="store_true")
ap.add_argument("--refit", default="256", help="the refit's images (ccq factorize --refit)")
ap.add_argument("--rec-suffix", default="", help="appended to the search records' names")
ap.add_argument("--replot", action="store_true", help="only redraw the plots from the table in --out-md")
ap.add_argument("--work", required=True)
ap.add_argument("--out-md", required=True)
ap.add_argument("--out-png-prefix", required=True)
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
budgets = dict(kv.split("=") for kv in a.budget.split(",") if kv)
here = os.path.dirname(os.path.abspath(__file__))


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def acc(path, float_=False):
    return json.loads(sh([a.ccq, "eval", path, "--data", a.data, "--json"] + (["--float"] if float_ else [])))["accuracy"]


def size(path):
    m = re.search(r"total\s+\d+ nodes, (\d+) parameters, (\d+) MACs", sh([a.ccq, "inspect", path]))
    return int(m.group(1)), int(m.group(2))


def speed(path):
    out = sh([a.ccq, "bench", path, "--data", a.data])
    return float(re.search(r"(\d+) images/s", out).group(1))


rows, bench = [], []
for spec in [] if a.replot else a.model:
    name, path, cfg = spec.split("=", 2)
    fp = acc(path, True)
    p, macs = size(path)
    rows.append(dict(model=name, point="FP32", ratio="-", params=p, macs=macs, acc=fp,
                     cmd=f"ccq eval {path} --float"))
    for b in (8, a.wbits):
        q = os.path.join(a.work, f"{name}_w{b}.h5")
        sh([a.ccq, "quantize", path, "--data", a.data, "--wbits", str(b), "--init", "rtn", "-o", q])
        p, macs = size(q)
        rows.append(dict(model=name, point=f"original w{b} (RTN)", ratio="-", params=p, macs=macs, acc=acc(q),
                         cmd=f"ccq quantize {path} --wbits {b} --init rtn"))
        if b == a.wbits:
            bench.append((name, f"original w{b}", q))
    for r in a.ratios.split(","):
        tag = f"{name}_r{int(float(r) * 100)}"
        fl = os.path.join(a.work, tag + "_float.h5")
        sh([a.ccq, "factorize", path, "--ratio", r, "--method", "als", "--float", "-o", fl])
        p, macs = size(fl)
        rows.append(dict(model=name, point="factorized, float", ratio=r, params=p, macs=macs, acc=acc(fl, True),
                         cmd=f"ccq factorize {path} --ratio {r} --method als --float"))
        for method, refit in (("als", "0"), ("admm", "0"), ("als", a.refit), ("admm", a.refit)):
            q = os.path.join(a.work, f"{tag}_{method}" + ("_refit" if refit != "0" else "") + ".h5")
            out = sh([a.ccq, "factorize", path, "--data", a.data, "--ratio", r, "--wbits", str(a.wbits),
                      "--method", method, "--refit", refit, "-o", q])
            with open(q + ".txt", "w") as f:
                f.write(out)
            p, macs = size(q)
            label = ("CP-ALS + RTN" if method == "als" else "ADMM on the grid") + (" + refit" if refit != "0" else "")
            rows.append(dict(model=name, point=label, ratio=r, params=p, macs=macs, acc=acc(q),
                             cmd=f"ccq factorize {path} --ratio {r} --wbits {a.wbits} --method {method} --refit {refit}"))
            if method == "admm" and refit != "0":
                bench.append((name, f"ADMM + refit, ratio {r}", q))
        if not a.no_search:
            rec = f"factorize_{tag}_w{a.wbits}{a.rec_suffix}"
            sh([os.path.join(here, "search_record.sh"), rec, cfg, q, "--set", f"run.budget={budgets.get(name, 4000)}"])
            m = os.path.join("build", "exp", rec, "model.h5")
            p, macs = size(m)
            rows.append(dict(model=name, point="ADMM + refit + ccq search", ratio=r, params=p, macs=macs, acc=acc(m),
                             cmd=f"scripts/search_record.sh {rec} {cfg} (ADMM + refit file) --set run.budget="
                                 f"{budgets.get(name, 4000)} (results/search_runs/{rec})"))
        print(f"{tag}: done", flush=True)

speeds = [(n, lab, speed(q)) for n, lab, q in bench]


def write_md():
    with open(a.out_md, "w") as f:
        f.write("| model | point | ratio | parameters | MACs per image | test accuracy | command |\n"
                "|---|---|---|---|---|---|---|\n")
        for x in rows:
            f.write(f"| {x['model']} | {x['point']} | {x['ratio']} | {x['params']:,} | {x['macs']:,} | "
                    f"{x['acc']:.2f}% | `{x['cmd']}` |\n")
        f.write("\n| model | integer model | forward images/s (1 thread, best batch) |\n|---|---|---|\n")
        for n, lab, s in speeds:
            f.write(f"| {n} | {lab} | {s:,.0f} |\n")


if a.replot:
    for line in open(a.out_md):
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) == 7 and c[3][:1].isdigit():
            rows.append(dict(model=c[0], point=c[1], ratio=c[2], params=int(c[3].replace(",", "")),
                             macs=int(c[4].replace(",", "")), acc=float(c[5].rstrip("%")), cmd=c[6]))
else:
    write_md()

for spec in a.model:
    name = spec.split("=", 1)[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xl in ((axes[0], "params", "parameters"), (axes[1], "macs", "MACs per image")):
        mine = [x for x in rows if x["model"] == name]
        for point, style in (("factorized, float", "k:o"), ("CP-ALS + RTN", "C3-s"), ("ADMM on the grid", "C0-^"),
                             ("ADMM + ccq search", "C2:D"), ("CP-ALS + RTN + refit", "C1--s"),
                             ("ADMM on the grid + refit", "C4--^"), ("ADMM + refit + ccq search", "C2-D")):
            pts = sorted((x[key], x["acc"]) for x in mine if x["point"] == point)
            if pts:
                ax.plot(*zip(*pts), style, label=point)
        for x in mine:
            if x["ratio"] == "-":
                ax.plot(x[key], x["acc"], "*", ms=11, label=x["point"])
        ax.set_xlabel(xl)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        top = max(x["acc"] for x in mine)
        lo = max(0, top - 25)
        ax.set_ylim(lo, top + 1)
        for x in mine:  # points below the axis: their value at the bottom edge
            if x["acc"] < lo:
                dy = {"factorized, float": 4, "CP-ALS + RTN": 14, "ADMM on the grid": 24}.get(x["point"], 34)
                ax.annotate(f"{x['point']}: {x['acc']:.1f}%", (x[key], lo), xytext=(4, dy), textcoords="offset points",
                            fontsize=7, arrowprops=dict(arrowstyle="->", lw=0.6))
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{name}: CP-factorized layers at w{a.wbits}a8 (ratios {a.ratios})")
    fig.tight_layout()
    fig.savefig(f"{a.out_png_prefix}_{name}.png", dpi=110)
print("wrote", a.out_md)
