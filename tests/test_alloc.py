#!/usr/bin/env python3
"""test_alloc.py DATA.h5 LENET.h5: per-layer weight widths under a size budget (`ccq quantize
--budget BYTES|wB`, alloc.h).

On lenet with round-to-nearest candidates at 2, 3, 4 and 8 bits:
  - the deployed size: `ccq inspect` counts what this test counts independently from the file
    (levels or codes packed at their width, codebooks, a float scale and an int32 bias per output
    channel, 8 bytes per node), and the result never exceeds its budget;
  - the only allocation that fits the 2-bit size is every layer at 2 bits, and a budget that holds
    every layer at 8 bits gives exactly that: levels and scales identical to `--wbits 2` and
    `--wbits 8`;
  - a budget between gives mixed widths, each layer's levels and scales identical to the layer of
    the uniform model of its width (a mixed model is assembled from the candidates, nothing
    else), the same file again for the same seed, and the fitness reported never worse than the
    uniform model's within the budget nor the knapsack's;
  - --first-last-8 pins the first and last layers at 8 bits; --levels learned gives codebooks to
    the layers at 2-4 bits and none at 8;
  - `ccq eval` and a short search run on the mixed model, the search bit-identical on 1 and 2 ranks
    and when stopped after a checkpoint and resumed on another rank count, keeping every layer's
    width;
  - bad budgets and widths are refused with exit 2, one line naming the problem, no output."""
import os
import re
import sys
import tempfile

import h5py
import numpy as np

from ccqtest import Checks, ccq_binary, run, search_ini, stop_after_checkpoint

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("alloc")
FAST = ["--init", "rtn", "--calib", "256", "--alloc-images", "512", "--alloc-gens", "6"]


def quantize(out, *flags):
    return run([ccq, "quantize", model, "--data", data, "-o", out, *flags])


def layers(path):
    """{node: (bits, levels, wscale, codebook or None)} of the conv/linear nodes."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in sorted(f["nodes"], key=int):
            g = f["nodes"][name]
            if "levels" in g:
                out[name] = (int(g.attrs["bits"]), g["levels"][...], g["wscale"][...],
                             g["codebook"][...] if "codebook" in g else None)
    return out


def size(path):
    """Deployed bytes, counted here from the file's datasets."""
    total = 0
    with h5py.File(path, "r") as f:
        for name in f["nodes"]:
            g = f["nodes"][name]
            total += 8
            if "levels" in g:
                bits, cout = int(g.attrs["bits"]), g["levels"].shape[0]
                total += (g["levels"].size * bits + 7) // 8 + 8 * cout
                if "codebook" in g:
                    total += g["codebook"].size
    return total


def inspect_bytes(path):
    rc, so, se = run([ccq, "inspect", path])
    m = re.search(r"^deployed\s+(\d+) bytes", so, re.M)
    return int(m.group(1)) if rc == 0 and m else None


def same(a, b):
    return a.keys() == b.keys() and all(
        a[n][0] == b[n][0] and np.array_equal(a[n][1], b[n][1]) and np.array_equal(a[n][2], b[n][2]) for n in a)


with tempfile.TemporaryDirectory() as root:
    P = lambda n: os.path.join(root, n)  # noqa: E731
    uni = {}
    for b in (2, 3, 4, 8):
        rc, so, se = quantize(P(f"u{b}.h5"), "--wbits", str(b), "--init", "rtn", "--calib", "256")
        t.check(f"quantize --wbits {b}", rc == 0, se)
        uni[b] = layers(P(f"u{b}.h5"))
        t.check(f"inspect counts the w{b} model's bytes as this test does", inspect_bytes(P(f"u{b}.h5")) == size(P(f"u{b}.h5")),
                f"{inspect_bytes(P(f'u{b}.h5'))} vs {size(P(f'u{b}.h5'))}")
    s2, s3, s8 = size(P("u2.h5")), size(P("u3.h5")), size(P("u8.h5"))

    # the extremes: only one allocation fits, or every one does
    rc, so, se = quantize(P("a2.h5"), "--budget", "w2", *FAST)
    t.check("--budget w2 runs", rc == 0, se)
    t.check("--budget w2: every layer at 2 bits, identical to --wbits 2", rc == 0 and same(layers(P("a2.h5")), uni[2]))
    t.check("--budget w2 is the 2-bit model's size", f"budget {s2} bytes" in so, so)
    rc, so, se = quantize(P("a8.h5"), "--budget", str(s8 + 1000), *FAST)
    t.check("a budget holding every layer at 8 bits gives them 8 bits, identical to --wbits 8",
            rc == 0 and same(layers(P("a8.h5")), uni[8]), se)

    # a budget at the narrowest size with more than 2^16 bytes of weights (--widths 4,8): the knapsack
    # rounds costs to 2-byte units and must still find the one allocation that fits (it read out of
    # its table there before costs were counted above each layer's narrowest width)
    rc, so, se = quantize(P("a4.h5"), "--budget", "w4", "--widths", "4,8", *FAST)
    m4 = re.search(r"knapsack ([\d.]+), chosen ([\d.]+)", so)
    t.check("--widths 4,8 --budget w4: every layer at 4 bits, identical to --wbits 4, the knapsack's answer too",
            rc == 0 and same(layers(P("a4.h5")), uni[4]) and m4 is not None and m4[1] == m4[2], se + so[-300:])

    # between: mixed widths, assembled from the candidates, within the budget
    mid = (s2 + s3) // 2
    rc, so, se = quantize(P("am.h5"), "--budget", str(mid), *FAST)
    t.check("--budget between the 2- and 3-bit sizes runs", rc == 0, se)
    am = layers(P("am.h5"))
    widths = sorted({v[0] for v in am.values()})
    t.check("mixed widths", len(widths) >= 2, str(widths))
    t.check("within the budget (counted here)", size(P("am.h5")) <= mid, f"{size(P('am.h5'))} > {mid}")
    t.check("inspect agrees on the mixed model's bytes", inspect_bytes(P("am.h5")) == size(P("am.h5")))
    t.check("each layer is the uniform model's layer of its width",
            all(np.array_equal(v[1], uni[v[0]][n][1]) and np.array_equal(v[2], uni[v[0]][n][2]) for n, v in am.items()))
    m = re.search(r"every layer w8 ([\d.]+), every layer w(\d) \(the widest within the budget\) ([\d.]+), "
                  r"knapsack ([\d.]+), chosen ([\d.]+); (\d+) bytes", so)
    t.check("the report line", m is not None, so)
    if m:
        full, uw, funi, fdp, fch, nb = float(m[1]), int(m[2]), float(m[3]), float(m[4]), float(m[5]), int(m[6])
        t.check("the widest uniform model within the budget is 2-bit", uw == 2, m[0])
        t.check("chosen no worse than the uniform model and the knapsack", fch <= funi and fch <= fdp, m[0])
        t.check("the 8-bit model's cross-entropy is the lowest", full <= fch, m[0])
        t.check("reported bytes are the file's", nb == size(P("am.h5")), m[0])
    rc, so2, se = quantize(P("am2.h5"), "--budget", str(mid), *FAST)
    t.check("the same seed gives the same model", rc == 0 and same(layers(P("am2.h5")), am))
    rc, so3, se = quantize(P("am3.h5"), "--budget", str(mid), *FAST, "--seed", "7")
    t.check("another seed runs within the budget", rc == 0 and size(P("am3.h5")) <= mid, se)

    # pinned first and last layers; learned levels
    rc, so, se = quantize(P("af.h5"), "--budget", str(mid), "--first-last-8", *FAST)
    af = layers(P("af.h5")) if rc == 0 else {}
    names = sorted(af, key=int)
    t.check("--first-last-8: the first and last layers stay at 8 bits",
            rc == 0 and af[names[0]][0] == 8 and af[names[-1]][0] == 8 and size(P("af.h5")) <= mid, se)
    rc, so, se = quantize(P("al.h5"), "--budget", str(mid), "--levels", "learned", *FAST)
    al = layers(P("al.h5")) if rc == 0 else {}
    t.check("--levels learned: codebooks on the layers at 2-4 bits, none at 8",
            rc == 0 and all((v[3] is not None) == (v[0] <= 4) for v in al.values())
            and any(v[3] is not None for v in al.values()), se)
    t.check("--levels learned: within the budget", rc == 0 and size(P("al.h5")) <= mid)

    # the mixed model runs: eval, and a short search bit-identical on 1 and 2 ranks
    rc, so, se = run([ccq, "eval", P("am.h5"), "--data", data, "--limit", "500"])
    t.check("ccq eval runs the mixed model", rc == 0 and "accuracy" in so, se)
    outs = []
    MPI2 = ["mpirun", "--oversubscribe", "-np", "2"]
    # [quant] does not apply to a quantized start: keys narrower than the file's widest layer must not
    # stop a resume (they did: the checkpoint's levels were checked against quant.wbits)
    NARROW = {"wbits": 2, "first_last_8": "false"}
    t.check("the mixed model has a layer wider than 2 bits", max(v[0] for v in am.values()) > 2)
    for np_ in (1, 2):
        d = P(f"s{np_}")
        cfg = search_ini(d, P("am.h5"), data, run={"budget": 160}, search={"group": "layer_confidence"},
                         quant=NARROW)
        rc, so, se = run(([] if np_ == 1 else MPI2) + [ccq, "search", cfg])
        t.check(f"search from the mixed model on {np_} rank(s)", rc == 0, se[-1500:])
        outs.append(tuple(open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")))
    t.check("the search: identical model, log and checkpoint on 1 and 2 ranks", outs[0] == outs[1])
    # stopped by SIGTERM after its first checkpoint on 1 rank, resumed on 2: identical
    d = P("sr")
    cfg = search_ini(d, P("am.h5"), data, run={"budget": 160}, search={"group": "layer_confidence"},
                         quant=NARROW)
    rc_t, err = stop_after_checkpoint([ccq, "search", cfg], os.path.join(d, "ckpt.h5"))
    rc, so, se = run(MPI2 + [ccq, "search", cfg, "--resume", os.path.join(d, "ckpt.h5")])
    got = tuple(open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")) if rc == 0 else None
    t.check("stopped (exit 7) and resumed on 2 ranks: identical to the uninterrupted search",
            rc_t == 7 and rc == 0 and got == outs[0], f"stop rc {rc_t}, resume rc {rc}: {se[-800:]}")
    so_ = layers(os.path.join(P("s1"), "out.h5"))
    t.check("the search keeps every layer's width", {n: v[0] for n, v in so_.items()} == {n: v[0] for n, v in am.items()})

    # quant.budget: the allocation at the search's set-up (rank 0, broadcast), on 1, 2 and 3 ranks and
    # stopped and resumed: identical; the start is the quantize command's model
    BUDGET = {"budget": mid, "init": "rtn", "first_last_8": "false", "calib_images": 256}

    def budget_search(name, np_, extra=(), **sections):
        d = P(name)
        cfg = search_ini(d, model, data, quant=dict(BUDGET, **sections.pop("quant", {})), run={"budget": 160},
                         search={"group": "layer_confidence"}, **sections)
        rc, so, se = run(([] if np_ == 1 else ["mpirun", "--oversubscribe", "-np", str(np_)]) + [ccq, "search", cfg, *extra])
        got = tuple(open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")) if rc == 0 else None
        return rc, so, se, got, d, cfg

    rc, so, se, b1, d1, _ = budget_search("b1", 1)
    t.check("search with quant.budget on 1 rank", rc == 0 and "search: start: budget" in so, se[-1500:])
    for np_ in (2, 3):
        rc, so, se, got, _, _ = budget_search(f"b{np_}", np_)
        t.check(f"quant.budget: identical model, log and checkpoint on {np_} ranks", rc == 0 and got == b1, se[-800:])
    with h5py.File(os.path.join(d1, "ckpt.h5"), "r") as f:
        sb = f["start_bits"][...] if "start_bits" in f else None
        start = f.attrs["start"].decode() if isinstance(f.attrs["start"], bytes) else str(f.attrs["start"])
    with h5py.File(os.path.join(d1, "out.h5"), "r") as f:
        ob = {int(n): int(f["nodes"][n].attrs["bits"]) for n in f["nodes"] if "levels" in f["nodes"][n]}
    t.check("the checkpoint keeps the start's widths", start == "budget" and sb is not None
            and {i: int(b) for i, b in enumerate(sb) if b} == ob, f"{start} {sb} {ob}")
    rc, so, se = quantize(P("q_same.h5"), "--budget", str(mid), "--init", "rtn", "--calib", "256", "--seed", "3")
    tw = {n: v[0] for n, v in layers(P("q_same.h5")).items()} if rc == 0 else None
    sw = {n: v[0] for n, v in layers(os.path.join(d1, "out.h5")).items()} if b1 else {}
    t.check("the search's widths are `ccq quantize --budget` with the search's seed", tw == sw, f"{tw} vs {sw}")
    d = P("br")
    cfg = search_ini(d, model, data, quant=BUDGET, run={"budget": 160}, search={"group": "layer_confidence"})
    rc_t, err = stop_after_checkpoint([ccq, "search", cfg], os.path.join(d, "ckpt.h5"))
    rc, so, se = run(MPI2 + [ccq, "search", cfg, "--resume", os.path.join(d, "ckpt.h5")])
    got = tuple(open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")) if rc == 0 else None
    t.check("quant.budget: stopped and resumed on 2 ranks, identical, the start from the checkpoint",
            rc_t == 7 and rc == 0 and got == b1 and "start: budget, from the checkpoint" in so,
            f"stop rc {rc_t}, resume rc {rc}: {se[-800:]}")
    # a budget search's checkpoint is not a uniform search's, nor the reverse
    rc, so, se = run([ccq, "search", cfg, "--resume", os.path.join(d, "ckpt.h5"), "--set", "quant.budget=off"])
    t.check("a budget checkpoint refused without the budget", rc == 5 and "different configuration" in se, se)
    for key, msg in (("quant.budget=w5", "needs 5 among quant.widths"), ("quant.budget=12", "below the smallest"),
                     ("quant.budget=lots", "expected off, a number of bytes or w2..w8"),
                     ("quant.widths=4,3", "expected increasing widths"), ("quant.widths=4", "at least two widths")):
        t.refusal(key)
        rc, so, se = run([ccq, "search", cfg, "--set", key, "--set", f"run.checkpoint={P('none.h5')}",
                          "--set", f"run.output={P('none_out.h5')}"])
        t.check(f"refused: {key}", rc == 2 and msg in se and len(se.strip().splitlines()) == 1
                and not os.path.exists(P("none_out.h5")), f"rc {rc}: {se!r}")
    rc, so, se = run([ccq, "search", cfg, "--set", f"model.model={P('am.h5')}", "--set", f"run.checkpoint={P('none.h5')}"])
    t.check("quant.budget with a quantized model is exit 2", rc == 2 and "needs a float model" in se, se)

    # refusals: exit 2, one line, nothing written
    bad = [
        (["--budget", str(s2 - 1)], "below the smallest allocation"),
        (["--budget", "w5"], "wB needs B among --widths"),
        (["--budget", "lots"], "--budget"),
        (["--budget", "0"], "--budget"),
        (["--budget", "w3", "--wbits", "3"], "exclude each other"),
        (["--budget", "w3", "--widths", "3,2"], "--widths needs increasing"),
        (["--budget", "w3", "--widths", "3"], "at least two widths"),
        (["--budget", "w3", "--widths", "2,9"], "--widths needs increasing"),
        (["--budget", "w3", "--widths", "2,,3"], "--widths needs increasing"),
        (["--budget", "w8", "--widths", "8,8"], "--widths needs increasing"),
        (["--widths", "2,3", "--wbits", "2"], "need --budget"),
        (["--seed", "3", "--wbits", "2"], "need --budget"),
        (["--budget", "w8", "--widths", "5,8", "--levels", "learned"], "--levels learned needs a width"),
        (["--budget", "w3", "--alloc-images", "0"], "--alloc-images"),
    ]
    for flags, msg in bad:
        t.refusal("quantize " + " ".join(flags))
        out = P("bad.h5")
        rc, so, se = quantize(out, *flags, "--init", "rtn")
        lines = se.strip().splitlines()
        t.check(f"refused: {' '.join(flags)}", rc == 2 and len(lines) == 1 and msg in se and not os.path.exists(out),
                f"rc {rc}, stderr {se!r}")
    rc, so, se = run([ccq, "eval", model, "--data", data, "--budget", "w3"])
    t.check("eval has no --budget", rc == 2 and "unknown flag" in se, se)

t.finish()
