#!/usr/bin/env python3
"""test_ckpt.py FIXDIR: damaged checkpoints are refused before the search starts.

A short search on the tiny fixtures (tiny.h5, tiny_data.h5; 2-bit weights,
radius 1) writes a real checkpoint; each case edits one thing in a copy with
h5py and resumes from it: `ccq search --resume` must exit 4 with one line on
stderr naming the file and the problem, and leave the log untouched. The
unedited copy must resume (exit 0). What ckpt_read checks from the file alone
(src/ckpt.c): counters (against each other and the snapshot's lambda), the configuration snapshot, the EDA width, levels
within the snapshot's bit width, every EDA row (sum, no mass outside the
grid), the start's kind and scales.
"""
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run

fix = sys.argv[1]
ccq = ccq_binary()
t = Checks("ckpt")

CONFIG = """[model]
model = {fix}/tiny.h5
data = {fix}/tiny_data.h5
[quant]
wbits = 2
calib_images = 6
[search]
seed = 3
lambda = 4
mu = 2
batch = 4
confirm_batch = 0
val_images = 2
[run]
output = {d}/out.h5
log = {d}/log.jsonl
checkpoint = {d}/ckpt.h5
checkpoint_every = 2
budget = {budget}
"""


def attr(name, value):
    def edit(f):
        old = f.attrs[name]
        f.attrs.modify(name, np.asarray(value, dtype=np.asarray(old).dtype))
    return edit


def attr_str(name, value):
    def edit(f):
        del f.attrs[name]
        f.attrs[name] = np.bytes_(value)
    return edit


def data(name, fn):
    def edit(f):
        a = f[name][...]
        fn(a)
        f[name][...] = a
    return edit


def replace(name, arr):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=arr)
    return edit


def zero_row(p):
    p[0:3] = 0


def outside_grid(p):
    """Mass on a level outside +-1 (2 bits): the row of a weight whose base is 1 gets its top candidate."""
    i = int(np.flatnonzero(base == 1)[0])
    p[3 * i:3 * i + 3] = [0, 32768, 32768]


def add_centre(p):
    p[1] += 1  # the centre candidate of row 0 (radius 1), always on the grid


def set_first(v):
    def fn(a):
        a[0] = v
    return fn


with tempfile.TemporaryDirectory() as root:
    ref = os.path.join(root, "ref")
    os.makedirs(ref)
    cfg = os.path.join(ref, "search.ini")
    open(cfg, "w").write(CONFIG.format(fix=fix, d=ref, budget=40))
    rc, so, se = run([ccq, "search", cfg])
    t.check("the reference search runs", rc == 0, se)
    good = open(os.path.join(ref, "ckpt.h5"), "rb").read()
    with h5py.File(os.path.join(ref, "ckpt.h5"), "r") as f:
        base = f["eda_base"][...]
    t.check("the fixture has a weight at the top level (for the grid case)", (base == 1).any(), str(base))

    cases = [
        ("an EDA row of zeros", data("eda_p", zero_row), "EDA row 0 sums to 0"),
        ("an EDA row summing to more than one", data("eda_p", add_centre), "EDA row 0 sums to 65537"),
        ("EDA mass outside the 2-bit grid", data("eda_p", outside_grid), "outside -1..1"),
        ("a negative evaluation count", attr("evaluations", -5), "evaluations -5"),
        ("more accepted changes than generations", attr("accepted", 10 ** 9), "accepted 1000000000 in"),
        ("evaluations beyond any budget", attr("evaluations", 2 ** 50), "more than any budget"),
        ("generations the evaluations cannot hold", attr("generation", 10 ** 6), "generation 1000000 needs"),
        ("a layer cursor past the weights", attr("layer_cursor", 10 ** 6), "layer cursor 1000000: there are"),
        ("a negative generation", attr("generation", -1), "generation -1"),
        ("a negative log position", attr("log_bytes", -1), "log position -1"),
        ("a negative layer cursor", attr("layer_cursor", -2), "layer cursor -2"),
        ("an even EDA width", attr("eda_width", 4), "eda_width 4"),
        ("an EDA width above the largest radius", attr("eda_width", 9), "eda_width 9"),
        ("an EDA width not the snapshot's radius", attr("eda_width", 5), "search.radius 1 needs 3"),
        ("a level outside the bit width", data("levels", set_first(100)), "level 100 of weight 0"),
        ("a best level outside the bit width", data("best_levels", set_first(-128)), "best level -128"),
        ("an EDA base level outside the bit width", data("eda_base", set_first(5)), "EDA base level 5"),
        ("a NaN start weight scale", data("start_wscale", set_first(np.nan)), "start weight scale 0 is nan"),
        ("an infinite start activation scale", data("start_act_scale", set_first(np.inf)),
         "start activation scale 0 is inf"),
        ("a zero start weight scale", data("start_wscale", set_first(0)), "start weight scale 0 is 0"),
        ("an unknown start", attr_str("start", b"bogus"), "start 'bogus'"),
        ("a configuration snapshot that does not parse", attr_str("config", b"[search]\nlambda = x\n"),
         "its configuration"),
        ("no levels", replace("levels", np.zeros(0, np.int8)), "levels"),
        ("levels of rank 2", replace("levels", np.zeros((2, 2), np.int8)), "not one-dimensional"),
        ("no start scales", replace("start_wscale", np.zeros(0, np.float32)), "start scales"),
    ]
    for i, (label, edit, want) in enumerate(cases):
        t.refusal(label)
        d = os.path.join(root, f"c{i}")
        os.makedirs(d)
        shutil.copy(os.path.join(ref, "log.jsonl"), d)
        c = os.path.join(d, "search.ini")
        open(c, "w").write(CONFIG.format(fix=fix, d=d, budget=80))
        ck = os.path.join(d, "ckpt.h5")
        open(ck, "wb").write(good)
        # h5py writes attributes in place (the file's version and layout unchanged)
        with h5py.File(ck, "r+") as f:
            edit(f)
        log_before = open(os.path.join(d, "log.jsonl"), "rb").read()
        rc, so, se = run([ccq, "search", c, "--resume", ck], timeout=120)
        lines = se.strip().splitlines()
        t.check(f"{label}: exit 4, one line naming the file and '{want}'",
                rc == 4 and len(lines) == 1 and ck in lines[0] and want in lines[0], f"rc {rc}: {se.strip()}")
        t.check(f"{label}: log untouched", open(os.path.join(d, "log.jsonl"), "rb").read() == log_before)

    # the unedited checkpoint resumes
    d = os.path.join(root, "ok")
    os.makedirs(d)
    shutil.copy(os.path.join(ref, "log.jsonl"), d)
    c = os.path.join(d, "search.ini")
    open(c, "w").write(CONFIG.format(fix=fix, d=d, budget=80))
    open(os.path.join(d, "ckpt.h5"), "wb").write(good)
    rc, so, se = run([ccq, "search", c, "--resume", os.path.join(d, "ckpt.h5")], timeout=120)
    t.check("the unedited checkpoint resumes", rc == 0, se)

t.finish()
