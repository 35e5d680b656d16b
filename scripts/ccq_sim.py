"""ccq_sim.py: a float simulation of ccq's integer network (fake quantization).

Reads a quantized ccq model file and computes, in float64 with PyTorch's
layers, what the integer engine computes (README "Integer engine"): every
tensor is dequantized (scale * (q - zp)), each op runs in float, and every
requantizing op (conv2d, linear, batchnorm, add, the average pools, mul, each
input of a concat, a standalone clip) rounds half away from zero onto its
uint8 grid, clamped to [0, 255] narrowed by a fused ReLU or Clip. pad, slice,
max pool, relu and flatten move levels exactly; act looks its output level up
in the file's table. The logits are the float output of the last layer. It
exists to check the C engine independently (tests/test_qnet.py) and is never
used by it; gptq.py and ste_finetune.py also walk their graphs with run() (the
latter with per-node weights, a straight-through rounding and float32).
run(quantized=False) is the float graph, also of unquantized model files
(load(path, quantized=False)): an independent float reference of the
converter's output.
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


def load(path, quantized=True):
    """A quantized ccq model file as dicts of attributes and float64 tensors
    (also used by gptq.py): net["nodes"][i] has the node's attributes, its
    datasets, and "key" (its group name). quantized=False also reads a float
    model file (for run(quantized=False) only)."""
    with h5py.File(path, "r") as f:
        if quantized and not f.attrs.get("quantized", 0):
            raise ValueError(f"{path}: not a quantized ccq model")
        gi = f["input"].attrs
        net = {"in_scale": float(gi["act_scale"]) if "act_scale" in gi else None,
               "in_zp": int(gi["act_zp"]) if "act_zp" in gi else None,
               "mean": gi["mean"].astype(np.float64), "std": gi["std"].astype(np.float64),
               "in_shape": [int(v) for v in gi["shape"]],
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
    if op == "conv2d":
        c["groups"] = int(nd.get("groups", 1))
    elif op == "pad":
        p = [int(v) for v in nd["pads"]]
        r = len(p) // 2
        c["pads"] = tuple(v for a in reversed(range(r)) for v in (p[a], p[r + a]))  # F.pad: last axis first
    elif op == "slice":
        # per axis (dim 1.. of the batch tensor): the indices start + i * step, i < the output's extent
        c["index"] = [(a + 1, torch.tensor([int(st) + i * int(sp) for i in range(int(n))]))
                      for a, (st, sp, n) in enumerate(zip(nd["start"], nd["step"], nd["shape"]))
                      if not (int(st) == 0 and int(sp) == 1 and int(n) == _in_shape(net, nd)[a])]
    elif op == "act":
        c["f"] = _act_fn(str(nd["fn"]), float(nd.get("alpha", 0.0)), float(nd.get("beta", 0.0)))
        if quantized:
            j = nd["inputs"][0]
            c["in_q"] = (net["in_scale"], net["in_zp"]) if j < 0 else \
                (float(net["nodes"][j]["act_scale"]), int(net["nodes"][j]["act_zp"]))
            c["table"] = nd["table"].to(dtype)
    if quantized and op not in ("flatten", "relu", "maxpool", "pad", "slice", "act") and i != net["output"]:
        c["bounds"] = _bounds(nd)
    return c


def _in_shape(net, nd):
    """The per-image shape of a node's first input."""
    j = nd["inputs"][0]
    return [int(v) for v in (net["nodes"][j]["shape"] if j >= 0 else net["in_shape"])]


def _round_scalar(v):
    """Half away from zero, one Python float (the engine rounds the clip bounds so)."""
    return float(np.sign(v) * np.floor(abs(v) + 0.5))


def _bounds(nd):
    """The output's level range [lo, hi]: [0, 255], lo = zp for a fused ReLU,
    narrowed by a fused Clip (zp + round(bound / scale)) or, for a clip node,
    by its own min and max."""
    s, zp = float(nd["act_scale"]), int(nd["act_zp"])
    lo, hi = (zp if int(nd.get("relu", 0)) else 0), 255
    clip = [float(v) for v in nd["clip"]] if "clip" in nd else \
        [float(nd["min"]), float(nd["max"])] if nd["op"] == "clip" else None
    if clip is not None:
        lo = max(lo, zp + _round_scalar(max(clip[0] / s, -1e9)))
        hi = min(hi, zp + _round_scalar(min(clip[1] / s, 1e9)))
    return lo, hi


def _act_fn(fn, alpha, beta):
    """The float function of an act node (ONNX semantics, README "Model file")."""
    if fn == "sigmoid":
        return torch.sigmoid
    if fn == "tanh":
        return torch.tanh
    if fn == "hardsigmoid":
        return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)
    if fn == "hardswish":
        return lambda x: x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)
    if fn == "leakyrelu":
        return lambda x: torch.where(x >= 0, x, alpha * x)
    if fn == "elu":
        return lambda x: torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0.0)))
    if fn == "gelu":
        return lambda x: 0.5 * x * (1.0 + torch.erf(x / np.sqrt(2.0)))
    if fn == "gelu_tanh":
        return lambda x: 0.5 * x * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x * x * x)))
    raise ValueError(f"unknown act fn {fn}")


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

    def rq(y, s, zp, lo, hi):
        """y rounded onto the grid s * (q - zp), q in [lo, hi] (the engine's requantization)."""
        if fq is not None:
            return fq(y, s, lo - zp, hi - zp)
        if rnd is _round and not (y.requires_grad and torch.is_grad_enabled()):
            return _requant(y, s, lo - zp, hi - zp)  # the same values, fewer passes
        return s * (torch.clamp(rnd(y / s) + zp, lo, hi) - zp)

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
                    y = F.conv2d(x, w, b, stride=k["stride"], padding=k["sym"], dilation=k["dilation"],
                                 groups=k["groups"])
                else:
                    xp = F.pad(x, k["pad"]) if any(k["pad"]) else x
                    y = F.conv2d(xp, w, b, stride=k["stride"], dilation=k["dilation"], groups=k["groups"])
            else:
                y = F.linear(x, w, b)
            if i == net["output"]:
                if "clip" in nd:  # a clip fused into the logits: its bounds on the logits' scale
                    s = float(nd["act_scale"]) if quantized else 0.0
                    lo, hi = (float(v) for v in nd["clip"])
                    if quantized:
                        lo, hi = s * _round_scalar(max(lo / s, -1e9)), s * _round_scalar(min(hi / s, 1e9))
                    y = torch.clamp(y, lo, hi)
                outs.append(y)
                continue
        elif op == "batchnorm":
            shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
            y = x * k["a"].view(shape) + k["sh"].view(shape)
        elif op == "add":
            y = ins[0] + ins[1]
        elif op == "mul":
            y = ins[0] * ins[1]  # the second is [C, 1, 1] or the first's shape
        elif op == "clip":
            # quantized: the input's levels clamped (the node keeps its input's scale)
            y = x if quantized else torch.clamp(x, float(nd["min"]), float(nd["max"]))
        elif op == "concat":
            if quantized:  # each input requantized to the output's scale, as one operand of add
                s, zp = float(nd["act_scale"]), int(nd["act_zp"])
                ins = [rq(t, s, zp, 0, 255) for t in ins]
            y = torch.cat(ins, dim=int(nd["axis"]) + 1)
            requant = False
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
            elif op == "pad":
                y = F.pad(x, k["pads"])  # real zero: the input's zero point
            elif op == "slice":
                y = x
                for dim, idx in k["index"]:
                    y = y.index_select(dim, idx)
            elif op == "act":
                if quantized:  # the output level of the input level, from the file's table
                    s_in, z_in = k["in_q"]
                    q = torch.clamp(_round(x.detach() / s_in) + z_in, 0, 255).long()
                    y = float(nd["act_scale"]) * (k["table"][q] - int(nd["act_zp"]))
                    if x.requires_grad and torch.is_grad_enabled():
                        # training: the table's values forward, the function's gradient backward
                        yf = k["f"](x)
                        y = yf + (y - yf).detach()
                else:
                    y = k["f"](x)
            else:
                raise ValueError(f"unknown op {op}")
        if requant:
            y = rq(y, float(nd["act_scale"]), int(nd["act_zp"]), *k["bounds"])
        else:
            if int(nd.get("relu", 0)):
                y = torch.clamp(y, min=0)
            if "clip" in nd:
                y = torch.clamp(y, float(nd["clip"][0]), float(nd["clip"][1]))
        th = int(nd.get("act_thresh", 0)) if quantized else 0
        if th:  # activation pruning: |level - zp| < th becomes real zero (y is s (level - zp))
            y = y * (torch.abs(y) >= (th - 0.5) * float(nd["act_scale"])).to(y.dtype)
        outs.append(y)
    return outs[net["output"]] if tensor else outs[net["output"]].numpy()
