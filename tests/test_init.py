#!/usr/bin/env python3
"""test_init.py DATA.h5 MODEL.h5: the start levels' switch, `ccq quantize --init`
and `[quant] init`.

Errors: an unknown --init value, --init without --wbits, and a bad quant.init
(in the file or through --set) stop with exit 2 (usage) and one line on
stderr naming the flag or key and the allowed values; nothing on stdout, no
output file written, an existing one untouched. Good path (2-bit, 128
calibration images): auto reports the train-split accuracy of rtn, gptq and
gptq_scale, picks the highest, and writes exactly the file that --init of
the picked kind writes; rtn is the default."""
import os
import re
import sys
import tempfile

from ccqtest import Checks, ccq_binary, run

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("init")
USAGE = 2


def expect(label, args, needles, out=None):
    t.refusal(label)
    before = open(out, "rb").read() if out and os.path.exists(out) else None
    rc, so, se = run([ccq] + args)
    lines = se.splitlines()
    t.check(f"{label}: exit code 2", rc == USAGE, f"got {rc}; stderr={se!r}")
    t.check(f"{label}: one stderr line", len(lines) == 1 and lines[0].startswith("ccq: "), repr(se))
    t.check(f"{label}: nothing on stdout", so == "", repr(so))
    for n in needles:
        t.check(f"{label}: message names '{n}'", n in se, repr(se))
    if out:
        after = open(out, "rb").read() if os.path.exists(out) else None
        t.check(f"{label}: output file as before", after == before)


with tempfile.TemporaryDirectory() as d:
    out = os.path.join(d, "out.h5")
    q = ["quantize", model, "--data", data, "--wbits", "2", "--calib", "128", "-o", out]
    expect("unknown --init", q + ["--init", "gptq2"], ["--init", "rtn, gptq, gptq_scale, gptq_asym or auto", "'gptq2'"], out)
    expect("empty --init", q + ["--init", ""], ["--init"], out)
    expect("--init without value", q + ["--init"], ["--init needs a value"], out)
    t.check("no output file was written", not os.path.exists(out))
    open(out, "wb").write(b"precious")
    expect("unknown --init, existing output", q + ["--init", "GPTQ"], ["'GPTQ'"], out)
    os.remove(out)
    expect("eval --init without --wbits", ["eval", model, "--data", data, "--float", "--init", "gptq"],
           ["--init", "--wbits"])
    ini = os.path.join(d, "s.ini")
    open(ini, "w").write(f"[model]\nmodel = {model}\ndata = {data}\n[quant]\ninit = optimal\n")
    expect("quant.init in a file", ["search", ini], [f"{ini}:5: quant.init: 'optimal' is not one of rtn, gptq, "
                                                     "gptq_scale, auto, gptq_asym"])
    open(ini, "w").write(f"[model]\nmodel = {model}\ndata = {data}\n")
    expect("quant.init by --set", ["search", ini, "--set", "quant.init=best"], ["quant.init", "'best'"])

    # good path: auto picks the most accurate on the train split and writes that start
    def quantize(init):
        p = os.path.join(d, f"{init}.h5")
        rc, so, se = run([ccq] + q[:-1] + [p] + (["--init", init] if init else []))
        t.check(f"--init {init} runs", rc == 0, se)
        return so, (open(p, "rb").read() if rc == 0 else b"")

    so, auto = quantize("auto")
    m = re.search(r"rtn ([\d.]+)%, gptq ([\d.]+)%, gptq_scale ([\d.]+)%: (\w+)", so)
    t.check("auto reports three train accuracies and its pick", m is not None, so)
    pick = m.group(4) if m else "rtn"
    if m:
        acc = dict(zip(("rtn", "gptq", "gptq_scale"), map(float, m.groups()[:3])))
        t.check("auto picks the highest train accuracy", acc[pick] == max(acc.values()), so)
        t.check("at 2 bits GPTQ beats round-to-nearest on the train split", acc["gptq"] > acc["rtn"], so)
    _, rtn = quantize("rtn")
    _, default = quantize(None)
    _, picked = quantize(pick) if pick != "rtn" else (None, rtn)
    t.check("the default is rtn", default == rtn)
    t.check("auto writes the file of its pick", auto == picked, pick)
    t.check("the pick's levels are not round-to-nearest's", pick == "rtn" or picked != rtn)
t.finish()
