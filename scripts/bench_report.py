#!/usr/bin/env python3
"""bench_report.py IN.jsonl OUT.md --command CMD --core N: turn the records of
bench_forward.sh into results/forward.md. Every number in the tables comes
from IN.jsonl; the machine, commit and command are recorded with them. Text
below the line '<!-- notes -->' of an existing OUT.md (the hand-written
analysis) is kept."""
import argparse
import datetime
import json
import os
import platform
import subprocess


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit(repo):
    try:
        h = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return h + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("out")
    ap.add_argument("--command", required=True)
    ap.add_argument("--core", default="1")
    a = ap.parse_args()
    recs = [json.loads(l) for l in open(a.jsonl) if l.strip()]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ccq = [r for r in recs if "isa" in r and "images_per_s" in r]
    torch_r = [r for r in recs if "config" in r and "images_per_s" in r]
    peaks = {}
    for r in ccq:
        if r.get("peak_gmacs"):
            peaks.setdefault(r["isa"], []).append(r["peak_gmacs"])
    peak = {k: max(v) for k, v in peaks.items()}
    vnni = peak.get("avx512vnni")
    L = []
    L.append("# Integer forward pass: speed against PyTorch\n")
    L.append(f"Measured by `{a.command}` on {datetime.date.today().isoformat()}, commit {commit(repo)}, "
             f"CPU: {cpu_model()}, one core (taskset -c {a.core}), one thread, batch 256 test images, "
             f"torch {torch_r[0]['torch'] if torch_r else '?'}. Each ccq figure is `ccq bench` (the whole forward "
             "pass of the batch repeated for 3-4 s) and each PyTorch figure is the same statistic: the best batch "
             "of the repetitions (ccq's mean over all repetitions is in the JSON record). GMAC/s = images/s x the model's multiply-accumulates per image.\n")
    L.append("## Ceiling\n")
    L.append("The core u8 x s8 multiply-accumulate instruction sequence of each path, registers only, "
             "independent accumulators (`ccq bench --ceiling`), measured in the same run:\n")
    L.append("| path | GMAC/s |\n|---|---|")
    for k in ("avx512vnni", "avx2", "scalar"):
        if k in peak:
            L.append(f"| {k} | {peak[k]:.1f} |")
    L.append("")
    for m in ("lenet", "resnet20", "mobilenet"):
        cm = [r for r in ccq if r["model"] == m]
        tm = [r for r in torch_r if r["arch"] == m]
        if not cm:
            continue
        macs = cm[0]["macs_per_image"]
        best_int8 = max((r for r in tm if r["config"].startswith("int8")), key=lambda r: r["images_per_s"], default=None)
        best_fp32 = max((r for r in tm if r["config"].startswith("fp32")), key=lambda r: r["images_per_s"], default=None)
        L.append(f"## {m} ({macs / 1e6:.2f} M MACs per image)\n")
        L.append("| engine | configuration | images/s | GMAC/s | x PyTorch int8 best | x PyTorch FP32 best | % of VNNI ceiling |")
        L.append("|---|---|---|---|---|---|---|")
        rows = [("ccq", f"w{r['wbits']}a8, {r['isa']} kernels", r["images_per_s"]) for r in cm]
        rows += [("PyTorch", r["config"] + f" (accuracy {r['accuracy']:.2f}% on 2,000 images)", r["images_per_s"]) for r in tm]
        for eng, conf, ips in rows:
            g = ips * macs * 1e-9
            xi = f"{ips / best_int8['images_per_s']:.2f}" if best_int8 else "-"
            xf = f"{ips / best_fp32['images_per_s']:.2f}" if best_fp32 else "-"
            pc = f"{100 * g / vnni:.0f}%" if vnni else "-"
            L.append(f"| {eng} | {conf} | {ips:,.0f} | {g:.1f} | {xi} | {xf} | {pc} |")
        for r in recs:
            if r.get("arch") == m and "error" in r:
                L.append(f"| PyTorch | {r['config']} | did not run: {r['error']} | | | | |")
        L.append("")
        lay = [r for r in cm if r.get("layers") and r["isa"] == "avx512vnni" and r["wbits"] == 8]
        if lay and vnni:
            L.append(f"Per-layer profile of ccq w8a8 (avx512vnni) on {m}: share of the forward time and GMAC/s "
                     "(% of the VNNI ceiling) of each node that multiplies:\n")
            L.append("| node | op | name | share of time | GMAC/s | % of ceiling |\n|---|---|---|---|---|---|")
            for l in lay[0]["layers"]:
                if l["gmacs"] > 0 or l["share"] >= 0.01:
                    pc = f"{100 * l['gmacs'] / vnni:.0f}%" if l["gmacs"] > 0 else "-"
                    L.append(f"| {l['node']} | {l['op']} | {l['name']} | {100 * l['share']:.1f}% | {l['gmacs']:.1f} | {pc} |")
            L.append("")
    notes = ""
    if os.path.exists(a.out):
        old = open(a.out).read()
        if "<!-- notes -->" in old:
            notes = old[old.index("<!-- notes -->"):]
    open(a.out, "w").write("\n".join(L) + "\n" + (notes or "<!-- notes -->\n"))


if __name__ == "__main__":
    main()
