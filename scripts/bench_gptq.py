#!/usr/bin/env python3
"""bench_gptq.py [--ccq BIN] [--out results/gptq.md] [--models lenet,resnet20] [--bits 2,3,4]
[--scale lenet:2,3,4 resnet20:2]: the C GPTQ (`ccq quantize --init gptq | gptq_scale`) against
scripts/gptq.py, its oracle: wall-clock time, fraction of identical levels (and scales), and the test
accuracy of both integer networks by `ccq eval`, per reference model and weight width; writes a
markdown report with the commands, the commit and the machine.

Both start from the same round-to-nearest file (`ccq quantize --wbits B`, 1024 calibration images)
and use the same 1024 images for their Hessians. gptq.py runs with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset (its best configuration here) and torch on every core; the C side runs in the
environment as it is. Runs are one after another, never two at once. The C time is the GPTQ alone
(quantize's own report; the round-to-nearest calibration before it is the same for both), gptq.py's
the whole process (its start-up is a few seconds of it; stated in the report)."""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import h5py
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--ccq", default=os.path.join(root, "build", "ccq"))
ap.add_argument("--data", default=os.path.join(root, "build", "data", "fashion-mnist.h5"))
ap.add_argument("--out", default=os.path.join(root, "results", "gptq.md"))
ap.add_argument("--work", default=os.path.join(root, "build", "bench_gptq"))
ap.add_argument("--models", default="lenet,resnet20")
ap.add_argument("--bits", default="2,3,4")
ap.add_argument("--scale", nargs="*", default=["lenet:2,3,4", "resnet20:2"],
                help="MODEL:B,.. widths at which to compare the scale search too")
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
PY = "/usr/bin/python3"
py_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}


def sh(cmd, env=None):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"bench_gptq: {' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout, dt


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def accuracy(path):
    so, _ = sh([a.ccq, "eval", path, "--data", a.data, "--json"])
    return json.loads(so)["accuracy"]


def compare(c_path, p_path):
    same = total = same_s = total_s = 0
    with h5py.File(c_path, "r") as fc, h5py.File(p_path, "r") as fp:
        for k in fp["nodes"].keys():
            g = fp["nodes"][k]
            if "levels" not in g:
                continue
            same += int((fc["nodes"][k]["levels"][...] == g["levels"][...]).sum())
            total += int(g["levels"].size)
            same_s += int((fc["nodes"][k]["wscale"][...] == g["wscale"][...]).sum())
            total_s += int(g["wscale"].size)
    return same, total, same_s, total_s


def blas_of_python():
    """The BLAS library torch loads (must be OpenBLAS's pthread build)."""
    code = "import torch; torch.ones(4, 4) @ torch.ones(4, 4); print(open('/proc/self/maps').read())"
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=py_env)
    libs = sorted({w[-1] for w in map(str.split, p.stdout.splitlines()) if len(w) >= 6 and "blas" in w[-1]})
    return ", ".join(libs)


commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
ccq_commit = subprocess.run(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(a.ccq))), "rev-parse", "--short",
                             "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
machine = f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
scale_at = {}
for spec in a.scale:
    m, bs = spec.split(":")
    scale_at[m] = [int(b) for b in bs.split(",") if b]

rows = []
for model in a.models.split(","):
    mpath = os.path.join(root, "results", "models", f"{model}.h5")
    widths = sorted(set(int(b) for b in a.bits.split(",")) | set(scale_at.get(model, [])))
    for b in widths:
        rtn = os.path.join(a.work, f"{model}_w{b}_rtn.h5")
        sh([a.ccq, "quantize", mpath, "--data", a.data, "--wbits", str(b), "-o", rtn])
        acc_rtn = accuracy(rtn)
        modes = [("gptq", [])] if b in [int(x) for x in a.bits.split(",")] else []
        if b in scale_at.get(model, []):
            modes.append(("gptq_scale", ["--scale-search"]))
        for init, flags in modes:
            c_path = os.path.join(a.work, f"{model}_w{b}_{init}_c.h5")
            p_path = os.path.join(a.work, f"{model}_w{b}_{init}_py.h5")
            load0 = loadavg()
            so, c_wall = sh([a.ccq, "quantize", mpath, "--data", a.data, "--wbits", str(b), "--init", init, "-o", c_path])
            c_gptq = float(re.search(r"\(([\d.]+) s\)", so).group(1))
            _, p_wall = sh([PY, os.path.join(here, "gptq.py"), rtn, a.data, p_path, *flags], env=py_env)
            load1 = loadavg()
            same, total, same_s, total_s = compare(c_path, p_path)
            r = dict(model=model, bits=b, init=init, c_gptq=c_gptq, c_wall=c_wall, p_wall=p_wall, same=same,
                     total=total, same_s=same_s, total_s=total_s, acc_rtn=acc_rtn, acc_c=accuracy(c_path),
                     acc_p=accuracy(p_path), load=f"{load0} / {load1}")
            rows.append(r)
            print(json.dumps(r), flush=True)

with open(a.out, "w") as f:
    f.write("# GPTQ in C against scripts/gptq.py\n\n")
    f.write("`ccq quantize MODEL --data D --wbits B --init gptq|gptq_scale` (src/gptq.c) against "
            "`scripts/gptq.py RTN.h5 D OUT.h5 [--scale-search]`, its oracle, from the same round-to-nearest file "
            "(`ccq quantize --wbits B`) with the same 1024 calibration images (the first of the train split). "
            "Test accuracy of the integer network by `ccq eval OUT.h5 --data D` (10,000 test images).\n\n")
    f.write(f"- command: `scripts/bench_gptq.py --ccq {os.path.relpath(a.ccq, root) if a.ccq.startswith(root) else a.ccq}`"
            f" (models {a.models}, widths {a.bits}, scale search at {' '.join(a.scale)})\n")
    f.write(f"- commit: ccq built from {ccq_commit}; this report written at {commit}\n")
    f.write(f"- machine: {machine}; shared with other engineers' jobs (load average before / after each "
            "pair of runs in the table)\n")
    f.write(f"- gptq.py: Debian's python3-torch, `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`, torch on "
            f"{os.cpu_count()} threads; BLAS loaded: {blas_of_python()}\n")
    f.write("- ccq: OpenBLAS/LAPACKE with one BLAS thread inside GPTQ, forward passes on "
            f"{os.environ.get('CCQ_GPTQ_THREADS', os.cpu_count())} threads; environment as it is "
            f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})\n")
    f.write("- C time: GPTQ alone (what `ccq quantize` reports; its round-to-nearest calibration before it is "
            "the same for both sides and not counted); gptq.py time: the whole process\n\n")
    f.write("| model | bits | init | identical levels | identical scales | test acc. C | test acc. gptq.py | "
            "test acc. RTN | C GPTQ s | C process s | gptq.py s | speed-up | load |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write(f"| {r['model']} | {r['bits']} | {r['init']} | {r['same']}/{r['total']} "
                f"({100.0 * r['same'] / r['total']:.3f}%) | {r['same_s']}/{r['total_s']} | {r['acc_c']:.2f}% | "
                f"{r['acc_p']:.2f}% | {r['acc_rtn']:.2f}% | {r['c_gptq']:.1f} | {r['c_wall']:.1f} | {r['p_wall']:.1f} | "
                f"{r['p_wall'] / r['c_gptq']:.0f}x | {r['load']} |\n")
print(f"bench_gptq: wrote {a.out}")
