#!/usr/bin/env python3
"""gptq.py QUANT.h5 DATA.h5 OUT.h5 [--calib N] [--no-act-order] [--damp D]
[--float-inputs] [--scale-search] [--asym]: GPTQ initial levels for a quantized ccq
model file (Frantar et al. 2022).

Layer by layer, per output channel, column by column: each weight column is
rounded to its level (by default the file's per-channel scales are kept, so
the integer model and the search see the same grid; with --scale-search each
output channel's scale is chosen from a grid of fractions of the file's scale
by the error GPTQ itself reaches, ||(W - Q) X^T||^2, which is exact per
channel because GPTQ treats the rows of W independently) and the rounding
error is fed back
into the columns not yet quantized through the inverse Hessian of the
layer's inputs, H = X^T X over the calibration images: by default the inputs
the network produces once the layers before it carry their GPTQ weights
(float activations otherwise; --float-inputs takes the float model's inputs
for every layer, one pass instead of one per layer). With act-order
(default) columns are taken by decreasing Hessian diagonal. Float arithmetic,
once, at set-up; the output is a quantized model file like the input with
new levels, which `ccq eval` runs and `ccq search` can start from
(model.model = OUT.h5). Rounding is half away from zero, as in ccq.
A grouped convolution is one GPTQ problem per group: the group's output
channels against the Hessian of its own input channels.

--asym (ccq quantize --init gptq_asym's oracle): asymmetric targets. Each
layer's target is the ORIGINAL model's pre-activation output, its float
weights and bias on its own float inputs Y, reconstructed from the inputs X
the quantized layers before produce: with the bias free, the least-squares
weights are W' = W Cc^T (Hc + lam I)^-1 (Hc, Cc the centred X^T X and X^T Y;
lam = 1e-4 x the mean of X^T X's diagonal); GPTQ then quantizes W' with Hc
as its Hessian, and the bias is solved again for the levels, mean(W y + b) -
(q s) . mean(x). The file's float biases become the new ones.
"""
import argparse
import os
import shutil
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccq_sim  # noqa: E402


rnd = ccq_sim._round  # half away from zero, as in ccq


def load(path):
    try:
        return ccq_sim.load(path)
    except ValueError:
        raise SystemExit(f"gptq: {path}: not a quantized ccq model (make one with ccq quantize)")


def float_forward(net, x_u8, capture):
    """The folded float graph; capture(i, x) sees each conv/linear input."""
    ccq_sim.run(net, x_u8, quantized=False, capture=capture)


def groups_of(nd):
    return int(nd.get("groups", 1)) if nd["op"] == "conv2d" else 1


def rows(nd, a):
    """The layer's input as GEMM rows [N*P, K], K in weight order (Cin, kh, kw)."""
    if nd["op"] == "linear":
        return a
    t, l, b, r = (int(v) for v in nd["pad"])
    u = F.unfold(F.pad(a, (l, r, t, b)), tuple(int(v) for v in nd["kernel"]),
                 dilation=tuple(int(v) for v in nd["dilation"]), stride=tuple(int(v) for v in nd["stride"]))
    return u.transpose(1, 2).reshape(-1, u.shape[1])


def gptq(W, H, scale, qmax, act_order=True, damp=0.01, block=128, mask=None):
    """mask (bool [rows, K], optional): weights pruned before quantization, their levels 0."""
    W, H = W.clone(), H.clone()
    K = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(K)
    W, H = W[:, perm], H[perm][:, perm]
    M = mask[:, perm] if mask is not None else None
    H += damp * torch.mean(torch.diag(H)) * torch.eye(K, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    s = scale.view(-1)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1, Hb = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        E = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w = W1[:, i]
            q = torch.clamp(rnd(w / s), -qmax, qmax)
            if M is not None:
                q = torch.where(M[:, i1 + i], torch.zeros_like(q), q)
            Q[:, i1 + i] = q
            e = (w - q * s) / Hb[i, i]
            W1[:, i:] -= e.unsqueeze(1) @ Hb[i, i:].unsqueeze(0)
            E[:, i] = e
        W[:, i2:] -= E @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)]


def row_error(W, Q, s, H):
    """Per output channel: ||(w - s q) X^T||^2 = (w - s q) H (w - s q)^T."""
    D = W - Q * s.view(-1, 1)
    return ((D @ H) * D).sum(1)


def gptq_scales(W, H, s0, qmax, act_order, damp, factors):
    """GPTQ at each fraction f of the scales s0; per channel the (levels,
    scale) with the smallest layer-output error."""
    best = None
    for f in factors:
        s = s0.view(-1) * f
        Q = gptq(W, H, s, qmax, act_order, damp)
        e = row_error(W, Q, s, H)
        if best is None:
            best = [e, Q, s.clone()]
        else:
            b = e < best[0]
            best[0] = torch.where(b, e, best[0])
            best[1][b] = Q[b]
            best[2][b] = s[b]
    return best[1], best[2]


SCALE_FACTORS = [round(0.25 + 0.05 * i, 2) for i in range(16)]  # 0.25 .. 1.00 of the file's (max-abs) scale


def main():
    """One line `gptq: FILE: problem` and exit 1 for a bad file, never a traceback or a partial OUT."""
    ap = argparse.ArgumentParser(description="GPTQ initial levels for a quantized ccq model file.")
    ap.add_argument("qmodel")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--calib", type=int, default=1024, help="calibration images, the first of the train split")
    ap.add_argument("--no-act-order", action="store_true")
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--float-inputs", action="store_true",
                    help="Hessians from the float model's layer inputs (one pass) instead of the inputs the "
                         "already quantized layers before produce (one pass per layer, the default)")
    ap.add_argument("--scale-search", action="store_true",
                    help="choose each output channel's scale among 0.25, 0.30, .., 1.00 x the file's by GPTQ's "
                         "layer-output error (the file's scales otherwise)")
    ap.add_argument("--sparsity", type=float, default=0.0,
                    help="prune before quantization: in each layer at --prune-bits bits, the floor(n x sparsity) "
                         "weights of smallest |w| (ties to the lower index) get level 0 (ccq quantize --sparsity F "
                         "--prune before)")
    ap.add_argument("--prune-bits", type=int, default=0)
    ap.add_argument("--asym", action="store_true",
                    help="asymmetric targets: the original model's outputs from the quantized layers' inputs, the "
                         "bias solved again (ccq quantize --init gptq_asym)")
    a = ap.parse_args()
    for role, p in (("QMODEL", a.qmodel), ("DATA", a.data)):
        if not os.path.isfile(p):
            print(f"gptq: {p}: {'is a directory' if os.path.isdir(p) else 'no such file'}", file=sys.stderr)
            return 1
        if os.path.exists(a.out) and os.path.exists(p) and os.path.samefile(a.out, p):
            print(f"gptq: {a.out}: OUT would overwrite {role}", file=sys.stderr)
            return 1
    tmp = a.out + ".tmp"
    try:
        return run(a, tmp)
    except (OSError, KeyError, ValueError, IndexError, TypeError) as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        where = getattr(e, "filename", None) or f"{a.qmodel} / {a.data}"
        print(f"gptq: {where}: {getattr(e, 'strerror', None) or e} ({type(e).__name__})", file=sys.stderr)
        return 1


ASYM_RIDGE = 1e-4  # gptq.h's GPTQ_ASYM_RIDGE


def asym_sums(net, orig, i, x):
    """Layer i (one group): H = X^T X, Cx = X^T Y, the row sums of X and Y and the column count, X the
    rows of the quantized model's inputs (net, its earlier layers on their levels), Y the original's."""
    nd = net["nodes"][i]
    H = Cx = sa = sb = 0
    cols = 0
    for j in range(0, len(x), 128):
        cap = {}
        float_forward(net, x[j:j + 128], lambda k, inp: cap.__setitem__("q", inp) if k == i else None)
        float_forward(orig, x[j:j + 128], lambda k, inp: cap.__setitem__("f", inp) if k == i else None)
        X, Y = rows(nd, cap["q"]).double(), rows(nd, cap["f"]).double()
        H, Cx = H + X.T @ X, Cx + X.T @ Y
        sa, sb = sa + X.sum(0), sb + Y.sum(0)
        cols += X.shape[0]
    return H, Cx, sa, sb, cols


def asym_target(W, H, Cx, sa, sb, cols):
    """The least-squares weights W' of the targets and the centred H (asym_target in gptq.c)."""
    lam = ASYM_RIDGE * torch.diag(H).mean()
    Hc = H - torch.outer(sa, sa) / cols
    Cc = Cx - torch.outer(sa, sb) / cols
    Wt = torch.linalg.solve(Hc + lam * torch.eye(H.shape[0], dtype=H.dtype), Cc @ W.T).T
    return Wt, Hc


def run(a, tmp):
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if a.asym and (a.float_inputs or a.sparsity > 0):
        raise ValueError("--asym takes neither --float-inputs nor --sparsity")
    net = load(a.qmodel)
    orig = load(a.qmodel) if a.asym else None
    with h5py.File(a.data, "r") as f:
        x = f["train/images"][: a.calib]
    layers = [i for i, nd in enumerate(net["nodes"]) if nd["op"] in ("conv2d", "linear")]

    def hessians(only):
        H = {}

        def capture(i, inp):
            if only is None or i == only:
                G = groups_of(net["nodes"][i])
                c = inp.shape[1] // G
                for g in range(G):
                    X = rows(net["nodes"][i], inp if G == 1 else inp[:, g * c:(g + 1) * c])
                    H[(i, g)] = H.get((i, g), 0) + X.T @ X

        for j in range(0, len(x), 128):
            float_forward(net, x[j:j + 128], capture)
        return H

    H = hessians(None) if a.float_inputs else {}
    shutil.copy(a.qmodel, tmp)
    changed = 0
    with h5py.File(tmp, "r+") as f:
        for i in layers:
            nd = net["nodes"][i]
            W = nd["weight"].reshape(nd["weight"].shape[0], -1)
            qmax = (1 << (int(nd["bits"]) - 1)) - 1
            G = groups_of(nd)
            r = W.shape[0] // G  # output channels per group
            if a.asym:
                if G != 1:
                    raise ValueError(f"node {i}: --asym takes groups-1 layers only")
                Hx, Cx, sa, sb, cols = asym_sums(net, orig, i, x)
                Wf = orig["nodes"][i]["weight"].reshape(W.shape).double()
                Wt, Hc = asym_target(Wf, Hx, Cx, sa, sb, cols)
                part = [(Wt, Hc, nd["wscale"].view(-1))]
            else:
                Hi = H if a.float_inputs else hessians(i)
                part = [(W[g * r:(g + 1) * r], Hi[(i, g)], nd["wscale"].view(-1)[g * r:(g + 1) * r]) for g in range(G)]
            if a.scale_search:
                res = [gptq_scales(w, h, s, qmax, not a.no_act_order, a.damp, SCALE_FACTORS) for w, h, s in part]
                lev, sc = torch.cat([q for q, _ in res]), torch.cat([s for _, s in res])
                nd["wscale"] = sc
                f[f"nodes/{nd['key']}/wscale"][...] = sc.numpy().astype(np.float32)
                if i == net["output"]:
                    # the logits' scale is the largest input x weight scale (as ccq quantize sets it)
                    s_in = net["in_scale"] if nd["inputs"][0] < 0 else float(net["nodes"][int(nd["inputs"][0])]["act_scale"])
                    old_scale = np.asarray(f[f"nodes/{nd['key']}"].attrs["act_scale"])
                    f[f"nodes/{nd['key']}"].attrs["act_scale"] = np.full(old_scale.shape, s_in * float(sc.max()),
                                                                        dtype=old_scale.dtype)
            else:
                mask = None
                if a.sparsity > 0 and int(nd["bits"]) == a.prune_bits:
                    wf = np.abs(f[f"nodes/{nd['key']}/weight"][...].astype(np.float32).reshape(-1))
                    k = wf.size * round(a.sparsity * 1000) // 1000
                    m = np.zeros(wf.size, dtype=bool)
                    m[np.argsort(wf, kind="stable")[:k]] = True
                    mask = torch.from_numpy(m.reshape(W.shape[0], -1))
                lev = torch.cat([gptq(w, h, s, qmax, not a.no_act_order, a.damp,
                                      mask=None if mask is None else mask[g * r:(g + 1) * r])
                                 for g, (w, h, s) in enumerate(part)])
            if a.asym:
                bf = orig["nodes"][i].get("bias")
                bf = torch.zeros(W.shape[0], dtype=torch.float64) if bf is None else bf.double()
                b = Wf @ (sb / cols) + bf - (lev.double() * nd["wscale"].view(-1, 1).double()) @ (sa / cols)
                if f"nodes/{nd['key']}/bias" not in f:
                    raise ValueError(f"node {i}: --asym needs a bias dataset in the file")
                f[f"nodes/{nd['key']}/bias"][...] = b.numpy().astype(np.float32)
                nd["bias"] = b.float()
            old = f[f"nodes/{nd['key']}/levels"][...]
            new = lev.reshape(old.shape).numpy().astype(np.int8)
            changed += int((new != old).sum())
            f[f"nodes/{nd['key']}/levels"][...] = new
            if not a.float_inputs:
                # later layers see this layer's quantized weights
                nd["weight"] = (lev * nd["wscale"].view(-1, 1)).reshape(nd["weight"].shape)
    os.replace(tmp, a.out)
    print(f"gptq: wrote {a.out}: {changed} levels differ from the input's round-to-nearest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
