#!/usr/bin/env python3
"""export_footprint.py [OUT.md]: footprint of `ccq export --format c` for the reference models.

For lenet and ResNet-20 at 2, 3, 4 and 8-bit weights (all layers; `ccq quantize --calib 64`:
sizes do not depend on the calibration) it exports the C code and records what the export prints
(levels packed at their width, other constants, the activation arena and scratch) against the
FP32 weights and the float model file, then compiles the code for 32-bit ARM
(arm-linux-gnueabihf-gcc -std=c99 -c, -O2 and -Os, default and NET_FAST) and reads the object's
sizes with arm-linux-gnueabihf-size: text (code and const arrays: flash) and bss (the arena and
scratch: RAM), so the code's own size is measured, not estimated. Writes results/export.md."""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CCQ = os.path.join(ROOT, "build", "ccq")
DATA = os.path.join(ROOT, "build", "data", "fashion-mnist.h5")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "results", "export.md")


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"export_footprint: {' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


def arm_size(src, inc, flags):
    obj = src + ".o"
    sh(["arm-linux-gnueabihf-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", *flags, "-I", inc, "-c",
        src, "-o", obj])
    text, data, bss = (int(v) for v in sh(["arm-linux-gnueabihf-size", obj]).splitlines()[1].split()[:3])
    return text + data, bss


rows = []
with tempfile.TemporaryDirectory() as work:
    for arch in ("lenet", "resnet20"):
        fp32 = os.path.join(ROOT, "results", "models", f"{arch}.h5")
        for bits in (8, 4, 3, 2):
            q = os.path.join(work, f"{arch}_w{bits}.h5")
            sh([CCQ, "quantize", fp32, "--data", DATA, "--wbits", str(bits), "--calib", "64", "-o", q])
            out = os.path.join(work, f"{arch}_w{bits}")
            so = sh([CCQ, "export", q, "--format", "c", out, "--name", "net"])
            num = lambda pat: int(re.search(pat, so).group(1))  # noqa: E731
            r = {"arch": arch, "bits": bits, "fp32_file": os.path.getsize(fp32),
                 "weights": num(r"\((\d+) weights"), "levels": num(r"levels (\d+) \("),
                 "consts": num(r"constants (\d+)"), "arena": num(r"activation arena (\d+)"),
                 "naive": num(r"\((\d+) without reuse\)"), "scratch": num(r"scratch (\d+)\n"),
                 "fast_flash": num(r"_FAST: flash (\d+)")}
            src = os.path.join(out, "net.c")
            r["o2"] = arm_size(src, out, ["-O2"])
            r["os"] = arm_size(src, out, ["-Os"])
            r["o2_fast"] = arm_size(src, out, ["-O2", "-DNET_FAST"])
            rows.append(r)
            print(f"{arch} w{bits}: {so.splitlines()[1]}", flush=True)

commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
gcc = sh(["arm-linux-gnueabihf-gcc", "--version"]).splitlines()[0]
L = ["# Footprint of the C export", "",
     f"Measured by `scripts/export_footprint.py` at commit {commit} on {cpu} (Debian 12; {gcc}).", "",
     "Each model quantized with `ccq quantize MODEL --data build/data/fashion-mnist.h5 --wbits B --calib 64`",
     "(every layer at B bits), exported with `ccq export Q.h5 --format c DIR --name net`. Levels: the",
     "conv/linear levels packed at B bits each (what the export prints); FP32: the same weights as float32;",
     "constants: biases, multipliers, shifts, batchnorm and act tables. ARM: the generated `net.c`",
     "compiled for 32-bit ARM (`arm-linux-gnueabihf-gcc -std=c99 -c`), `arm-linux-gnueabihf-size`: flash =",
     "text + data (code, descriptors and every const array), RAM = bss (the activation arena and the",
     "unpacking scratch). NET_FAST stores the levels one byte each (flash) and needs no scratch.", "",
     "| model | bits | weights | levels B | vs FP32 weights | FP32 file B | constants B | arena B (no reuse) "
     "| scratch B | ARM -O2 flash / RAM | ARM -Os flash | ARM -O2 NET_FAST flash / RAM |",
     "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    L.append(f"| {r['arch']} | {r['bits']} | {r['weights']:,} | {r['levels']:,} | "
             f"{r['levels'] / (4 * r['weights']):.3f} of {4 * r['weights']:,} | {r['fp32_file']:,} | {r['consts']:,} | "
             f"{r['arena']:,} ({r['naive']:,}) | {r['scratch']:,} | {r['o2'][0]:,} / {r['o2'][1]:,} | {r['os'][0]:,} | "
             f"{r['o2_fast'][0]:,} / {r['o2_fast'][1]:,} |")
code = [r["o2"][0] - r["levels"] - r["consts"] for r in rows]
L += ["", f"Code and descriptors (ARM -O2 flash minus levels and constants): {min(code):,} to {max(code):,} bytes.",
      "The levels take exactly ceil(weights x bits / 8) bytes per layer: 2-bit weights are 1/16 of their",
      "FP32 size, 3-bit 3/32, 4-bit 1/8, 8-bit 1/4. Arena: the activations alive at the same time under the",
      "export's liveness plan (a buffer is reused once its tensor's last reader has run); in parentheses,",
      "every tensor in a buffer of its own."]
# keep the ONNX section scripts/bench_onnx.py writes after these tables
old = open(OUT).read() if os.path.exists(OUT) else ""
keep = "\n" + old[old.index("<!-- onnx: bench_onnx.py -->"):] if "<!-- onnx: bench_onnx.py -->" in old else ""
open(OUT, "w").write("\n".join(L) + "\n" + keep)
print(f"wrote {OUT}")
