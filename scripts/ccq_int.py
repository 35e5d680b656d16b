#!/usr/bin/env python3
"""ccq_int.py: an exact reference of ccq's integer engine, in numpy int64.

Reads a quantized ccq model file and computes, from the file alone, the
integers the engine computes (README "Integer engine"): every tensor is a
uint8 level array, every op integer arithmetic, and the result is the int32
logits that `ccq eval --save-logits` writes as /logits_int. tests/test_qnet.py
requires the engine to match it bit for bit. It is written from the README's
stated semantics, in its own layout (NCHW, whole batches, numpy), and checked
against src/op*.c and src/quant.c where the README is silent; it shares no
code with the engine and is never used by it. It does not validate the file
as ccq's loader does (it assumes a file `ccq eval` accepts), quantize, or
model the kernels' layouts, packing and micro-batches (none of which may
change an integer).

What it derives exactly as the engine's set-up does (these are part of the
semantics, since a one-ulp difference changes a multiplier):
  - per-channel requantization: M = s_in * s_w[c] / s_out in double,
    frexp(M) = f * 2^e, mult = round(f * 2^31) in [2^30, 2^31) (2^31 rounds
    to 2^30 with e + 1), shift = 31 - e in [1, 62]; a shift above 62 is the
    multiplier 0 (shift 1); bias_q = round(bias / (s_in * s_w)) in double;
  - add and concat: each ratio s_j / s_out is a float32 division, then
    shift = 30 - e(max ratio) - 9 (at most 30), M_j = round(ratio_j * 2^shift);
  - standalone batchnorm: a = gamma / sqrt(var + eps), shift from the largest
    |a s_in / s_out|, multiplier round(a s_in / s_out 2^shift), offset
    round((beta - mean a) / s_out 2^shift) (in [-2^24, 2^24] levels), in int64;
  - clamps: [zp, 255] for a fused ReLU, a fused or standalone Clip's bounds as
    levels (clamped to [0, 255]; an empty range becomes its lower bound).
Every round() above is half away from zero, as are the rounding shifts and the
average pools' divisions.

The dot products of conv2d and linear go through float64 matrix products: each
term is an integer level * (q - zp) of magnitude below 2^15 and every partial
sum is below 2^31 (the engine refuses layers that could exceed it), so float64
represents all of them exactly and the sums are the integers (`exact_dot`
checks it; CCQ_INT_DOT=int64 uses numpy's int64 matmul instead, slower).

Usage: ccq_int.py QMODEL.h5 DATA.h5 [--limit N] [--out OUT.h5]: writes /logits_int.
As a module: net = load(path); logits = run(net, images) (uint8 [N, C, H, W]);
run(..., keep=True) also returns every node's levels (NCHW, or [N, F])."""
import math
import os
import sys

import h5py
import numpy as np

INT32_MAX = 2**31 - 1


# ---- scalar arithmetic of the set-up (C's double and float, llround, frexp) ----------------


def lround(x):
    """llround: nearest integer, half away from zero, exact for any double."""
    a = abs(x)
    r = math.floor(a)
    if a - r >= 0.5:  # exact: a - floor(a) is representable for |a| < 2^52
        r += 1
    return int(r if x >= 0 else -r)


def f32div(a, b):
    """a / b in float32, as C computes float / float."""
    return float(np.float32(a) / np.float32(b))


def multiplier(M):
    """(mult, shift) of a positive real M (src/quant.c quant_multiplier)."""
    if not (M > 0) or not math.isfinite(M) or M >= 2.0**30:
        raise ValueError(f"requantization scale {M} out of range")
    f, e = math.frexp(M)
    q = lround(math.ldexp(f, 31))
    if q == 2**31:
        q >>= 1
        e += 1
    sh = 31 - e
    if sh > 62:
        return 0, 1
    if sh < 1:
        raise ValueError(f"requantization scale {M} out of range")
    return q, sh


def ratio_shift(max_ratio):
    """A shift s with round(r 2^s) < 2^30 for every r <= max_ratio, at most 40 (op_ratio_shift)."""
    if not (max_ratio > 0) or not math.isfinite(max_ratio) or max_ratio >= 2.0**29:
        raise ValueError(f"ratio {max_ratio} out of range")
    s = min(30 - math.frexp(max_ratio)[1], 40)
    if s < 1:
        raise ValueError(f"ratio {max_ratio} out of range")
    return s


def level_of(v, scale, zp):
    """zp + round(v / scale), clamped to [0, 255] (v may be +-3.4e38)."""
    q = zp + v / scale
    if q < -1.0:
        return 0
    if q > 256.0:
        return 255
    return min(max(lround(v / scale) + zp, 0), 255)


# ---- array arithmetic of the forward pass ------------------------------------------------


def rshift_round(v, s):
    """Round half away from zero of v / 2^s (int64 arrays; s an int or an array broadcast to v)."""
    v = np.asarray(v, np.int64)
    s = np.asarray(s, np.int64)
    r = np.left_shift(np.int64(1), s - 1)
    return np.where(v >= 0, (v + r) >> s, -((-v + r) >> s))


def requant(acc, mult, shift):
    """sign(acc) * min((|acc| mult + 2^(shift-1)) >> shift, 2^31 - 1): round(acc M), saturating.
    |acc| < 2^31 and mult < 2^31, so every intermediate fits int64."""
    acc = np.asarray(acc, np.int64)
    a = np.abs(acc)
    shift = np.asarray(shift, np.int64)
    q = np.minimum((a * np.asarray(mult, np.int64) + np.left_shift(np.int64(1), shift - 1)) >> shift, INT32_MAX)
    return np.where(acc < 0, -q, q)


def div_round(s, cnt):
    """Round half away from zero of s / cnt (int64; cnt > 0)."""
    return np.where(s >= 0, (2 * s + cnt) // (2 * cnt), -((-2 * s + cnt) // (2 * cnt)))


def exact_dot(w, x):
    """w [O, K] (levels) @ x [K, P] (q - zp), both integer arrays: the exact int64 product."""
    if os.environ.get("CCQ_INT_DOT") == "int64":
        return w.astype(np.int64) @ x.astype(np.int64)
    y = w.astype(np.float64) @ x.astype(np.float64, copy=False)
    # every partial sum is an integer below 2^31 in magnitude, so float64 holds it exactly
    assert np.abs(y).max(initial=0) < 2.0**31
    return y.astype(np.int64)


def window(o, stride, k, pad0, pad1, n):
    """A pool window along one axis (model_window): real elements [lo, hi) and the window's
    extent inside the padded axis (for count_include_pad)."""
    start = o * stride - pad0
    end = start + k
    return max(start, 0), min(end, n), min(end, n + pad1) - start


# ---- the model file -------------------------------------------------------------------------


def load(path):
    """A quantized ccq model file: per node its attributes, datasets and integer constants."""
    with h5py.File(path, "r") as f:
        if not int(f.attrs.get("quantized", 0)):
            raise ValueError(f"{path}: not a quantized ccq model")
        gi = f["input"].attrs
        net = {"path": path, "in_scale": float(np.float32(gi["act_scale"])), "in_zp": int(gi["act_zp"]),
               "in_shape": tuple(int(v) for v in gi["shape"]), "output": int(f.attrs["output"]), "nodes": []}
        for k in sorted(f["nodes"].keys()):
            g = f["nodes"][k]
            nd = {a: (v.decode() if isinstance(v, bytes) else v) for a, v in g.attrs.items()}
            for ds in g.keys():
                nd[ds] = g[ds][...]
            nd["inputs"] = [int(v) for v in nd["inputs"]]
            nd["shape"] = tuple(int(v) for v in nd["shape"])
            nd["act_scale"] = float(np.float32(nd["act_scale"]))
            nd["act_zp"] = int(nd["act_zp"])
            net["nodes"].append(nd)
    for i, nd in enumerate(net["nodes"]):
        _setup(net, i, nd)
    return net


def _q(net, j):
    """(scale, zero point) of tensor j (-1: the network input)."""
    if j < 0:
        return net["in_scale"], net["in_zp"]
    return net["nodes"][j]["act_scale"], net["nodes"][j]["act_zp"]


def _clamp(nd):
    """The output clamp [lo, hi]: a fused ReLU (or a standalone clip's or a fused Clip's bounds)."""
    zp, s = nd["act_zp"], nd["act_scale"]
    lo = zp if int(nd.get("relu", 0)) else 0
    hi = 255
    bounds = (nd["min"], nd["max"]) if nd["op"] == "clip" else nd.get("clip")
    if bounds is not None:
        lo = max(lo, level_of(float(np.float32(bounds[0])), s, zp))
        hi = min(hi, level_of(float(np.float32(bounds[1])), s, zp))
        hi = max(hi, lo)
    return lo, hi


def _setup(net, i, nd):
    op = nd["op"]
    s_out = nd["act_scale"]
    nd["lo"], nd["hi"] = _clamp(nd)
    s_in, nd["zp_in"] = _q(net, nd["inputs"][0])
    if op in ("conv2d", "linear"):
        ws = nd["wscale"].astype(np.float32).astype(np.float64)
        bias = nd["bias"].astype(np.float32).astype(np.float64) if "bias" in nd else np.zeros(len(ws))
        nd["bias_q"] = np.array([lround(float(b) / (s_in * float(w))) for b, w in zip(bias, ws)], np.int64)
        ms = [multiplier(s_in * float(w) / s_out) for w in ws]
        nd["mult"] = np.array([m for m, _ in ms], np.int64)
        nd["shift"] = np.array([s for _, s in ms], np.int64)
        nd["lev"] = nd["levels"].astype(np.int64)
    elif op in ("add", "concat"):
        r = [f32div(_q(net, j)[0], s_out) for j in nd["inputs"]]
        sh = ratio_shift(max(r))
        if sh - 9 < 1:
            raise ValueError(f"node {i}: input/output scales too far apart")
        sh = min(sh - 9, 30)
        nd["m"] = [lround(math.ldexp(v, sh)) for v in r]
        nd["sh"] = sh
    elif op == "mul":
        nd["mult"], nd["shift"] = multiplier(_q(net, nd["inputs"][0])[0] * _q(net, nd["inputs"][1])[0] / s_out)
    elif op == "batchnorm":
        g, b = nd["gamma"].astype(np.float64), nd["beta"].astype(np.float64)
        mean, var, eps = nd["mean"].astype(np.float64), nd["var"].astype(np.float64), float(np.float32(nd["eps"]))
        a = [float(g[c]) / math.sqrt(float(var[c]) + eps) for c in range(len(g))]
        sh = ratio_shift(max([1e-30] + [abs(v * s_in / s_out) for v in a]))
        off = [(float(b[c]) - float(mean[c]) * a[c]) / s_out for c in range(len(g))]
        off = [min(max(v, -16777216.0), 16777216.0) for v in off]
        nd["cm"] = np.array([lround(math.ldexp(v * s_in / s_out, sh)) for v in a], np.int64)
        nd["cb"] = np.array([lround(math.ldexp(v, sh)) for v in off], np.int64)
        nd["csh"] = sh


# ---- forward ----------------------------------------------------------------------------------


def _conv(nd, x, logits):
    """conv2d over x [N, C, H, W] levels: acc = bias_q + sum level * (q - zp_in), the padding
    contributing zero (it holds zp_in), per group; then requantization."""
    N, C, H, W = x.shape
    kh, kw = (int(v) for v in nd["kernel"])
    sh, sw = (int(v) for v in nd["stride"])
    dh, dw = (int(v) for v in nd.get("dilation", (1, 1)))
    pt, pl, pb, pr = (int(v) for v in nd["pad"])
    G = int(nd.get("groups", 1))
    O, oh, ow = nd["shape"]
    # (q - zp_in) in float64 (exact small integers), the padding zero; then every tap's view laid out as
    # cols [C, kh * kw, N, oh, ow], so that group g's rows (K in (c, ky, kx) order) are one contiguous block
    xc = np.zeros((C, N, H + pt + pb, W + pl + pr))
    xc[:, :, pt:pt + H, pl:pl + W] = (x - nd["zp_in"]).transpose(1, 0, 2, 3)
    cols = np.empty((C, kh * kw, N, oh, ow))
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            cols[:, ky * kw + kx] = xc[:, :, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]
    cig, cog = C // G, O // G
    acc = np.empty((O, N * oh * ow), np.int64)
    for g in range(G):
        w = nd["lev"][g * cog:(g + 1) * cog].reshape(cog, cig * kh * kw)
        acc[g * cog:(g + 1) * cog] = exact_dot(w, cols[g * cig:(g + 1) * cig].reshape(cig * kh * kw, N * oh * ow))
    acc = acc.reshape(O, N, oh * ow).transpose(1, 0, 2)
    acc += nd["bias_q"][None, :, None]
    assert np.abs(acc).max() < 2**31
    v = requant(acc, nd["mult"][None, :, None], nd["shift"][None, :, None]).reshape(N, O, oh, ow)
    assert not logits, "the logits node is a linear layer"
    return np.clip(nd["act_zp"] + v, nd["lo"], nd["hi"])


def _linear(nd, x, logits):
    acc = exact_dot(nd["lev"], (x - nd["zp_in"]).T).T + nd["bias_q"][None, :]
    assert np.abs(acc).max() < 2**31
    v = requant(acc, nd["mult"][None, :], nd["shift"][None, :])
    return v if logits else np.clip(nd["act_zp"] + v, nd["lo"], nd["hi"])


def _pool(nd, x):
    N, C, H, W = x.shape
    kh, kw = (int(v) for v in nd["kernel"])
    sh, sw = (int(v) for v in nd["stride"])
    pt, pl, pb, pr = (int(v) for v in nd["pad"])
    _, oh, ow = nd["shape"]
    y = np.empty((N, C, oh, ow), np.int64)
    zp = nd["zp_in"]
    for oy in range(oh):
        y0, y1, ph = window(oy, sh, kh, pt, pb, H)
        for ox in range(ow):
            x0, x1, pw = window(ox, sw, kw, pl, pr, W)
            win = x[:, :, y0:y1, x0:x1]
            if nd["op"] == "maxpool":
                y[:, :, oy, ox] = win.max(axis=(2, 3))  # padding never wins: it is not a value
            else:
                cnt = ph * pw if int(nd["count_include_pad"]) else (y1 - y0) * (x1 - x0)
                s = (win - zp).sum(axis=(2, 3))
                y[:, :, oy, ox] = np.clip(nd["act_zp"] + div_round(s, cnt), 0, 255)
    return y


def _forward(net, i, nd, xs):
    op, x = nd["op"], xs[0]
    logits = i == net["output"]
    if op == "conv2d":
        return _conv(nd, x, logits)
    if op == "linear":
        return _linear(nd, x, logits)
    if op in ("maxpool", "avgpool"):
        return _pool(nd, x)
    if op == "globalavgpool":
        cnt = x.shape[2] * x.shape[3]
        s = (x - nd["zp_in"]).sum(axis=(2, 3), keepdims=True)
        return np.clip(nd["act_zp"] + div_round(s, cnt), 0, 255)
    if op == "relu":
        return np.maximum(x, nd["zp_in"])
    if op == "clip":
        return np.clip(x, nd["lo"], nd["hi"])
    if op == "act":
        return nd["table"].astype(np.int64)[x]
    if op == "batchnorm":
        c = (1, -1) + (1,) * (x.ndim - 2)  # per channel
        v = (x - nd["zp_in"]) * nd["cm"].reshape(c) + nd["cb"].reshape(c)
        return np.clip(nd["act_zp"] + rshift_round(v, nd["csh"]), nd["lo"], nd["hi"])
    if op == "flatten":
        return x.reshape(x.shape[0], -1)  # C, H, W order, as the float model
    if op == "pad":
        p = [int(v) for v in nd["pads"]]
        r = len(p) // 2
        return np.pad(x, [(0, 0)] + [(p[a], p[r + a]) for a in range(r)], constant_values=nd["zp_in"])
    if op == "slice":
        idx = tuple(np.array([int(st) + k * int(sp) for k in range(n)])
                    for st, sp, n in zip(nd["start"], nd["step"], nd["shape"]))
        return x[(slice(None),) + np.ix_(*idx)] if len(idx) > 1 else x[:, idx[0]]
    if op in ("add", "concat"):
        # each input (q - z_j) * M_j; add sums them before one rounding shift, concat shifts each
        terms = [(xj - _q(net, j)[1]) * m for xj, j, m in zip(xs, nd["inputs"], nd["m"])]
        if op == "add":
            return np.clip(nd["act_zp"] + rshift_round(terms[0] + terms[1], nd["sh"]), nd["lo"], nd["hi"])
        parts = [np.clip(nd["act_zp"] + rshift_round(t, nd["sh"]), 0, 255) for t in terms]
        return np.concatenate(parts, axis=1 + int(nd.get("axis", 0)))
    if op == "mul":
        a, b = (xj - _q(net, j)[1] for xj, j in zip(xs, nd["inputs"]))
        v = requant(a * b, nd["mult"], nd["shift"])  # b [N, C, 1, 1] broadcasts over H, W
        return np.clip(nd["act_zp"] + v, nd["lo"], nd["hi"])
    raise ValueError(f"node {i}: op {op} unknown")


def run(net, images, keep=False, chunk=64):
    """int32 logits [N, classes] of uint8 images [N, C, H, W] (and, with keep, every node's levels)."""
    images = np.asarray(images)
    out, acts = [], [[] for _ in net["nodes"]]
    for b in range(0, len(images), chunk):
        t = {-1: images[b:b + chunk].reshape((-1,) + net["in_shape"]).astype(np.int64)}
        for i, nd in enumerate(net["nodes"]):
            y = _forward(net, i, nd, [t[j] for j in nd["inputs"]])
            th = int(nd.get("act_thresh", 0))
            if th:  # activation pruning: levels within th of the zero point become it
                y = np.where(np.abs(y - nd["act_zp"]) < th, nd["act_zp"], y)
            assert y.shape[1:] == nd["shape"], (i, y.shape, nd["shape"])
            if i != net["output"]:
                assert y.min(initial=0) >= 0 and y.max(initial=0) <= 255, i
            t[i] = y
            if keep:
                acts[i].append(y.astype(np.int32 if i == net["output"] else np.uint8))
        out.append(t[net["output"]].astype(np.int32))
    logits = np.concatenate(out)
    if keep:
        return logits, [np.concatenate(a) for a in acts]
    return logits


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="ccq_int.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default=None, help="write /logits_int (int32 [N, classes]) here")
    a = ap.parse_args(argv)
    net = load(a.model)
    with h5py.File(a.data, "r") as f:
        images = f[f"{a.split}/images"][:a.limit]
        labels = f[f"{a.split}/labels"][:a.limit]
    lg = run(net, images)
    print(f"accuracy {100.0 * (lg.argmax(1) == labels).mean():.2f}% on {len(lg)} images")
    if a.out:
        with h5py.File(a.out, "w") as f:
            f["logits_int"] = lg


if __name__ == "__main__":
    main(sys.argv[1:])
