#!/usr/bin/env python3
"""test_qnet.py DATA.h5 MODEL.h5...: the integer engine on real models.

For each float model and weight width, `ccq quantize` writes the quantized
model and `ccq eval` runs it; then:
  - a float simulation of the same quantized network (scripts/ccq_sim.py:
    same scales, same rounding) agrees on the argmax of at least 99.5% of
    the first 500 test images (the simulation, in numpy, is most of this
    test's time);
  - the int32 logits are identical for every kernel ISA the CPU has and for
    micro-batch sizes 1, 7 and 64 (and so for any batch composition);
  - a quantized model file evaluates to the same logits as quantizing in
    memory (eval --wbits)."""
import json
import os
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import ccq_sim  # noqa: E402

data, models = sys.argv[1], sys.argv[2:]
ccq = ccq_binary()
t = Checks("qnet")
N = 1000
N_SIM = 500
with h5py.File(data, "r") as f:
    images = f["test/images"][:N_SIM]


def ccq_logits(args, env=None, n=N):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "l.h5")
        e = dict(os.environ, **(env or {}))
        rc, so, se = run([ccq, "eval"] + args + ["--data", data, "--limit", str(n), "--json", "--save-logits", out],
                         env=e)
        if rc != 0:
            t.check(f"eval {args} {env}", False, se)
            return None, None
        with h5py.File(out, "r") as f:
            return f["logits_int"][...], json.loads(so)


isas = [i for i in ("scalar", "avx2", "avx512vnni")]
for mpath in models:
    name = os.path.basename(mpath)
    for bits, fl8 in ((8, False), (4, False), (2, True)):
        label = f"{name} w{bits}a8{' first/last 8' if fl8 else ''}"
        with tempfile.TemporaryDirectory() as d:
            qpath = os.path.join(d, "q.h5")
            rc, so, se = run([ccq, "quantize", mpath, "--data", data, "--wbits", str(bits), "-o", qpath]
                             + (["--first-last-8"] if fl8 else []))
            t.check(f"{label}: quantize", rc == 0, se)
            ref, info = ccq_logits([qpath])
            if ref is None:
                continue
            sim = ccq_sim.run(ccq_sim.load(qpath), images)
            agree = (sim.argmax(1) == ref[:N_SIM].argmax(1)).mean() * 100
            print(f"{label}: simulation agrees on {agree:.1f}% of {N_SIM} argmaxes; engine accuracy {info['accuracy']:.2f}%")
            t.check(f"{label}: simulation agreement >= 99.5%", agree >= 99.5, f"{agree:.2f}%")
            mem, _ = ccq_logits([mpath, "--wbits", str(bits)] + (["--first-last-8"] if fl8 else []))
            t.check(f"{label}: file and in-memory quantization agree", mem is not None and np.array_equal(mem, ref))
            for isa in isas:
                for mb in ((1, 7, 64) if isa == "scalar" else (64,)):
                    rc, so, se = run([ccq, "eval", qpath, "--data", data, "--limit", "1"], env=dict(os.environ, CCQ_ISA=isa))
                    if rc != 0 and "does not support" in se:
                        print(f"{label}: {isa} not supported here, skipped")
                        break
                    # 250 images: every micro-batch size leaves a ragged last chunk
                    got, _ = ccq_logits([qpath, "--mb", str(mb)], env={"CCQ_ISA": isa}, n=250)
                    t.check(f"{label}: {isa} mb={mb} bit-identical", got is not None and np.array_equal(got, ref[:250]))
t.finish()
