"""ccq_sim.py: a float simulation of ccq's integer network (fake quantization).

Reads a quantized ccq model file and computes, in float64 with PyTorch's
layers, what the integer engine computes: every tensor is dequantized
(scale * (q - zp)), each op runs in float, and every requantizing op
(conv2d, linear, batchnorm, add) rounds half away from zero onto its uint8
grid. The logits are the float output of the last layer. It exists to check
the C engine independently (tests/test_qnet.py) and is never used by it;
gptq.py and ste_finetune.py also walk their graphs with run() (the latter
with per-node weights, a straight-through rounding and float32).
"""
import h5py
import numpy as np
import torch
import torch.nn.functional as F


def _round(v):
    return torch.sign(v) * torch.floor(torch.abs(v) + 0.5)


def _requant(y, s, lo, hi):
    """s * clamp(_round(y / s), lo, hi) with fewer temporaries (in place): the
    same values as the plain s * (clamp(_round(y / s) + zp, lo + zp, 255) - zp)
    (every intermediate is an integer, exact in float; only a zero's sign may
    differ). Not differentiable: callers use it without autograd."""
    t = y / s
    q = t.abs()
    return q.add_(0.5).floor_().copysign_(t).clamp_(lo, hi).mul_(s)


def load(path):
    """A quantized ccq model file as dicts of attributes and float64 tensors
    (also used by gptq.py): net["nodes"][i] has the node's attributes, its
    datasets, and "key" (its group name)."""
    with h5py.File(path, "r") as f:
        if not f.attrs.get("quantized", 0):
            raise ValueError(f"{path}: not a quantized ccq model")
        net = {"in_scale": float(f["input"].attrs["act_scale"]), "in_zp": int(f["input"].attrs["act_zp"]),
               "mean": f["input"].attrs["mean"].astype(np.float64), "std": f["input"].attrs["std"].astype(np.float64),
               "output": int(f.attrs["output"]), "nodes": []}
        for k in sorted(f["nodes"].keys()):
            g = f["nodes"][k]
            nd = {a: (v.decode() if isinstance(v, bytes) else v) for a, v in g.attrs.items()}
            nd["key"] = k
            for ds in g.keys():
                nd[ds] = torch.from_numpy(g[ds][...].astype(np.float64))
            net["nodes"].append(nd)
    return net


def _consts(net, i, nd, quantized, dtype):
    """Node i's constant tensors and arguments for run(), in dtype: its
    weight (levels * wscale, or the float weight), its bias (int32 at the
    accumulator's scale when quantized, as in the engine: rounded in
    float64), a batchnorm's scale and shift, and the ops' integer arguments."""
    cv = lambda t: t.to(dtype)  # noqa: E731  (no copy when already dtype)
    op, c = nd["op"], {}
    if op in ("conv2d", "linear"):
        if quantized:
            c["w"] = cv(nd["levels"] * nd["wscale"].view(-1, *([1] * (nd["levels"].dim() - 1))))
        elif "weight" in nd:
            c["w"] = cv(nd["weight"])
        b = nd.get("bias")
        if b is not None and quantized:
            # the bias is an int32 at the accumulator's scale, as in the engine
            s_in = net["in_scale"] if nd["inputs"][0] < 0 else float(net["nodes"][nd["inputs"][0]]["act_scale"])
            acc_scale = s_in * nd["wscale"]
            b = _round(b / acc_scale) * acc_scale
        c["b"] = None if b is None else cv(b)
    elif op == "batchnorm":
        a = nd["gamma"] / torch.sqrt(nd["var"] + float(nd["eps"]))
        c["a"], c["sh"] = cv(a), cv(nd["beta"] - nd["mean"] * a)
    if "pad" in nd:
        t, l, bo, r = (int(v) for v in nd["pad"])
        c["pad"] = (l, r, t, bo)  # F.pad's order
        c["sym"] = (t, l) if t == bo and l == r else None  # the conv's own padding, when symmetric
    for k in ("stride", "dilation", "kernel"):
        if k in nd:
            c[k] = tuple(int(v) for v in nd[k])
    return c


def run(net, images_u8, quantized=True, capture=None, weights=None, rnd=_round, dtype=torch.float64,
        tensor=False, fq=None, cache=None):
    """images_u8: uint8 [N, C, H, W] -> float64 logits [N, classes].

    quantized=True: the integer engine's network (levels, int32 biases, every
    requantizing op rounded onto its uint8 grid). quantized=False: the folded
    float graph the file also holds (gptq.py's view). capture(i, x), if
    given, sees the input of every conv2d/linear node.

    For training (ste_finetune.py): weights, a dict {node index: tensor},
    replaces those conv2d/linear nodes' real-valued weights (levels * wscale,
    or the float weight); rnd rounds the activations onto their grids (a
    straight-through variant keeps gradients); dtype is the arithmetic's
    (the fixed int32 biases are still rounded in float64); tensor=True
    returns the logits as a tensor (autograd intact) instead of numpy.
    fq(y, s, lo, hi), if given, replaces each whole requantization
    s * clamp(rnd(y / s), lo, hi) (lo, hi: the grid's bounds minus its zero
    point) and marks a training forward: convolutions then pad implicitly
    (the same zeros, no padded copy; it may sum in another order). cache, a
    dict the caller keeps for one net and dtype, holds the nodes' constant
    tensors between calls. The defaults are the plain simulation."""
    x_u8 = torch.from_numpy(np.ascontiguousarray(images_u8)).to(dtype)  # integers: exact in any float type
    if quantized:
        x_in = net["in_scale"] * (x_u8 - net["in_zp"])
    else:
        c = x_u8.shape[1]
        cv = lambda t: t.to(dtype)  # noqa: E731
        mean, std = cv(torch.tensor(net["mean"])).view(1, c, 1, 1), cv(torch.tensor(net["std"])).view(1, c, 1, 1)
        x_in = (x_u8 / 255.0 - mean) / std
    outs = []
    for i, nd in enumerate(net["nodes"]):
        if cache is None:
            k = _consts(net, i, nd, quantized, dtype)
        else:
            k = cache.get((i, quantized, dtype))
            if k is None:
                k = cache[(i, quantized, dtype)] = _consts(net, i, nd, quantized, dtype)
        ins = [x_in if j < 0 else outs[j] for j in nd["inputs"]]
        x = ins[0]
        op = nd["op"]
        requant = quantized
        if op in ("conv2d", "linear"):
            if capture:
                capture(i, x)
            w = weights[i] if weights is not None and i in weights else k["w"]
            b = k["b"]
            if op == "conv2d":
                # pad with the real value of the input zero point: 0
                if fq is not None and k["sym"] is not None:
                    y = F.conv2d(x, w, b, stride=k["stride"], padding=k["sym"], dilation=k["dilation"])
                else:
                    xp = F.pad(x, k["pad"]) if any(k["pad"]) else x
                    y = F.conv2d(xp, w, b, stride=k["stride"], dilation=k["dilation"])
            else:
                y = F.linear(x, w, b)
            if i == net["output"]:
                outs.append(y)
                continue
        elif op == "batchnorm":
            shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
            y = x * k["a"].view(shape) + k["sh"].view(shape)
        elif op == "add":
            y = ins[0] + ins[1]
        else:
            requant = quantized and op in ("avgpool", "globalavgpool")
            if op == "relu":
                y = torch.clamp(x, min=0)
            elif op == "maxpool":
                xp = F.pad(x, k["pad"], value=-1e30) if any(k["pad"]) else x
                y = F.max_pool2d(xp, k["kernel"], k["stride"], ceil_mode=bool(nd["ceil_mode"]))
            elif op == "avgpool":
                if k["sym"] is not None:
                    y = F.avg_pool2d(x, k["kernel"], k["stride"], k["sym"], ceil_mode=bool(nd["ceil_mode"]),
                                     count_include_pad=bool(nd["count_include_pad"]))
                else:
                    raise NotImplementedError("asymmetric avgpool padding in the simulation")
            elif op == "globalavgpool":
                y = x.mean(dim=(2, 3), keepdim=True)
            elif op == "flatten":
                y = torch.flatten(x, 1)
            else:
                raise ValueError(f"unknown op {op}")
        if requant:
            s, zp = float(nd["act_scale"]), int(nd["act_zp"])
            lo = zp if int(nd.get("relu", 0)) else 0
            if fq is not None:
                y = fq(y, s, lo - zp, 255 - zp)
            elif rnd is _round and not (y.requires_grad and torch.is_grad_enabled()):
                y = _requant(y, s, lo - zp, 255 - zp)  # the same values, fewer passes
            else:
                q = torch.clamp(rnd(y / s) + zp, lo, 255)
                y = s * (q - zp)
        elif int(nd.get("relu", 0)):
            y = torch.clamp(y, min=0)
        outs.append(y)
    return outs[net["output"]] if tensor else outs[net["output"]].numpy()
