#!/usr/bin/env python3
"""test_cli.py FIXTURE_DIR: bad input to the ccq binary never crashes: one
line on stderr naming the file and the problem, the documented exit code,
nothing on stdout, no output file left behind or damaged. Also the good path
of eval (text, --json, --save-logits against PyTorch's logits)."""
import json
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run

fx = sys.argv[1]
ccq = ccq_binary()
t = Checks("cli")
F = lambda n: os.path.join(fx, n)  # noqa: E731
USAGE, IO, FORMAT, MISMATCH = 2, 3, 4, 5


def expect(label, args, code, needles):
    t.refusal(label)
    rc, out, err = run([ccq] + args)
    lines = err.splitlines()
    t.check(f"{label}: exit code", rc == code, f"got {rc}, want {code}; stderr={err!r}")
    t.check(f"{label}: one stderr line", len(lines) == 1 and lines[0].startswith("ccq: "), repr(err))
    t.check(f"{label}: nothing on stdout", out == "", repr(out))
    for n in needles:
        t.check(f"{label}: message names '{n}'", n in err, repr(err))


tiny, data = F("tiny.h5"), F("tiny_data.h5")
ev = lambda m, d=data, *rest: ["eval", m, "--data", d, "--float", *rest]  # noqa: E731

# usage errors
expect("no subcommand", [], USAGE, ["missing subcommand"])
expect("unknown subcommand", ["frobnicate"], USAGE, ["unknown subcommand 'frobnicate'"])
expect("unknown flag", ev(tiny) + ["--fast"], USAGE, ["unknown flag '--fast'"])
expect("flag without value", ["eval", tiny, "--float", "--data"], USAGE, ["--data needs a value"])
expect("bad --limit", ev(tiny) + ["--limit", "ten"], USAGE, ["--limit", "'ten'"])
expect("zero --limit", ev(tiny) + ["--limit", "0"], USAGE, ["--limit"])
expect("bad --split", ev(tiny) + ["--split", "val"], USAGE, ["--split", "'val'"])
expect("missing --float", ["eval", tiny, "--data", data], USAGE, ["--float"])
expect("missing model", ["eval", "--data", data, "--float"], USAGE, ["missing MODEL.h5"])
expect("inspect extra arg", ["inspect", tiny, tiny], USAGE, ["unexpected argument"])

# file errors, through eval and inspect
for sub in ("eval", "inspect"):
    mk = (lambda m: ev(m)) if sub == "eval" else (lambda m: ["inspect", m])
    expect(f"{sub} missing file", mk(F("nope.h5")), IO, [F("nope.h5"), "no such file"])
    expect(f"{sub} directory", mk(fx), IO, [fx, "is a directory"])
    expect(f"{sub} not hdf5", mk(F("not_hdf5.h5")), FORMAT, ["not_hdf5.h5", "not an HDF5 file"])
    expect(f"{sub} truncated", mk(F("truncated.h5")), FORMAT, ["truncated.h5", "truncated or damaged"])
    expect(f"{sub} nan weight", mk(F("bad_nan.h5")), FORMAT, ["bad_nan.h5", "non-finite"])
    expect(f"{sub} wrong shape", mk(F("bad_shape.h5")), FORMAT, ["bad_shape.h5", "stored shape"])
    expect(f"{sub} weight dims", mk(F("bad_weight_dims.h5")), FORMAT, ["expected shape [3,8], found [3,9]"])
    expect(f"{sub} foreign hdf5", mk(F("foreign.h5")), FORMAT, ["foreign.h5", "not a ccq"])
expect("eval data file as model", ev(data), FORMAT, ["not a ccq model file"])
# damaged variable-length strings on which HDF5 1.10 itself hangs or faults (found by fuzz.sh): the
# watchdog around that read ends with one line and exit 4 (the hang after its 10 s)
HD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz", "hdf5", "model")
expect("HDF5 faults on a damaged string", ["inspect", os.path.join(HD, "vlen_string_segv.h5")], FORMAT,
       ["vlen_string_segv.h5", "/format", "HDF5 failed or hung"])
expect("HDF5 hangs on a damaged string", ["inspect", os.path.join(HD, "vlen_string_hang.h5")], FORMAT,
       ["vlen_string_hang.h5", "/format", "HDF5 failed or hung"])

expect("eval model as data", ev(tiny, tiny), FORMAT, ["not a ccq data file"])
expect("eval missing data", ev(tiny, F("nodata.h5")), IO, ["nodata.h5", "no such file"])
expect("eval truncated data", ev(tiny, F("truncated.h5")), FORMAT, ["truncated or damaged"])
expect("eval data mismatch", ev(tiny, F("data_5x5.h5")), MISMATCH, ["data_5x5.h5", "1x5x5", "expects 1x4x4"])
expect("eval absurd data header", ev(tiny, F("data_huge.h5")), 6, ["data_huge.h5", "does not fit in memory"])
expect("eval bad label", ev(tiny, F("data_badlabel.h5"), "--split", "train"), FORMAT, ["labels[1] = 3"])

# quantization and the integer engine
qv = lambda m, d=data, *rest: ["eval", m, "--data", d, *rest]  # noqa: E731
expect("wbits too large", qv(tiny, data, "--wbits", "9"), USAGE, ["--wbits", "'9'"])
expect("wbits too small", qv(tiny, data, "--wbits", "1"), USAGE, ["--wbits"])
expect("abits not 8", qv(tiny, data, "--wbits", "4", "--abits", "4"), USAGE, ["--abits"])
expect("float model without mode", qv(tiny), USAGE, ["give --float or --wbits"])
expect("float and wbits", qv(tiny, data, "--float", "--wbits", "4"), USAGE, ["exclude"])
expect("bad percentile", qv(tiny, data, "--wbits", "4", "--percentile", "100"), USAGE, ["--percentile"])
expect("bad act rule", qv(tiny, data, "--wbits", "4", "--act-rule", "mean"), USAGE, ["--act-rule"])
expect("cannot calibrate", qv(F("bad_overflow.h5"), data, "--wbits", "8"), FORMAT,
       ["bad_overflow.h5", "non-finite activation", "cannot be calibrated"])
expect("accumulator overflow", qv(F("bigk.h5"), F("data_190.h5"), "--wbits", "8"), 6,
       ["bigk.h5", "overflow int32 accumulators", "K = 36100"])
rc, so, se = run([ccq] + qv(F("bigk.h5"), F("data_190.h5"), "--wbits", "4", "--json"))
t.check("the same wide layer fits at 4 bits", rc == 0, se)
expect("wbits data mismatch", qv(tiny, F("data_5x5.h5"), "--wbits", "4"), MISMATCH, ["data_5x5.h5"])
rc, so, se = run([ccq] + qv(tiny, data, "--wbits", "4"), env=dict(os.environ, CCQ_ISA="mmx"))
t.check("unknown CCQ_ISA", rc == USAGE and se.strip().count("\n") == 0 and "CCQ_ISA=mmx: unknown" in se, se)
expect("quantize without -o", ["quantize", tiny, "--data", data, "--wbits", "4"], USAGE, ["missing -o"])
expect("quantize without wbits", ["quantize", tiny, "--data", data, "-o", "x.h5"], USAGE, ["missing --wbits"])

with tempfile.TemporaryDirectory() as d:
    q4 = os.path.join(d, "q4.h5")
    rc, so, se = run([ccq, "quantize", tiny, "--data", data, "--wbits", "4", "-o", q4])
    t.check("quantize tiny", rc == 0, se)
    expect("eval --wbits on a quantized model", qv(q4, data, "--wbits", "4"), USAGE, ["already quantized"])
    expect("quantize a quantized model", ["quantize", q4, "--data", data, "--wbits", "4", "-o", q4 + "x"], USAGE,
           ["already quantized"])
    bad = os.path.join(d, "bad_levels.h5")
    shutil.copy(q4, bad)
    with h5py.File(bad, "r+") as f:
        lv = f["nodes/0000/levels"][...]
        lv[0, 0, 0, 0] = 100
        f["nodes/0000/levels"][...] = lv
    expect("level outside the bit width", qv(bad), FORMAT, ["bad_levels.h5", "level 100", "outside +-7 for 4 bits"])
    shutil.copy(q4, bad)
    with h5py.File(bad, "r+") as f:
        f["nodes/0001"].attrs["act_zp"] = np.int32(300)
    expect("zero point out of range", qv(bad), FORMAT, ["act_zp = 300"])
    rc, so, se = run([ccq] + qv(q4, data, "--json"))
    t.check("quantized file evaluates", rc == 0 and json.loads(so)["mode"] == "integer", so + se)

    # learned levels (a codebook per output channel): a valid one evaluates exactly as the same
    # levels on the uniform grid; each broken variant is one clear line
    q2 = os.path.join(d, "q2.h5")
    rc, so, se = run([ccq, "quantize", tiny, "--data", data, "--wbits", "2", "-o", q2])
    t.check("quantize tiny at 2 bits", rc == 0, se)
    cb = os.path.join(d, "cb.h5")

    def with_codebook(dst, edit=None, node="0000"):
        shutil.copy(q2, dst)
        with h5py.File(dst, "r+") as f:
            for name in f["nodes"]:
                g = f["nodes"][name]
                if "levels" in g:
                    book = np.tile(np.array([-1, 0, 1, 5], np.int8), (g["levels"].shape[0], 1))
                    g.create_dataset("codebook", data=book)
            if edit:
                edit(f["nodes"][node])

    with_codebook(cb)
    rc, so, se = run([ccq, "inspect", cb])
    t.check("inspect marks the learned layers", rc == 0 and " w2 learned" in so, so + se)
    rc1, so1, _ = run([ccq] + qv(q2, data, "--json", "--save-logits", os.path.join(d, "l_uniform.h5")))
    rc2, so2, se2 = run([ccq] + qv(cb, data, "--json", "--save-logits", os.path.join(d, "l_codebook.h5")))
    t.check("a codebook file evaluates", rc1 == 0 and rc2 == 0, se2)
    if rc1 == 0 and rc2 == 0:
        with h5py.File(os.path.join(d, "l_uniform.h5")) as a, h5py.File(os.path.join(d, "l_codebook.h5")) as b:
            t.check("codebook holding the same levels: the same logits", np.array_equal(a["logits"][...], b["logits"][...]))

    def set_cb(row):
        def edit(g):
            book = g["codebook"][...]
            book[0] = row
            g["codebook"][...] = book
        return edit

    def set_level(v):
        def edit(g):
            lv = g["levels"][...]
            lv.flat[0] = v
            g["levels"][...] = lv
        return edit

    def wrong_shape(g):
        book = g["codebook"][...]
        del g["codebook"]
        g.create_dataset("codebook", data=book[:, :3])

    def wide(g):
        g.attrs["bits"] = np.int32(8)
        del g["codebook"]
        g.create_dataset("codebook", data=np.tile(np.arange(-128, 128, dtype=np.int16).clip(-127, 127).astype(np.int8),
                                                  (g["levels"].shape[0], 1)))

    for label, edit, needles in [
        ("codebook not increasing", set_cb([-1, 1, 0, 5]), ["codebook[0] is not strictly increasing at entry 2"]),
        ("codebook with a repeated entry", set_cb([-1, 0, 0, 5]), ["codebook[0] is not strictly increasing at entry 2"]),
        ("codebook entry -128", set_cb([-128, 0, 1, 5]), ["codebook[0][0] = -128 is outside +-127"]),
        ("level not in its codebook", set_level(3), ["level 3 at element 0 is not in channel 0's codebook"]),
        ("codebook of the wrong shape", wrong_shape, ["codebook", "expected shape"]),
        ("codebook at 8 bits", wide, ["a codebook needs 2 to 4 bits, not 8"]),
    ]:
        with_codebook(bad, edit)
        expect(label, qv(bad), FORMAT, ["bad_levels.h5"] + needles)

# outputs: never partial, never clobbered by a failing run
with tempfile.TemporaryDirectory() as d:
    out = os.path.join(d, "logits.h5")
    expect("save-logits missing dir", ev(tiny) + ["--save-logits", os.path.join(d, "no", "x.h5")], IO, ["x.h5"])
    t.check("no stray files after failed write", os.listdir(d) == [], str(os.listdir(d)))
    # aliasing: an output that is an input (by name, .., symbolic or hard link) is refused before any work
    mcopy = os.path.join(d, "m.h5")
    shutil.copy(tiny, mcopy)
    mbytes = open(mcopy, "rb").read()
    os.symlink(mcopy, os.path.join(d, "sym.h5"))
    os.link(mcopy, os.path.join(d, "hard.h5"))
    os.mkfifo(os.path.join(d, "fifo"))
    Q = lambda *r: ["quantize", mcopy, "--data", data, "--wbits", "4", *r]  # noqa: E731
    expect("quantize -o the model", Q("-o", mcopy), USAGE, ["-o would overwrite MODEL.h5"])
    expect("quantize -o the model via ..", Q("-o", os.path.join(d, "..", os.path.basename(d), "m.h5")), USAGE,
           ["-o would overwrite MODEL.h5"])
    expect("quantize -o a symbolic link to the model", Q("-o", os.path.join(d, "sym.h5")), USAGE,
           ["-o would overwrite MODEL.h5"])
    expect("quantize -o a hard link to the model", Q("-o", os.path.join(d, "hard.h5")), USAGE,
           ["-o would overwrite MODEL.h5"])
    expect("quantize -o the data", Q("-o", data), USAGE, ["-o would overwrite --data"])
    expect("quantize -o a directory", Q("-o", d), IO, ["-o is a directory"])
    expect("quantize -o a FIFO", Q("-o", os.path.join(d, "fifo")), IO, ["-o is not a regular file"])
    expect("save-logits the data", ev(mcopy) + ["--save-logits", data], USAGE, ["--save-logits would overwrite --data"])
    expect("save-logits the model", ev(mcopy) + ["--save-logits", os.path.join(d, "hard.h5")], USAGE,
           ["--save-logits would overwrite MODEL.h5"])
    expect("model is a FIFO", ev(os.path.join(d, "fifo")), IO, ["fifo", "not a regular file"])
    expect("data is a FIFO", ev(mcopy, os.path.join(d, "fifo")), IO, ["fifo", "not a regular file"])
    t.check("the model survives every refusal", open(mcopy, "rb").read() == mbytes)
    for n in ("m.h5", "sym.h5", "hard.h5", "fifo"):
        os.unlink(os.path.join(d, n))
    shutil.copy(F("tiny_expected.h5"), out)
    before = open(out, "rb").read()
    expect("failing run keeps existing output", ev(tiny, F("data_5x5.h5")) + ["--save-logits", out], MISMATCH, [])
    t.check("existing output untouched", open(out, "rb").read() == before)

    # good path
    rc, so, se = run([ccq] + ev(tiny) + ["--json", "--save-logits", out])
    t.check("eval ok", rc == 0 and se == "", f"rc={rc} stderr={se!r}")
    r = json.loads(so)
    with h5py.File(F("tiny_expected.h5"), "r") as f:
        want = f["logits"][...]
    with h5py.File(F("tiny_data.h5"), "r") as f:
        labels = f["test/labels"][...]
    with h5py.File(out, "r") as f:
        got = f["logits"][...]
    t.check("saved logits match torch", got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-6),
            f"{got} vs {want}")
    t.check("json fields", r["images"] == 4 and r["mode"] == "float" and r["split"] == "test", so)
    t.check("json accuracy", r["correct"] == int((want.argmax(1) == labels).sum()), so)
    t.check("no temp files left", sorted(os.listdir(d)) == ["logits.h5"], str(os.listdir(d)))
    rc, so, se = run([ccq] + ev(tiny) + ["--limit", "2", "--split", "train"])
    t.check("text output", rc == 0 and "accuracy" in so and "2 images" in so, so + se)
    rc, so, se = run([ccq, "inspect", tiny])
    t.check("inspect model", rc == 0 and "55 parameters" in so and "312 MACs" in so, so + se)
    rc, so, se = run([ccq, "inspect", data])
    t.check("inspect data", rc == 0 and "train" in so and "6 images" in so and "4 images" in so, so + se)
    rc, so, se = run([ccq, "help"])
    t.check("help", rc == 0 and "usage: ccq" in so, so)
t.finish()
