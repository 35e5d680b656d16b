#!/usr/bin/env python3
"""onnx2ccq.py: convert an ONNX image classifier into a ccq model file.

  onnx2ccq.py IN.onnx OUT.h5 [--name NAME] [--mean M[,M..]] [--std S[,S..]]

Accepts graphs built from Conv (groups=1), BatchNormalization, Relu, MaxPool,
AveragePool, GlobalAveragePool, Gemm / MatMul(+Add), Flatten / flattening
Reshape and Add of two equal-shape tensors, i.e. what torch.onnx.export emits
for such models at opset 13 or later, with the usual constant shape plumbing
(Constant, Shape, Gather, Unsqueeze, Concat, Squeeze, Cast) evaluated here.
Identity and Dropout pass through. Anything else, or any attribute ccq cannot
honour, is an error naming the node: the converter never writes a model that
computes something different from the ONNX graph.

--mean/--std give the input normalisation in units of pixel/255, one value
per input channel (or one for all): ccq feeds the network
(pixel/255 - mean) / std. The layout it writes is documented in README.md
("Model file"); a file is written only when the whole graph converted.
"""
import argparse
import os
import sys

import numpy as np

FORMAT = "ccq-model"
VERSION = 1
BATCH = -(2 ** 40)  # stands for the dynamic batch size inside constant shape arithmetic


class ConvertError(Exception):
    pass


def node_label(n):
    return f"node '{n.name or n.output[0]}' ({n.op_type})"


class Converter:
    def __init__(self, model):
        import onnx
        from onnx import numpy_helper
        self.onnx = onnx
        self.nh = numpy_helper
        self.g = model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.env = {}     # tensor name -> ("node", index) | ("input",) ; shapes in self.shape
        self.shape = {}   # tensor name -> tuple without batch
        self.nodes = []   # dicts written to the file, topological order

    # ---- helpers -------------------------------------------------------
    def attrs(self, n, allowed):
        out = {}
        for a in n.attribute:
            if a.name not in allowed:
                raise ConvertError(f"{node_label(n)}: unsupported attribute '{a.name}'")
            out[a.name] = self.onnx.helper.get_attribute_value(a)
        for k, v in allowed.items():
            out.setdefault(k, v)
        for k, v in out.items():
            if isinstance(v, bytes):
                out[k] = v.decode()
        return out

    def const(self, n, name, what):
        if name not in self.consts:
            raise ConvertError(f"{node_label(n)}: {what} '{name}' must be a constant")
        return self.consts[name]

    def tensor(self, n, name):
        if name not in self.env:
            if name in self.consts:
                raise ConvertError(f"{node_label(n)}: constant input '{name}' where a computed tensor is expected")
            raise ConvertError(f"{node_label(n)}: input '{name}' is not produced by any supported node")
        return self.env[name]

    def src_index(self, ref):
        return -1 if ref[0] == "input" else ref[1]

    def emit(self, n, op, inputs, shape, attrs=None, data=None):
        for v in (data or {}).values():
            if not np.all(np.isfinite(v)):
                raise ConvertError(f"{node_label(n)}: non-finite value in weights")
        self.nodes.append({"op": op, "name": n.name or n.output[0], "inputs": [self.src_index(r) for r in inputs],
                           "shape": tuple(int(s) for s in shape), "attrs": attrs or {}, "data": data or {}})
        ref = ("node", len(self.nodes) - 1)
        self.env[n.output[0]] = ref
        self.shape[n.output[0]] = tuple(int(s) for s in shape)
        return ref

    def alias(self, n, src):
        self.env[n.output[0]] = self.env[src]
        self.shape[n.output[0]] = self.shape[src]

    @staticmethod
    def pool_out(size, k, s, p0, p1, d, ceil):
        eff = d * (k - 1) + 1
        num = size + p0 + p1 - eff
        if num < 0:
            return 0
        o = (-(-num // s) if ceil else num // s) + 1
        if ceil and (o - 1) * s >= size + p0:
            o -= 1  # the last window must start inside the input or the left padding
        return o

    def spatial(self, n, a, in_hw, k):
        """Resolve pads (with auto_pad) and return (pads t,l,b,r, out h,w)."""
        strides = list(a["strides"] or [1, 1])
        dil = list(a.get("dilations") or [1, 1])
        if len(strides) != 2 or len(dil) != 2 or len(k) != 2:
            raise ConvertError(f"{node_label(n)}: only 2-D spatial ops are supported")
        if min(strides) < 1 or min(dil) < 1 or min(k) < 1:
            raise ConvertError(f"{node_label(n)}: kernel, strides and dilations must be positive")
        ap = a.get("auto_pad", "NOTSET")
        if ap in ("NOTSET", ""):
            pads = list(a["pads"] or [0, 0, 0, 0])
            if len(pads) != 4 or min(pads) < 0:
                raise ConvertError(f"{node_label(n)}: pads must be 4 non-negative values")
            pads = [pads[0], pads[1], pads[2], pads[3]]  # ONNX: h_begin, w_begin, h_end, w_end
        elif ap == "VALID":
            pads = [0, 0, 0, 0]
        elif ap in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0, 0, 0, 0]
            for i in range(2):
                out = -(-in_hw[i] // strides[i])
                tot = max(0, (out - 1) * strides[i] + dil[i] * (k[i] - 1) + 1 - in_hw[i])
                lo = tot // 2 if ap == "SAME_UPPER" else tot - tot // 2
                pads[i], pads[i + 2] = lo, tot - lo
        else:
            raise ConvertError(f"{node_label(n)}: unsupported auto_pad '{ap}'")
        ceil = int(a.get("ceil_mode", 0))
        out = [self.pool_out(in_hw[i], k[i], strides[i], pads[i], pads[i + 2], dil[i], ceil) for i in range(2)]
        if min(out) < 1:
            raise ConvertError(f"{node_label(n)}: output would be empty for input {tuple(in_hw)}")
        # ccq order: top, left, bottom, right
        return [pads[0], pads[1], pads[2], pads[3]], strides, dil, out

    # ---- ops -----------------------------------------------------------
    def op_Conv(self, n):
        a = self.attrs(n, {"kernel_shape": None, "strides": None, "pads": None, "dilations": None,
                           "group": 1, "auto_pad": "NOTSET"})
        x = self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        w = self.const(n, n.input[1], "weight").astype(np.float32)
        if a["group"] != 1:
            raise ConvertError(f"{node_label(n)}: group={a['group']} is not supported (only groups=1)")
        if len(xs) != 3 or w.ndim != 4:
            raise ConvertError(f"{node_label(n)}: only 2-D convolution on C,H,W tensors is supported")
        if w.shape[1] != xs[0]:
            raise ConvertError(f"{node_label(n)}: weight has {w.shape[1]} input channels, input has {xs[0]}")
        k = list(a["kernel_shape"] or w.shape[2:])
        if tuple(k) != tuple(w.shape[2:]):
            raise ConvertError(f"{node_label(n)}: kernel_shape {k} does not match weight {w.shape}")
        pads, strides, dil, out = self.spatial(n, a, xs[1:], k)
        data = {"weight": w}
        if len(n.input) > 2 and n.input[2]:
            b = self.const(n, n.input[2], "bias").astype(np.float32).reshape(-1)
            if b.shape != (w.shape[0],):
                raise ConvertError(f"{node_label(n)}: bias shape {b.shape} does not match {w.shape[0]} outputs")
            data["bias"] = b
        self.emit(n, "conv2d", [x], (w.shape[0], out[0], out[1]),
                  {"kernel": k, "stride": strides, "pad": pads, "dilation": dil}, data)

    def op_BatchNormalization(self, n):
        a = self.attrs(n, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0, "spatial": 1})
        if a["training_mode"] or len([o for o in n.output if o]) > 1:
            raise ConvertError(f"{node_label(n)}: training-mode BatchNormalization is not supported (export in eval mode)")
        x = self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        names = ("gamma", "beta", "mean", "var")
        data = {k: self.const(n, n.input[i + 1], k).astype(np.float32).reshape(-1) for i, k in enumerate(names)}
        for k, v in data.items():
            if v.shape != (xs[0],):
                raise ConvertError(f"{node_label(n)}: {k} has shape {v.shape}, input has {xs[0]} channels")
        if np.any(data["var"] < 0):
            raise ConvertError(f"{node_label(n)}: negative running variance")
        self.emit(n, "batchnorm", [x], xs, {"eps": np.float32(a["epsilon"])}, data)

    def op_Relu(self, n):
        self.attrs(n, {})
        self.emit(n, "relu", [self.tensor(n, n.input[0])], self.shape[n.input[0]])

    def _pool(self, n, op, allowed):
        a = self.attrs(n, allowed)
        if len([o for o in n.output if o]) > 1:
            raise ConvertError(f"{node_label(n)}: the Indices output is not supported")
        x = self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        if len(xs) != 3:
            raise ConvertError(f"{node_label(n)}: pooling needs a C,H,W input")
        if a.get("storage_order", 0) != 0:
            raise ConvertError(f"{node_label(n)}: storage_order=1 is not supported")
        if a.get("dilations") and list(a["dilations"]) != [1, 1]:
            raise ConvertError(f"{node_label(n)}: pooling dilations are not supported")
        k = list(a["kernel_shape"])
        pads, strides, _, out = self.spatial(n, a, xs[1:], k)
        attrs = {"kernel": k, "stride": strides, "pad": pads, "ceil_mode": int(a["ceil_mode"])}
        if op == "avgpool":
            attrs["count_include_pad"] = int(a["count_include_pad"])
        if max(pads[0], pads[2]) >= k[0] or max(pads[1], pads[3]) >= k[1]:
            raise ConvertError(f"{node_label(n)}: padding must be smaller than the kernel")
        self.emit(n, op, [x], (xs[0], out[0], out[1]), attrs)

    def op_MaxPool(self, n):
        self._pool(n, "maxpool", {"kernel_shape": None, "strides": None, "pads": None, "dilations": None,
                                  "ceil_mode": 0, "auto_pad": "NOTSET", "storage_order": 0})

    def op_AveragePool(self, n):
        self._pool(n, "avgpool", {"kernel_shape": None, "strides": None, "pads": None, "dilations": None,
                                  "ceil_mode": 0, "auto_pad": "NOTSET", "count_include_pad": 0})

    def op_GlobalAveragePool(self, n):
        self.attrs(n, {})
        xs = self.shape[n.input[0]]
        if len(xs) != 3:
            raise ConvertError(f"{node_label(n)}: GlobalAveragePool needs a C,H,W input")
        self.emit(n, "globalavgpool", [self.tensor(n, n.input[0])], (xs[0], 1, 1))

    def _flatten_to(self, n, src):
        xs = self.shape[src]
        if len(xs) == 1:
            self.alias(n, src)
        else:
            self.emit(n, "flatten", [self.tensor(n, src)], (int(np.prod(xs)),))

    def op_Flatten(self, n):
        a = self.attrs(n, {"axis": 1})
        if a["axis"] != 1:
            raise ConvertError(f"{node_label(n)}: Flatten axis={a['axis']} is not supported (only 1)")
        self._flatten_to(n, n.input[0])

    def op_Reshape(self, n):
        a = self.attrs(n, {"allowzero": 0})
        if n.input[0] in self.consts:
            self.consts[n.output[0]] = self.consts[n.input[0]].reshape(self.const(n, n.input[1], "shape"))
            return
        self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        tgt = [int(v) for v in self.const(n, n.input[1], "shape").reshape(-1)]
        total = int(np.prod(xs))
        ok = len(tgt) == 2 and (tgt[0] in (BATCH, 0, -1) if not a["allowzero"] else tgt[0] in (BATCH, -1)) \
            and tgt[1] in (-1, total) and not (tgt[0] == -1 and tgt[1] == -1)
        if tgt[0] == -1 and tgt[1] != total:
            ok = False
        if not ok:
            raise ConvertError(f"{node_label(n)}: only a Reshape to (batch, -1) is supported, found {tgt}")
        self._flatten_to(n, n.input[0])

    def op_Gemm(self, n):
        a = self.attrs(n, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
        if a["transA"]:
            raise ConvertError(f"{node_label(n)}: transA=1 is not supported")
        x = self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        w = self.const(n, n.input[1], "weight B").astype(np.float32)
        w = w if a["transB"] else w.T
        w = np.ascontiguousarray(w * np.float32(a["alpha"])) if a["alpha"] != 1.0 else np.ascontiguousarray(w)
        if len(xs) != 1 or w.ndim != 2 or w.shape[1] != xs[0]:
            raise ConvertError(f"{node_label(n)}: weight {w.shape} does not fit input of {xs} features")
        data = {"weight": w}
        if len(n.input) > 2 and n.input[2]:
            b = self.const(n, n.input[2], "bias C").astype(np.float32) * np.float32(a["beta"])
            if b.size != w.shape[0] or (b.ndim == 2 and b.shape[0] != 1):
                raise ConvertError(f"{node_label(n)}: bias {b.shape} does not fit {w.shape[0]} outputs")
            data["bias"] = b.reshape(-1)
        self.emit(n, "linear", [x], (w.shape[0],), {}, data)

    def op_MatMul(self, n):
        self.attrs(n, {})
        x = self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        w = self.const(n, n.input[1], "weight").astype(np.float32)
        if len(xs) != 1 or w.ndim != 2 or w.shape[0] != xs[0]:
            raise ConvertError(f"{node_label(n)}: only (batch, features) x constant matrix is supported, "
                               f"found input {xs} and weight {w.shape}")
        self.emit(n, "linear", [x], (w.shape[1],), {}, {"weight": np.ascontiguousarray(w.T)})

    def op_Add(self, n):
        self.attrs(n, {})
        a, b = n.input[0], n.input[1]
        if a in self.consts and b in self.consts:
            self.consts[n.output[0]] = self.consts[a] + self.consts[b]
            return
        if a in self.consts or b in self.consts:
            t, c = (b, a) if a in self.consts else (a, b)
            ref = self.tensor(n, t)
            prod = self.nodes[ref[1]] if ref[0] == "node" else None
            bias = self.consts[c].astype(np.float32)
            if prod is None or prod["op"] != "linear" or "bias" in prod["data"] or bias.size != prod["shape"][0]:
                raise ConvertError(f"{node_label(n)}: adding a constant is only supported as a linear layer's bias")
            if len(self.consumers.get(t, [])) != 1:
                raise ConvertError(f"{node_label(n)}: the MatMul output is used elsewhere; cannot fold the bias")
            if not np.all(np.isfinite(bias)):
                raise ConvertError(f"{node_label(n)}: non-finite value in weights")
            prod["data"]["bias"] = bias.reshape(-1)
            self.env[n.output[0]] = ref
            self.shape[n.output[0]] = self.shape[t]
            return
        ra, rb = self.tensor(n, a), self.tensor(n, b)
        if self.shape[a] != self.shape[b]:
            raise ConvertError(f"{node_label(n)}: Add of shapes {self.shape[a]} and {self.shape[b]} (broadcast is not supported)")
        self.emit(n, "add", [ra, rb], self.shape[a])

    def op_Identity(self, n):
        self.attrs(n, {})
        if n.input[0] in self.consts:
            self.consts[n.output[0]] = self.consts[n.input[0]]
        else:
            self.alias(n, n.input[0])

    def op_Dropout(self, n):
        self.attrs(n, {"seed": 0, "ratio": 0.5})
        if len(n.input) > 2 and n.input[2]:
            tm = self.consts.get(n.input[2])
            if tm is None or bool(tm):
                raise ConvertError(f"{node_label(n)}: Dropout in training mode is not supported")
        self.alias(n, n.input[0])

    # constant shape plumbing --------------------------------------------
    def op_Constant(self, n):
        a = self.attrs(n, {"value": None, "value_int": None, "value_ints": None,
                           "value_float": None, "value_floats": None})
        if a["value"] is not None:
            v = self.nh.to_array(a["value"])
        elif a["value_int"] is not None:
            v = np.array(a["value_int"], dtype=np.int64)
        elif a["value_ints"] is not None:
            v = np.array(a["value_ints"], dtype=np.int64)
        elif a["value_float"] is not None:
            v = np.array(a["value_float"], dtype=np.float32)
        elif a["value_floats"] is not None:
            v = np.array(a["value_floats"], dtype=np.float32)
        else:
            raise ConvertError(f"{node_label(n)}: unsupported Constant form")
        self.consts[n.output[0]] = v

    def op_Shape(self, n):
        a = self.attrs(n, {"start": 0, "end": None})
        self.tensor(n, n.input[0])
        full = np.array((BATCH,) + self.shape[n.input[0]], dtype=np.int64)
        self.consts[n.output[0]] = full[a["start"]:a["end"]]

    def op_Gather(self, n):
        a = self.attrs(n, {"axis": 0})
        d = self.const(n, n.input[0], "data")
        i = self.const(n, n.input[1], "indices")
        self.consts[n.output[0]] = np.take(d, i, axis=a["axis"])

    def op_Unsqueeze(self, n):
        self.attrs(n, {"axes": None})
        d = self.const(n, n.input[0], "data")
        axes = self.const(n, n.input[1], "axes") if len(n.input) > 1 else None
        self.consts[n.output[0]] = np.expand_dims(d, tuple(int(v) for v in np.reshape(axes, -1)))

    def op_Squeeze(self, n):
        self.attrs(n, {"axes": None})
        d = self.const(n, n.input[0], "data")
        axes = self.const(n, n.input[1], "axes") if len(n.input) > 1 else None
        self.consts[n.output[0]] = np.squeeze(d, None if axes is None else tuple(int(v) for v in np.reshape(axes, -1)))

    def op_Concat(self, n):
        a = self.attrs(n, {"axis": 0})
        self.consts[n.output[0]] = np.concatenate([self.const(n, i, "input") for i in n.input], axis=a["axis"])

    def op_Cast(self, n):
        a = self.attrs(n, {"to": None})
        d = self.const(n, n.input[0], "input")
        self.consts[n.output[0]] = d.astype(self.onnx.helper.tensor_dtype_to_np_dtype(a["to"])
                                            if hasattr(self.onnx.helper, "tensor_dtype_to_np_dtype")
                                            else self.onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[a["to"]])

    # ---- driver --------------------------------------------------------
    def run(self):
        real_inputs = [i for i in self.g.input if i.name not in self.consts]
        if len(real_inputs) != 1:
            raise ConvertError(f"the graph must have exactly one non-constant input, found {len(real_inputs)}")
        inp = real_inputs[0]
        tt = inp.type.tensor_type
        if tt.elem_type != self.onnx.TensorProto.FLOAT:
            raise ConvertError(f"input '{inp.name}' must be float32")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) != 4 or any(d is None or d < 1 for d in dims[1:]):
            raise ConvertError(f"input '{inp.name}' must have static shape (N, C, H, W), found {dims}")
        self.in_shape = tuple(dims[1:])
        self.env[inp.name] = ("input",)
        self.shape[inp.name] = self.in_shape
        self.consumers = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        for n in self.g.node:
            if n.domain not in ("", "ai.onnx"):
                raise ConvertError(f"{node_label(n)}: operator domain '{n.domain}' is not supported")
            fn = getattr(self, "op_" + n.op_type, None)
            if fn is None:
                raise ConvertError(f"{node_label(n)}: unsupported operator")
            fn(n)
        if len(self.g.output) != 1:
            raise ConvertError(f"the graph must have exactly one output, found {len(self.g.output)}")
        out = self.g.output[0].name
        if out not in self.env or self.env[out][0] != "node":
            raise ConvertError(f"output '{out}' is not computed by a supported node")
        if len(self.shape[out]) != 1:
            raise ConvertError(f"output '{out}' has shape {self.shape[out]}; ccq needs (batch, classes) logits")
        return self.prune(self.env[out][1])

    def prune(self, out_idx):
        """Drop nodes the output does not depend on; renumber inputs."""
        live, stack = set(), [out_idx]
        while stack:
            i = stack.pop()
            if i in live or i < 0:
                continue
            live.add(i)
            stack.extend(self.nodes[i]["inputs"])
        order = sorted(live)
        remap = {old: new for new, old in enumerate(order)}
        remap[-1] = -1
        nodes = []
        for old in order:
            nd = dict(self.nodes[old])
            nd["inputs"] = [remap[i] for i in nd["inputs"]]
            nodes.append(nd)
        return nodes


def parse_floats(s, what, channels):
    try:
        v = [float(x) for x in s.split(",")]
    except ValueError:
        raise ConvertError(f"--{what} '{s}': not a comma-separated list of numbers")
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise ConvertError(f"--{what}: {len(v)} values for {channels} input channels")
    if not all(np.isfinite(v)) or (what == "std" and min(v) <= 0):
        raise ConvertError(f"--{what}: values must be finite" + (" and positive" if what == "std" else ""))
    return np.array(v, dtype=np.float32)


def write(path, name, in_shape, mean, std, nodes):
    import h5py
    tmp = path + ".tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = np.bytes_(FORMAT)
            f.attrs["version"] = np.int32(VERSION)
            f.attrs["name"] = np.bytes_(name)
            f.attrs["output"] = np.int32(len(nodes) - 1)
            gi = f.create_group("input")
            gi.attrs["shape"] = np.array(in_shape, dtype=np.int32)
            gi.attrs["mean"] = mean
            gi.attrs["std"] = std
            gn = f.create_group("nodes")
            gn.attrs["count"] = np.int32(len(nodes))
            for i, nd in enumerate(nodes):
                g = gn.create_group(f"{i:04d}")
                g.attrs["op"] = np.bytes_(nd["op"])
                g.attrs["name"] = np.bytes_(nd["name"])
                g.attrs["inputs"] = np.array(nd["inputs"], dtype=np.int32)
                g.attrs["shape"] = np.array(nd["shape"], dtype=np.int32)
                for k, v in nd["attrs"].items():
                    if isinstance(v, (np.floating, float)):
                        g.attrs[k] = np.float32(v)
                    else:
                        g.attrs[k] = np.array(v, dtype=np.int32)
                for k, v in nd["data"].items():
                    g.create_dataset(k, data=np.ascontiguousarray(v, dtype=np.float32))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert an ONNX image classifier into a ccq model file.")
    ap.add_argument("onnx_in", metavar="IN.onnx")
    ap.add_argument("out", metavar="OUT.h5")
    ap.add_argument("--name", help="model name stored in the file (default: the input file's stem)")
    ap.add_argument("--mean", default="0", help="input mean per channel, pixel/255 units (default 0)")
    ap.add_argument("--std", default="1", help="input std per channel, pixel/255 units (default 1)")
    a = ap.parse_args(argv)
    try:
        import onnx
        import warnings
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # protobuf warns on garbage; we report it ourselves
                model = onnx.load(a.onnx_in)
        except FileNotFoundError:
            raise ConvertError("file not found")
        except Exception as e:  # onnx raises DecodeError and friends for non-ONNX bytes
            raise ConvertError(f"not a readable ONNX model ({type(e).__name__})")
        conv = Converter(model)
        nodes = conv.run()
        c = conv.in_shape[0]
        mean = parse_floats(a.mean, "mean", c)
        std = parse_floats(a.std, "std", c)
        name = a.name or os.path.splitext(os.path.basename(a.onnx_in))[0]
        write(a.out, name, conv.in_shape, mean, std, nodes)
    except ConvertError as e:
        print(f"onnx2ccq: {a.onnx_in}: {e}", file=sys.stderr)
        return 1
    print(f"onnx2ccq: wrote {a.out}: {len(nodes)} nodes, input {conv.in_shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
