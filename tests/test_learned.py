#!/usr/bin/env python3
"""test_learned.py DATA.h5 LENET.h5: the search over learned levels (quant.levels = learned: a
codebook of 2^bits int8 values per output channel, the search moving each weight's code).

A small 2-bit lenet search from the learned start (the first and last layers at 8 bits on the
uniform grid, so one genome holds codes and levels) must give a bit-identical model, log and
checkpoint on 1, 2, 3 and 4 ranks and with incremental evaluation off; stopped with SIGTERM and
resumed on another rank count it ends identical (and the same with search.codebook, the codebook
entries searched too, whose output codebooks must stay valid); the output keeps the start's codebooks (the
search moves codes, not codebook values), every level lies in its channel's codebook, four
distinct values per channel, and `ccq eval` of it gives the test accuracy the search printed.
The start (GPTQ with the codebooks) is the checkpoint's: resuming never recomputes it. A
checkpoint of a uniform search is refused by a learned one."""
import json
import os
import re
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run, search_ini, stop_after_checkpoint

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("learned")
MPI = ["mpirun", "--oversubscribe", "-np"]
LEARNED = {"levels": "learned", "init": "gptq"}


def setup(d, budget=240, **quant):
    return search_ini(d, model, data, quant=dict(LEARNED, **quant), run={"budget": budget},
                      search={"group": "layer_confidence", "accept_z": 0.5})


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")}


def search(cfg, np_=1, extra=()):
    return run(([ccq] if np_ == 1 else MPI + [str(np_), ccq]) + ["search", cfg, *extra])


def books(path):
    """{node: (bits, codebook or None, levels)} of a quantized model file."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in sorted(f["nodes"]):
            g = f["nodes"][name]
            if "levels" in g:
                out[name] = (int(g.attrs["bits"]), g["codebook"][...] if "codebook" in g else None, g["levels"][...])
    return out


with tempfile.TemporaryDirectory() as root:
    ref = os.path.join(root, "ref")
    rc, so_ref, se = search(setup(ref))
    t.check("learned search runs", rc == 0, se[-2000:])
    base = files(ref)
    recs = [json.loads(x) for x in base["log.jsonl"].decode().splitlines()]
    t.check("some changes were accepted", recs and recs[-1]["accepted_total"] > 0, str(recs[-1:]))

    out = books(os.path.join(ref, "out.h5"))
    learned = [n for n, (b, cb, lv) in out.items() if cb is not None]
    uniform = [n for n, (b, cb, lv) in out.items() if cb is None]
    t.check("the 2-bit layers carry codebooks, the 8-bit first and last do not",
            len(learned) >= 1 and len(uniform) == 2 and all(out[n][0] == 2 for n in learned)
            and all(out[n][0] == 8 for n in uniform), f"{learned} {uniform}")
    ok_member = ok_four = True
    for n in learned:
        bits, cb, lv = out[n]
        per = lv.reshape(lv.shape[0], -1)
        ok_four &= cb.shape == (lv.shape[0], 4) and bool((np.diff(cb.astype(int), axis=1) > 0).all())
        ok_member &= all(np.isin(per[o], cb[o]).all() for o in range(per.shape[0]))
    t.check("four strictly increasing values per channel", ok_four)
    t.check("every level in its channel's codebook", ok_member)

    # the start: what the checkpoint's start holds is the quantize command's learned GPTQ model
    q = os.path.join(root, "start.h5")
    rc, so, se = run([ccq, "quantize", model, "--data", data, "--wbits", "2", "--first-last-8", "--calib",
                      "256", "--levels", "learned", "--init", "gptq", "-o", q])
    t.check("ccq quantize --levels learned", rc == 0, se[-800:])
    if rc == 0:
        start = books(q)
        t.check("the search keeps the start's codebooks (it moves codes only)",
                all(np.array_equal(start[n][1], out[n][1]) for n in learned))
        with h5py.File(os.path.join(ref, "ckpt.h5"), "r") as f:
            moved = int((f["levels"][...] != f["eda_base"][...]).sum())
            t.check("the context moved some codes away from the start", moved > 0, str(moved))
            t.check("the checkpoint holds the start's codebooks",
                    np.array_equal(f["start_codebook"][...], np.concatenate([start[n][1].ravel() for n in learned])))

    # ccq eval reads the output and agrees with the search's own test figure
    rc, so, se = run([ccq, "eval", os.path.join(ref, "out.h5"), "--data", data, "--json"])
    m = re.search(r"searched ([0-9.]+)%", so_ref)
    t.check("ccq eval of the learned output: the test accuracy the search printed",
            rc == 0 and m and abs(json.loads(so)["accuracy"] - float(m.group(1))) < 0.006, so + se[-500:])

    for np_, extra in ((2, []), (3, ["--set", "run.incremental=false"]), (4, [])):
        d = os.path.join(root, f"np{np_}")
        rc, so, se = search(setup(d), np_, extra)
        t.check(f"{np_} ranks {' '.join(extra)} runs", rc == 0, se[-2000:])
        got = files(d)
        for n in base:
            t.check(f"{np_} ranks {' '.join(extra)}: {n} bit-identical to 1 rank", got[n] == base[n])

    # SIGTERM after the first checkpoint, resume on 2 ranks: identical
    d = os.path.join(root, "term")
    cfg = setup(d)
    rc_t, err = stop_after_checkpoint([ccq, "search", cfg], os.path.join(d, "ckpt.h5"))
    t.check("SIGTERM: exit 7", rc_t == 7, f"rc={rc_t} {err[-300:]}")
    rc, so, se = search(cfg, 2, ["--resume", os.path.join(d, "ckpt.h5")])
    t.check("resume on 2 ranks", rc == 0 and "from the checkpoint" in so, se[-2000:])
    got = files(d)
    for n in base:
        t.check(f"stopped and resumed: {n} identical", got[n] == base[n])

    # search.codebook: the codebook entries are variables too (units of their own): 1 rank against 3
    # with incremental evaluation off, and stopped by SIGTERM then resumed on 2 ranks: identical
    cbr = {}
    for name, np_, extra in (("cb1", 1, []), ("cb3", 3, ["--set", "run.incremental=false"])):
        d = os.path.join(root, name)
        rc, so, se = search(setup(d, budget=400), np_, ["--set", "search.codebook=true"] + extra)
        t.check(f"codebook search on {np_} ranks runs", rc == 0, se[-2000:])
        cbr[name] = files(d)
    for n in cbr["cb1"]:
        t.check(f"codebook search: {n} identical on 1 and 3 ranks (incremental off)", cbr["cb3"][n] == cbr["cb1"][n])
    with h5py.File(os.path.join(root, "cb1", "ckpt.h5"), "r") as f:
        lv, b0 = f["levels"][...], f["eda_base"][...]
        cbk = f["start_codebook"][...]
    # the checkpoint's variables: per layer its weights' codes (or levels), then its codebook entries
    t.check("codebook search: the checkpoint holds weights and codebook entries", lv.size == b0.size
            and lv.size == sum(out[n][2].size for n in out) + cbk.size, f"{lv.size} {cbk.size}")
    moved_cb = int((lv != b0).sum())
    t.check("codebook search: the context moved some variables", moved_cb > 0)
    ok = True
    for n, (bits, cb, lvv) in books(os.path.join(root, "cb1", "out.h5")).items():
        if cb is not None:
            ok &= bool((np.diff(cb.astype(int), axis=1) > 0).all()) and all(
                np.isin(lvv.reshape(lvv.shape[0], -1)[o], cb[o]).all() for o in range(cb.shape[0]))
    t.check("codebook search: the output's codebooks stay strictly increasing, every level in them", ok)
    d = os.path.join(root, "cbterm")
    cfg = setup(d, budget=400)
    rc_t, err = stop_after_checkpoint([ccq, "search", cfg, "--set", "search.codebook=true"], os.path.join(d, "ckpt.h5"))
    rc, so, se = search(cfg, 2, ["--set", "search.codebook=true", "--resume", os.path.join(d, "ckpt.h5")])
    t.check("codebook search: stopped and resumed on 2 ranks runs", rc_t == 7 and rc == 0, err[-300:] + se[-500:])
    got = files(d)
    for n in got:
        t.check(f"codebook search: stopped and resumed: {n} identical", got[n] == cbr["cb1"][n])
    t.refusal("search.codebook without learned levels")
    rc, so, se = search(search_ini(os.path.join(root, "cbu"), model, data, run={"budget": 40}), 1,
                        ["--set", "search.codebook=true"])
    t.check("search.codebook without learned levels: exit 2, one line naming the keys",
            rc == 2 and len(se.strip().splitlines()) == 1 and "quant.levels = learned" in se, se[-300:])

    # a uniform search's checkpoint is refused by the learned one (a different configuration)
    u = os.path.join(root, "uniform")
    rc, so, se = search(search_ini(u, model, data, quant={"init": "gptq"}, run={"budget": 40},
                                   search={"group": "layer_confidence"}), 1)
    t.check("uniform search runs", rc == 0, se[-500:])
    t.refusal("uniform checkpoint into a learned search")
    rc, so, se = search(setup(os.path.join(root, "mix")), 1, ["--resume", os.path.join(u, "ckpt.h5")])
    t.check("uniform checkpoint into a learned search: exit 5, one line",
            rc == 5 and len(se.strip().splitlines()) == 1 and "different configuration" in se, se[-500:])
t.finish()
