#!/usr/bin/env python3
"""onnx2ccq.py: convert an ONNX image classifier into a ccq model file.

  onnx2ccq.py IN.onnx OUT.h5 [--name NAME] [--mean M[,M..]] [--std S[,S..]]

Accepts graphs built from Conv (any groups: depthwise, channel multipliers),
BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, Gemm /
MatMul(+Add), Flatten / flattening Reshape, Add of two equal-shape tensors,
Mul of two runtime tensors (equal shapes, or one [C,1,1] broadcast over H, W),
Pad (constant zeros, any axis but the batch; negative pads crop), Slice (any
steps, on any axis but the batch; chained slices merge), Concat of runtime
tensors (channels, H or W), Clip (Relu6), Sigmoid, HardSigmoid, HardSwish,
Tanh, LeakyRelu, Elu and Gelu: what torch.onnx.export emits for such models
at opset 13 to 17. Three multi-node spellings are recognised and fused: GELU
as torch exports it below opset 20, x * 0.5 * (1 + erf(x / sqrt 2)) and the
tanh form x * 0.5 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); HardSwish as
x * HardSigmoid(x) (opset 13); Relu then Clip(0, 6) becomes one clip. A Mul
or Div by a constant folds into a conv/linear/batchnorm that only feeds it.
Constant subgraphs (the shape and padding arithmetic torch emits: Constant,
Shape, Gather, Unsqueeze, Squeeze, Concat, Cast, Reshape, Slice, Transpose,
ConstantOfShape, Add/Sub/Mul/Div) are evaluated here. Identity and Dropout
pass through. Anything else, or any attribute ccq cannot honour, is an error
naming the node: the converter never writes a model that computes something
different from the ONNX graph.

--mean/--std give the input normalisation in units of pixel/255, one value
per input channel (or one for all): ccq feeds the network
(pixel/255 - mean) / std. The layout it writes is documented in README.md
("Model file"); a file is written only when the whole graph converted.

A graph in QDQ form (QuantizeLinear/DequantizeLinear: `ccq export --format
onnx`, and other quantizers' per-output-channel symmetric int8 weights,
int32 biases at s_in * s_w and per-tensor uint8 activations) becomes a
quantized model file instead, `ccq eval` and `ccq search` ready: the levels,
float32 weight scales, activation scales and zero points and act tables as
they are (a ccq export's round trip gives identical int32 logits), a ReLU or
Clip between a layer and its QuantizeLinear fused as `ccq quantize` fuses
it, act tables of Sigmoid & co. computed as `ccq quantize` computes them. A
convention ccq cannot represent exactly (non-zero weight zero points,
per-channel or int8 activations, a bias at another scale, an op reading a
uint8 tensor other than ccq's act Gather, a requantization between a
QuantizeLinear and its DequantizeLinear) is an error naming the node.
"""
import argparse
import os
import sys

import numpy as np

FORMAT = "ccq-model"
VERSION = 1
BATCH = -(2 ** 40)  # stands for the dynamic batch size inside constant shape arithmetic


NO_BOUND = np.float32(3.4e38)  # a clip bound that is absent (README: +-3.4e38)
MAX_CONCAT = 64                # inputs of one concat node (README)
SQRT2 = float(np.sqrt(2.0))
GELU_TANH_K = float(np.sqrt(2.0 / np.pi))
GELU_TANH_C = 0.044715

# ONNX activation -> (ccq fn, ONNX attributes with their defaults). alpha and
# beta are written on every act node (0 where the function has none).
ACTS = {"Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "HardSwish": ("hardswish", {}),
        "HardSigmoid": ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}),
        "LeakyRelu": ("leakyrelu", {"alpha": 0.01}), "Elu": ("elu", {"alpha": 1.0})}


class ConvertError(Exception):
    pass


def node_label(n):
    return f"node '{n.name or n.output[0]}' ({n.op_type})"


def near(v, want, rtol=1e-5):
    """v is a one-element constant within rtol of want (float32 spellings of
    sqrt 2, 0.044715 and the like pass)."""
    return v is not None and v.size == 1 and abs(float(v.reshape(-1)[0]) - want) <= rtol * abs(want)


def slice_range(start, end, step, dim):
    """ONNX Slice on one axis of extent dim: (first index, count), with
    negative and out-of-range starts/ends normalised as ONNX does."""
    start, end, step = int(start), int(end), int(step)
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        return start, max(0, -(-(end - start) // step))
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return start, max(0, -(-(start - end) // -step))


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
        self.graph_nodes = list(self.g.node)  # the ONNX nodes, after fuse_patterns()
        self.outputs = {o.name for o in self.g.output}
        self.index()

    # ---- helpers -------------------------------------------------------
    def index(self):
        """Producer and consumers of every tensor of self.graph_nodes."""
        self.producer, self.consumers = {}, {}
        for n in self.graph_nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)

    def single_use(self, name):
        """name feeds exactly one node and is not a graph output: that node may absorb its producer."""
        return len(self.consumers.get(name, [])) == 1 and name not in self.outputs

    def sole_user(self, name):
        """The emitted node computing name feeds only the node now converted (no
        other tensor aliases it through Identity/Dropout): it may be changed in place."""
        ref = self.env.get(name)
        return self.single_use(name) and sum(1 for v in self.env.values() if v == ref) == 1

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

    def opt_const(self, n, i, what):
        """The constant at optional input i of n, or None if the input is absent."""
        return self.const(n, n.input[i], what) if len(n.input) > i and n.input[i] else None

    def tensor(self, n, name):
        if name not in self.env:
            if name in self.consts:
                raise ConvertError(f"{node_label(n)}: constant input '{name}' where a computed tensor is expected")
            raise ConvertError(f"{node_label(n)}: input '{name}' is not produced by any supported node")
        return self.env[name]

    def src_index(self, ref):
        return -1 if ref[0] == "input" else ref[1]

    def producer_node(self, name):
        """The emitted ccq node computing tensor name, or None (network input)."""
        ref = self.env.get(name)
        return self.nodes[ref[1]] if ref is not None and ref[0] == "node" else None

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

    def retarget(self, n, src):
        """The node computing src (its sole user is n) was changed in place to
        compute n's output: src no longer names it."""
        self.alias(n, src)
        del self.env[src]

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

    def image_axis(self, n, axis, rank, what="axis"):
        """An ONNX axis of a (batch, ...) tensor of rank + 1 dims, normalised;
        the batch axis is refused."""
        axis = int(axis)
        if axis < 0:
            axis += rank + 1
        if not 0 <= axis <= rank:
            raise ConvertError(f"{node_label(n)}: {what} {axis} out of range for a rank-{rank + 1} tensor")
        if axis == 0:
            raise ConvertError(f"{node_label(n)}: {what} 0 is the batch axis, which ccq cannot change")
        return axis

    # ---- constant subgraphs ----------------------------------------------
    # Nodes whose inputs are all constants are evaluated here with numpy: the
    # shape and padding arithmetic exporters emit. Each returns the output.
    def c_Constant(self, n, ins):
        a = self.attrs(n, {"value": None, "value_int": None, "value_ints": None,
                           "value_float": None, "value_floats": None})
        if a["value"] is not None:
            return self.nh.to_array(a["value"])
        for k, dt in (("value_int", np.int64), ("value_ints", np.int64),
                      ("value_float", np.float32), ("value_floats", np.float32)):
            if a[k] is not None:
                return np.array(a[k], dtype=dt)
        raise ConvertError(f"{node_label(n)}: unsupported Constant form")

    def c_Identity(self, n, ins):
        self.attrs(n, {})
        return ins[0]

    def c_Shape(self, n, ins):
        a = self.attrs(n, {"start": 0, "end": None})
        return np.array(ins[0].shape, dtype=np.int64)[a["start"]:a["end"]]

    def c_Gather(self, n, ins):
        a = self.attrs(n, {"axis": 0})
        return np.take(ins[0], ins[1], axis=a["axis"])

    def _axes(self, n, ins, a):
        axes = ins[1] if len(ins) > 1 and ins[1] is not None else a["axes"]
        return None if axes is None else tuple(int(v) for v in np.reshape(axes, -1))

    def c_Unsqueeze(self, n, ins):
        a = self.attrs(n, {"axes": None})
        return np.expand_dims(ins[0], self._axes(n, ins, a))

    def c_Squeeze(self, n, ins):
        a = self.attrs(n, {"axes": None})
        return np.squeeze(ins[0], self._axes(n, ins, a))

    def c_Concat(self, n, ins):
        a = self.attrs(n, {"axis": 0})
        return np.concatenate(ins, axis=a["axis"])

    def c_Cast(self, n, ins):
        a = self.attrs(n, {"to": None})
        h = self.onnx.helper
        dt = h.tensor_dtype_to_np_dtype(a["to"]) if hasattr(h, "tensor_dtype_to_np_dtype") \
            else self.onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[a["to"]]
        return ins[0].astype(dt)

    def c_Reshape(self, n, ins):
        a = self.attrs(n, {"allowzero": 0})
        shp = [int(v) for v in np.reshape(ins[1], -1)]
        if not a["allowzero"]:
            shp = [ins[0].shape[i] if v == 0 else v for i, v in enumerate(shp)]
        return ins[0].reshape(shp)

    def c_Transpose(self, n, ins):
        a = self.attrs(n, {"perm": None})
        return np.transpose(ins[0], a["perm"])

    def c_ConstantOfShape(self, n, ins):
        a = self.attrs(n, {"value": None})
        v = self.nh.to_array(a["value"]).reshape(-1) if a["value"] is not None else np.zeros(1, np.float32)
        return np.full([int(d) for d in np.reshape(ins[0], -1)], v[0], dtype=v.dtype)

    def c_Slice(self, n, ins):
        x = ins[0]
        starts, ends, axes, steps = self.slice_args(n, ins)
        for ax, s, e, st in zip(axes, starts, ends, steps):
            ax = ax + x.ndim if ax < 0 else ax
            first, count = slice_range(s, e, st, x.shape[ax])
            x = np.take(x, first + st * np.arange(count), axis=ax)
        return x

    def _arith(self, n, ins, f):
        self.attrs(n, {})
        return f(ins[0], ins[1]).astype(np.result_type(ins[0], ins[1]))

    def c_Add(self, n, ins):
        return self._arith(n, ins, np.add)

    def c_Sub(self, n, ins):
        return self._arith(n, ins, np.subtract)

    def c_Mul(self, n, ins):
        return self._arith(n, ins, np.multiply)

    def c_Div(self, n, ins):
        if np.issubdtype(ins[0].dtype, np.integer) and np.issubdtype(ins[1].dtype, np.integer):
            return self._arith(n, ins, lambda p, q: np.trunc(p / q))  # ONNX integer Div truncates
        return self._arith(n, ins, np.divide)

    def fold(self, n):
        """Evaluate n if it is a constant-only node ccq knows; True if it did."""
        fn = getattr(self, "c_" + n.op_type, None)
        if fn is None or not all(i in self.consts for i in n.input if i):
            return False
        ins = [self.consts[i] if i else None for i in n.input]
        try:
            self.consts[n.output[0]] = np.asarray(fn(n, ins))
        except (ValueError, IndexError, TypeError, np.AxisError) as e:
            raise ConvertError(f"{node_label(n)}: cannot evaluate its constant inputs ({e})")
        return True

    def try_const(self, name):
        """The value of tensor name if a constant subgraph computes it (evaluated
        out of order, for pattern matching before the main pass), else None."""
        if name in self.consts:
            return self.consts[name]
        n = self.producer.get(name)
        if n is None or not hasattr(self, "c_" + n.op_type):
            return None
        if not all(self.try_const(i) is not None for i in n.input if i):
            return None
        try:
            self.fold(n)
        except ConvertError:
            return None
        return self.consts.get(name)

    # ---- multi-node spellings ---------------------------------------------
    def fuse_patterns(self):
        """Replace the node groups exporters emit for GELU (below opset 20) and
        HardSwish (opset 13) by one Gelu / HardSwish node. A group fuses only
        if none of its inner tensors is used outside it."""
        fused = []
        for n in self.graph_nodes:
            m = None
            if n.op_type == "Erf":
                m = self.match_gelu(n, erf=True)
            elif n.op_type == "Tanh":
                m = self.match_gelu(n, erf=False)
            elif n.op_type == "HardSigmoid":
                m = self.match_hardswish(n)
            if m:
                fused.append(m)
        if not fused:
            return
        pos = {id(n): i for i, n in enumerate(self.graph_nodes)}
        drop, at = set(), {}
        for group, new in fused:
            drop.update(id(g) for g in group)
            at[max(pos[id(g)] for g in group)] = new  # where the group's output is produced
        self.graph_nodes = [at.get(i, n) for i, n in enumerate(self.graph_nodes) if id(n) not in drop or i in at]
        self.index()

    def sole_consumer(self, name, op_type):
        if not self.single_use(name):
            return None
        c = self.consumers[name][0]
        return c if c.op_type == op_type else None

    def other_input(self, n, name):
        """The input of the two-input node n that is not name (None if both are)."""
        a, b = n.input[0], n.input[1]
        return None if a == b else (b if a == name else a)

    def scaled(self, name):
        """name = Mul(x, c) / Mul(c, x) / Div(x, c) with one consumer: (x, c as a float, node)."""
        p = self.producer.get(name)
        if p is None or p.op_type not in ("Mul", "Div") or not self.single_use(name) or len(p.input) != 2:
            return None
        orders = ((p.input[0], p.input[1]), (p.input[1], p.input[0])) if p.op_type == "Mul" else \
            ((p.input[0], p.input[1]),)  # x / c, never c / x
        for x, c in orders:
            v = self.try_const(c) if c else None
            if x and v is not None and v.size == 1 and self.try_const(x) is None:
                k = float(v.reshape(-1)[0])
                return (x, 1.0 / k if p.op_type == "Div" else k, p) if k != 0 else None
        return None

    def times_half_x(self, t, x):
        """The Mul nodes that take t (= 1 + erf or 1 + tanh) to 0.5 * x * t, in
        any order and grouping (x * 0.5 may be formed first), or None."""
        group, k, seen_x, cur = [], 1.0, False, t
        while not (seen_x and abs(k - 0.5) <= 1e-6):
            m = self.sole_consumer(cur, "Mul")
            if m is None:
                return None
            o = self.other_input(m, cur)
            v = self.try_const(o) if o else None
            if v is not None and v.size == 1:
                k *= float(v.reshape(-1)[0])
            elif o == x and not seen_x:
                seen_x = True
            else:
                s = self.scaled(o) if o and not seen_x else None
                if s is None or s[0] != x:
                    return None
                seen_x, k = True, k * s[1]
                group.append(s[2])
            group.append(m)
            cur = m.output[0]
        return group, cur

    def cube_of(self, name):
        """name = x^3 (Pow(x, 3), or x * (x * x) in any order), its inner tensors
        used once: (x, nodes)."""
        p = self.producer.get(name)
        if p is None or not self.single_use(name):
            return None
        if p.op_type == "Pow" and near(self.try_const(p.input[1]), 3.0, 0):
            return p.input[0], [p]
        if p.op_type != "Mul":
            return None
        for x, sq in ((p.input[0], p.input[1]), (p.input[1], p.input[0])):
            q = self.producer.get(sq)
            if q is not None and q.op_type == "Mul" and self.single_use(sq) and list(q.input) == [x, x]:
                return x, [q, p]
        return None

    def match_gelu(self, n, erf):
        """GELU spelled out around an Erf (x * 0.5 * (1 + erf(x / sqrt 2))) or a
        Tanh (x * 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))):
        (nodes replaced, the Gelu node) or None."""
        group = [n]
        inner = self.scaled(n.input[0])
        if inner is None:
            return None
        u, k, p = inner
        group.append(p)
        if erf:
            if abs(k - 1 / SQRT2) > 1e-5 / SQRT2:
                return None
            x = u
        else:
            # u = x + 0.044715 * x^3, scaled by sqrt(2/pi)
            if abs(k - GELU_TANH_K) > 1e-5 * GELU_TANH_K:
                return None
            add = self.producer.get(u)
            if add is None or add.op_type != "Add" or not self.single_use(u):
                return None
            x = None
            for xa, t in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
                s = self.scaled(t)
                c = self.cube_of(s[0]) if s is not None and abs(s[1] - GELU_TANH_C) <= 1e-5 * GELU_TANH_C else None
                if c is not None and c[0] == xa:
                    x = xa
                    group += [add, s[2]] + c[1]
                    break
            if x is None:
                return None
        one = self.sole_consumer(n.output[0], "Add")
        if one is None or not near(self.try_const(self.other_input(one, n.output[0]) or ""), 1.0):
            return None
        tail = self.times_half_x(one.output[0], x)
        if tail is None:
            return None
        last = tail[0][-1]
        group += [one] + tail[0]
        new = self.onnx.helper.make_node("Gelu", [x], [tail[1]], name=last.name or tail[1],
                                         approximate="none" if erf else "tanh")
        return group, new

    def match_hardswish(self, n):
        """x * HardSigmoid(x; 1/6, 1/2) -> HardSwish(x), as torch exports it at opset 13."""
        a = {x.name: self.onnx.helper.get_attribute_value(x) for x in n.attribute}
        if not (abs(a.get("alpha", 0.2) - 1 / 6) <= 1e-6 and abs(a.get("beta", 0.5) - 0.5) <= 1e-6):
            return None
        m = self.sole_consumer(n.output[0], "Mul")
        if m is None or self.other_input(m, n.output[0]) != n.input[0]:
            return None
        return [n, m], self.onnx.helper.make_node("HardSwish", [n.input[0]], [m.output[0]],
                                                  name=m.name or m.output[0])

    # ---- ops -----------------------------------------------------------
    def op_Conv(self, n):
        a = self.attrs(n, {"kernel_shape": None, "strides": None, "pads": None, "dilations": None,
                           "group": 1, "auto_pad": "NOTSET"})
        x = self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        w = self.const(n, n.input[1], "weight").astype(np.float32)
        if len(xs) != 3 or w.ndim != 4:
            raise ConvertError(f"{node_label(n)}: only 2-D convolution on C,H,W tensors is supported")
        groups = int(a["group"])
        if groups < 1 or xs[0] % groups or w.shape[0] % groups:
            raise ConvertError(f"{node_label(n)}: group={groups} must divide the {xs[0]} input and "
                               f"{w.shape[0]} output channels")
        if w.shape[1] * groups != xs[0]:
            raise ConvertError(f"{node_label(n)}: weight has {w.shape[1]} input channels per group, input has "
                               f"{xs[0]} in {groups} group(s)")
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
        attrs = {"kernel": k, "stride": strides, "pad": pads, "dilation": dil}
        if groups != 1:
            attrs["groups"] = groups
        self.emit(n, "conv2d", [x], (w.shape[0], out[0], out[1]), attrs, data)

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
        if a in self.consts or b in self.consts:
            t, c = (b, a) if a in self.consts else (a, b)
            ref = self.tensor(n, t)
            prod = self.nodes[ref[1]] if ref[0] == "node" else None
            bias = self.consts[c].astype(np.float32)
            if prod is None or prod["op"] != "linear" or "bias" in prod["data"] or bias.size != prod["shape"][0]:
                raise ConvertError(f"{node_label(n)}: adding a constant is only supported as a linear layer's bias")
            if not self.sole_user(t):
                raise ConvertError(f"{node_label(n)}: the MatMul output is used elsewhere; cannot fold the bias")
            if not np.all(np.isfinite(bias)):
                raise ConvertError(f"{node_label(n)}: non-finite value in weights")
            prod["data"]["bias"] = bias.reshape(-1)
            self.retarget(n, t)
            return
        ra, rb = self.tensor(n, a), self.tensor(n, b)
        if self.shape[a] != self.shape[b]:
            raise ConvertError(f"{node_label(n)}: Add of shapes {self.shape[a]} and {self.shape[b]} (broadcast is not supported)")
        self.emit(n, "add", [ra, rb], self.shape[a])

    def scale_producer(self, n, t, c):
        """Fold y = t * c (c constant) into the conv2d, linear or batchnorm that
        computes t and feeds nothing else: per-tensor or per-output-channel c."""
        c = np.asarray(c, dtype=np.float64)
        self.tensor(n, t)
        if c.size == 1 and float(c.reshape(-1)[0]) == 1.0:
            self.alias(n, t)
            return
        prod = self.producer_node(t)
        why = "multiplying by a constant is only supported when it folds into a conv2d, linear or batchnorm " \
              "that feeds nothing else"
        if prod is None or prod["op"] not in ("conv2d", "linear", "batchnorm") or not self.sole_user(t):
            raise ConvertError(f"{node_label(n)}: {why}")
        ch = prod["shape"][0]
        per_ch = ((ch, 1, 1), (1, ch, 1, 1)) if len(prod["shape"]) == 3 else ((ch,), (1, ch))
        if c.size != 1 and c.shape not in per_ch:
            raise ConvertError(f"{node_label(n)}: {why}; constant of shape {c.shape} is not per-channel")
        if not np.all(np.isfinite(c)):
            raise ConvertError(f"{node_label(n)}: non-finite value in weights")
        v = np.broadcast_to(c.reshape(-1), (ch,))
        d = prod["data"]
        if prod["op"] == "batchnorm":
            d["gamma"], d["beta"] = (d["gamma"] * v).astype(np.float32), (d["beta"] * v).astype(np.float32)
        else:
            d["weight"] = (d["weight"] * v.reshape((ch,) + (1,) * (d["weight"].ndim - 1))).astype(np.float32)
            if "bias" in d:
                d["bias"] = (d["bias"] * v).astype(np.float32)
        for x in d.values():
            if not np.all(np.isfinite(x)):
                raise ConvertError(f"{node_label(n)}: non-finite value in weights after folding the constant")
        self.retarget(n, t)

    def op_Mul(self, n):
        self.attrs(n, {})
        a, b = n.input[0], n.input[1]
        if a in self.consts or b in self.consts:
            t, c = (b, a) if a in self.consts else (a, b)
            self.scale_producer(n, t, self.consts[c])
            return
        ra, rb = self.tensor(n, a), self.tensor(n, b)
        sa, sb = self.shape[a], self.shape[b]
        if sa == sb or (len(sa) == 3 and sb == (sa[0], 1, 1)):
            self.emit(n, "mul", [ra, rb], sa)
        elif len(sb) == 3 and sa == (sb[0], 1, 1):
            self.emit(n, "mul", [rb, ra], sb)  # the broadcast operand second, as the model file wants
        else:
            raise ConvertError(f"{node_label(n)}: Mul of shapes {sa} and {sb} (only equal shapes, or one [C,1,1] "
                               f"broadcast over H and W)")

    def op_Div(self, n):
        self.attrs(n, {})
        c = self.const(n, n.input[1], "divisor")
        if np.any(c == 0):
            raise ConvertError(f"{node_label(n)}: division by zero")
        self.scale_producer(n, n.input[0], 1.0 / np.asarray(c, dtype=np.float64))

    def op_Identity(self, n):
        self.attrs(n, {})
        self.alias(n, n.input[0])

    def op_Dropout(self, n):
        self.attrs(n, {"seed": 0, "ratio": 0.5})
        if len(n.input) > 2 and n.input[2]:
            tm = self.consts.get(n.input[2])
            if tm is None or bool(tm):
                raise ConvertError(f"{node_label(n)}: Dropout in training mode is not supported")
        self.alias(n, n.input[0])

    def op_Pad(self, n):
        a = self.attrs(n, {"mode": "constant", "pads": None, "value": 0.0})
        x = self.tensor(n, n.input[0])
        xs = self.shape[n.input[0]]
        if a["mode"] != "constant":
            raise ConvertError(f"{node_label(n)}: mode '{a['mode']}' is not supported (only constant zeros)")
        pads = a["pads"] if a["pads"] is not None else self.opt_const(n, 1, "pads")
        value = self.opt_const(n, 2, "constant_value")
        value = a["value"] if value is None else value
        if np.size(value) != 1 or float(np.reshape(value, -1)[0]) != 0.0:
            raise ConvertError(f"{node_label(n)}: only padding with zeros is supported, found {value}")
        r = len(xs) + 1
        axes = self.opt_const(n, 3, "axes")
        axes = list(range(r)) if axes is None else [int(v) + r if v < 0 else int(v) for v in np.reshape(axes, -1)]
        pads = [int(v) for v in np.reshape(pads, -1)]
        if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes) or not all(0 <= v < r for v in axes):
            raise ConvertError(f"{node_label(n)}: {len(pads)} pads for axes {axes} of a rank-{r} tensor")
        begin, end = [0] * r, [0] * r
        for j, ax in enumerate(axes):
            begin[ax], end[ax] = pads[j], pads[len(axes) + j]
        if begin[0] or end[0]:
            raise ConvertError(f"{node_label(n)}: padding the batch axis is not supported")
        begin, end = begin[1:], end[1:]
        if any(v < 0 for v in begin + end):  # negative pads crop: a slice first
            start = [-min(v, 0) for v in begin]
            shape = [xs[i] + min(begin[i], 0) + min(end[i], 0) for i in range(r - 1)]
            if min(shape) < 1:
                raise ConvertError(f"{node_label(n)}: negative pads leave an empty tensor")
            x = self.emit_slice(n, n.input[0], start, [1] * (r - 1), shape)
            xs = tuple(shape)
        begin, end = [max(v, 0) for v in begin], [max(v, 0) for v in end]
        if any(begin + end):
            self.emit(n, "pad", [x], [xs[i] + begin[i] + end[i] for i in range(r - 1)], {"pads": begin + end})
        else:
            self.env[n.output[0]], self.shape[n.output[0]] = x, xs

    def slice_args(self, n, ins):
        """starts, ends, axes, steps of a Slice (opset 10+ inputs or opset 1 attributes) as int lists."""
        a = self.attrs(n, {"starts": None, "ends": None, "axes": None})
        if a["starts"] is not None:
            starts, ends, axes, steps = a["starts"], a["ends"], a["axes"], None
        else:
            if len(ins) < 3 or ins[1] is None or ins[2] is None:
                raise ConvertError(f"{node_label(n)}: starts and ends must be constants")
            starts, ends = ins[1], ins[2]
            axes = ins[3] if len(ins) > 3 else None
            steps = ins[4] if len(ins) > 4 else None
        starts = [int(v) for v in np.reshape(starts, -1)]
        ends = [int(v) for v in np.reshape(ends, -1)]
        axes = list(range(len(starts))) if axes is None else [int(v) for v in np.reshape(axes, -1)]
        steps = [1] * len(starts) if steps is None else [int(v) for v in np.reshape(steps, -1)]
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise ConvertError(f"{node_label(n)}: starts, ends, axes and steps differ in length")
        if 0 in steps:
            raise ConvertError(f"{node_label(n)}: a step of 0")
        return starts, ends, axes, steps

    def op_Slice(self, n):
        self.tensor(n, n.input[0])  # a computed tensor, not a constant
        xs = self.shape[n.input[0]]
        ins = [None] + [self.opt_const(n, i, "slice argument") for i in range(1, len(n.input))]
        starts, ends, axes, steps = self.slice_args(n, ins)
        r = len(xs)
        start, step, shape, seen = [0] * r, [1] * r, list(xs), set()
        for ax, s, e, st in zip(axes, starts, ends, steps):
            ax = ax + r + 1 if ax < 0 else ax
            if not 0 <= ax <= r or ax in seen:
                raise ConvertError(f"{node_label(n)}: axis {ax} repeated or out of range for a rank-{r + 1} tensor")
            seen.add(ax)
            if ax == 0:
                if not (s == 0 and st == 1 and e >= 2 ** 31):
                    raise ConvertError(f"{node_label(n)}: slicing the batch axis is not supported")
                continue
            first, count = slice_range(s, e, st, xs[ax - 1])
            if count < 1:
                raise ConvertError(f"{node_label(n)}: the slice of axis {ax} is empty")
            start[ax - 1], step[ax - 1], shape[ax - 1] = first, st, count
        if shape == list(xs) and step == [1] * r:
            self.alias(n, n.input[0])
            return
        self.emit_slice(n, n.input[0], start, step, shape)

    def emit_slice(self, n, src, start, step, shape):
        """A slice of tensor src as n's output; a slice of a slice that feeds
        nothing else becomes one slice: element i reads s1 + (s2 + i t2) t1."""
        prev = self.producer_node(src)
        if prev is not None and prev["op"] == "slice" and self.sole_user(src):
            p0, t0 = prev["attrs"]["start"], prev["attrs"]["step"]
            prev["attrs"] = {"start": [p0[i] + start[i] * t0[i] for i in range(len(start))],
                             "step": [t0[i] * step[i] for i in range(len(start))]}
            prev["shape"] = tuple(shape)
            prev["name"] = n.name or n.output[0]
            self.retarget(n, src)
            self.shape[n.output[0]] = tuple(shape)
            return self.env[n.output[0]]
        return self.emit(n, "slice", [self.tensor(n, src)], shape, {"start": start, "step": step})

    def op_Concat(self, n):
        a = self.attrs(n, {"axis": 0})
        names = [i for i in n.input if i]
        for i in names:
            if i in self.consts:
                raise ConvertError(f"{node_label(n)}: concatenating the constant '{i}' with computed tensors "
                                   f"is not supported")
        refs = [self.tensor(n, i) for i in names]
        shapes = [self.shape[i] for i in names]
        r = len(shapes[0])
        ax = self.image_axis(n, a["axis"], r)
        for s in shapes:
            if len(s) != r or any(s[i] != shapes[0][i] for i in range(r) if i != ax - 1):
                raise ConvertError(f"{node_label(n)}: shapes {shapes} differ off the concatenation axis")
        if len(refs) == 1:
            self.alias(n, names[0])
            return
        if len(refs) > MAX_CONCAT:
            raise ConvertError(f"{node_label(n)}: {len(refs)} inputs (ccq's concat takes at most {MAX_CONCAT})")
        shape = list(shapes[0])
        shape[ax - 1] = sum(s[ax - 1] for s in shapes)
        self.emit(n, "concat", refs, shape, {"axis": ax - 1})

    def op_Clip(self, n):
        a = self.attrs(n, {"min": None, "max": None})
        src = n.input[0]
        x = self.tensor(n, src)
        lo = a["min"] if a["min"] is not None else self.opt_const(n, 1, "min")
        hi = a["max"] if a["max"] is not None else self.opt_const(n, 2, "max")
        for v, what in ((lo, "min"), (hi, "max")):
            if v is not None and (np.size(v) != 1 or not np.isfinite(float(np.reshape(v, -1)[0]))):
                raise ConvertError(f"{node_label(n)}: {what} must be one finite value")
        lo = None if lo is None else float(np.reshape(lo, -1)[0])
        hi = None if hi is None else float(np.reshape(hi, -1)[0])
        if lo is not None and hi is not None and lo > hi:
            raise ConvertError(f"{node_label(n)}: min {lo} > max {hi}")
        prev = self.producer_node(src)
        if prev is not None and prev["op"] == "relu" and self.sole_user(src) and (hi is None or hi >= 0):
            # Relu then Clip (torch's relu6): clip(relu(x), a, b) = clip(x, max(a, 0), b) for b >= 0
            src = self.nodes[self.env[src][1]]
            x = ("input",) if src["inputs"][0] < 0 else ("node", src["inputs"][0])
            lo = 0.0 if lo is None else max(lo, 0.0)
        if lo is None and hi is None:
            self.env[n.output[0]], self.shape[n.output[0]] = x, self.shape[n.input[0]]
        elif lo == 0.0 and hi is None:
            self.emit(n, "relu", [x], self.shape[n.input[0]])
        else:
            self.emit(n, "clip", [x], self.shape[n.input[0]],
                      {"min": np.float32(-NO_BOUND if lo is None else lo), "max": np.float32(NO_BOUND if hi is None else hi)})

    def _act(self, n, fn, defaults):
        a = self.attrs(n, defaults)
        x = self.tensor(n, n.input[0])
        attrs = {"fn": fn, "alpha": np.float32(a.get("alpha", 0.0)), "beta": np.float32(a.get("beta", 0.0))}
        self.emit(n, "act", [x], self.shape[n.input[0]], attrs)

    def op_Gelu(self, n):
        a = self.attrs(n, {"approximate": "none"})
        if a["approximate"] not in ("none", "tanh"):
            raise ConvertError(f"{node_label(n)}: approximate '{a['approximate']}' is not supported")
        self.emit(n, "act", [self.tensor(n, n.input[0])], self.shape[n.input[0]],
                  {"fn": "gelu" if a["approximate"] == "none" else "gelu_tanh",
                   "alpha": np.float32(0.0), "beta": np.float32(0.0)})

    def op_Erf(self, n):
        raise ConvertError(f"{node_label(n)}: unsupported operator (Erf only inside GELU's "
                           f"x * 0.5 * (1 + erf(x / sqrt(2))))")

    def op_Shape(self, n):
        a = self.attrs(n, {"start": 0, "end": None})
        self.tensor(n, n.input[0])
        full = np.array((BATCH,) + self.shape[n.input[0]], dtype=np.int64)
        self.consts[n.output[0]] = full[a["start"]:a["end"]]

    def const_only(self, n):
        """A constant-arithmetic op that met a computed tensor."""
        bad = [i for i in n.input if i and i not in self.consts]
        raise ConvertError(f"{node_label(n)}: input '{bad[0]}' must be a constant (only shape arithmetic is "
                           f"supported for this operator)")

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
        for n in self.graph_nodes:
            if n.domain not in ("", "ai.onnx"):
                raise ConvertError(f"{node_label(n)}: operator domain '{n.domain}' is not supported")
        self.fuse_patterns()
        for n in self.graph_nodes:
            if self.fold(n):
                continue
            if n.op_type in ACTS:
                self._act(n, *ACTS[n.op_type])
                continue
            fn = getattr(self, "op_" + n.op_type, None)
            if fn is None:
                if hasattr(self, "c_" + n.op_type):
                    self.const_only(n)
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
        self.remap = dict(remap)
        remap[-1] = -1
        nodes = []
        for old in order:
            nd = dict(self.nodes[old])
            nd["inputs"] = [remap[i] for i in nd["inputs"]]
            nodes.append(nd)
        return nodes


# ---- QDQ models: a quantized integer network ---------------------------------------------------
# A QDQ graph (QuantizeLinear/DequantizeLinear around float ops, as `ccq export --format onnx` and
# other quantizers write) becomes a quantized model file: the QDQ layer is read off (QDQ.strip),
# the float graph left over goes through the converter above, and the integer network is put back
# on its nodes (QDQ.assemble) without re-deriving anything ccq would derive differently: the int8
# levels and float32 weight scales, each activation's float32 scale and uint8 zero point, int32
# biases and 256-entry act tables are taken as they are. ccq's own exports carry what QDQ cannot
# say in doc strings and metadata (README, "Deploy"): layer widths ("ccq:bits B" on a levels
# initializer), act functions and their output quantization ("ccq:act FN ALPHA BETA SCALE ZP" on a
# Gather), the input normalisation.

CALIBRATED = {"conv2d", "linear", "add", "mul", "concat", "act", "batchnorm"}  # own output scale
FUSES = {"conv2d", "linear", "batchnorm", "add"}                              # may absorb a ReLU/Clip


def qmax(bits):
    return (1 << (bits - 1)) - 1


def act_eval(fn, a, b, x):
    """ccq's act functions in double (src/op_point.c act_eval; the same libm through math)."""
    import math
    if fn == "sigmoid":
        return 1.0 / (1.0 + math.exp(-x))
    if fn == "hardsigmoid":
        return max(0.0, min(1.0, a * x + b))
    if fn == "hardswish":
        return x * max(0.0, min(1.0, x / 6.0 + 0.5))
    if fn == "tanh":
        return math.tanh(x)
    if fn == "leakyrelu":
        return x if x >= 0 else a * x
    if fn == "elu":
        return x if x > 0 else a * (math.exp(x) - 1.0)
    if fn == "gelu":
        return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)))


def act_table(fn, a, b, s_in, z_in, s_out, z_out):
    """table[q] = clamp(zo + round(f(s_in (q - z_in)) / s_out), 0, 255), as `ccq quantize` makes it."""
    import math
    t = np.zeros(256, np.uint8)
    for q in range(256):
        v = act_eval(fn, float(a), float(b), float(s_in) * (q - z_in)) / float(s_out) + z_out
        t[q] = 0 if v <= 0 else 255 if v >= 255 else int(math.floor(v + 0.5))
    return t


def llround(v):
    """C's llround: half away from zero."""
    return int(np.sign(v) * np.floor(abs(v) + 0.5))


class QDQ:
    """The QDQ layer of a graph, read off: weights[t] and biases[t] (the constant DequantizeLinear
    outputs), quant[t] (float tensor t is quantized per tensor at (scale, zero point)), tables
    (act Gathers), and the float graph that remains."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper
        self.onnx, self.nh, self.model, self.g = onnx, numpy_helper, model, model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.docs = {t.name: t.doc_string for t in self.g.initializer}
        for n in self.g.node:
            if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.meta = {p.key: p.value for p in model.metadata_props}

    @staticmethod
    def present(model):
        return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)

    def arg(self, n, i):
        return self.consts.get(n.input[i]) if len(n.input) > i and n.input[i] else None

    def per_tensor(self, n):
        """(scale, zero point) of a per-tensor uint8 Q/DQ node."""
        s, z = self.arg(n, 1), self.arg(n, 2)
        if s is None or (len(n.input) > 2 and n.input[2] and z is None):
            raise ConvertError(f"{node_label(n)}: scale and zero point must be constants")
        if s.size != 1 or (z is not None and z.size != 1):
            raise ConvertError(f"{node_label(n)}: per-channel activation quantization: ccq's activations are "
                               f"quantized per tensor")
        if z is not None and z.dtype != np.uint8:
            raise ConvertError(f"{node_label(n)}: {z.dtype} activations: ccq's activations are uint8")
        s = np.float32(s.reshape(-1)[0])
        if not (np.isfinite(s) and s > 0):
            raise ConvertError(f"{node_label(n)}: scale {s} must be finite and positive")
        return s, int(z.reshape(-1)[0]) if z is not None else 0

    def match_prune(self, cast, to, src, used_by):
        """ccq's activation pruning on the uint8 tensor q = cast.input[0] (`ccq export`, act_thresh):
        Where(Less(d, t), zp, q) with d = Cast(q, int32), or |Cast(q) - zp| through Sub and Abs, and zp
        the tensor's own zero point. Returns (the nodes after the Cast, the Where, t) or None."""
        q = cast.input[0]
        one = lambda name: used_by.get(name, [])[0] if len(used_by.get(name, [])) == 1 else None  # noqa: E731
        if to != self.onnx.TensorProto.INT32:
            return None
        nxt, group, zp = one(cast.output[0]), [], 0
        if nxt is not None and nxt.op_type == "Sub" and nxt.input[0] == cast.output[0]:
            z = self.arg(nxt, 1)
            ab = one(nxt.output[0])
            if z is None or z.size != 1 or ab is None or ab.op_type != "Abs":
                return None
            zp, group, nxt = int(z.reshape(-1)[0]), [cast, nxt, ab], one(ab.output[0])
        else:
            group = [cast]
        if nxt is None or nxt.op_type != "Less" or nxt.input[0] != group[-1].output[0]:
            return None
        t = self.arg(nxt, 1)
        wh = one(nxt.output[0])
        if t is None or t.size != 1 or wh is None or wh.op_type != "Where" or wh.input[0] != nxt.output[0] \
                or wh.input[2] != q:
            return None
        z8 = self.arg(wh, 1)
        sz = src[q][1]
        own_zp = sz[1] if sz is not None else None
        t = int(t.reshape(-1)[0])
        if z8 is None or z8.dtype != np.uint8 or z8.size != 1 or int(z8.reshape(-1)[0]) != zp or \
                (own_zp is not None and own_zp != zp) or not 1 <= t <= 255:
            raise ConvertError(f"{node_label(wh)}: an activation threshold must zero levels within 1..255 of the "
                               f"tensor's own zero point")
        return group + [nxt, wh], wh, t

    def strip(self):
        """The float graph without its QDQ layer (a new ModelProto)."""
        helper, nh = self.onnx.helper, self.nh
        self.weights, self.biases, self.quant, self.tables = {}, {}, {}, {}
        self.thresh = {}  # float tensor -> its activation threshold (ccq's prune pattern on its uint8 form)
        src = {}     # uint8 tensor -> (float tensor it stands for, (scale, zp) or None)
        used_by = {}
        for n in self.g.node:
            for i in n.input:
                used_by.setdefault(i, []).append(n)
        inputs = [i for i in self.g.input if i.name not in self.consts]
        new_inputs = []
        for i in inputs:
            tt = i.type.tensor_type
            if tt.elem_type == self.onnx.TensorProto.UINT8:
                src[i.name] = (i.name, None)
                dims = [d.dim_param or d.dim_value for d in tt.shape.dim]
                i = helper.make_tensor_value_info(i.name, self.onnx.TensorProto.FLOAT, dims)
            new_inputs.append(i)
        nodes, inits = [], [t for t in self.g.initializer]
        skip = set()

        def setq(t, sz, n):
            if t in self.quant and self.quant[t] != sz:
                raise ConvertError(f"{node_label(n)}: '{t}' quantized twice, at {self.quant[t]} and {sz}: ccq keeps one "
                                   f"scale per tensor")
            self.quant[t] = sz
        for n in self.g.node:
            if id(n) in skip or n.op_type == "Constant" and n.output[0] in self.consts:
                continue
            if n.op_type == "DequantizeLinear" and n.input[0] in self.consts:
                x, s, z = self.consts[n.input[0]], self.arg(n, 1), self.arg(n, 2)
                axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 1)
                if s is None:
                    raise ConvertError(f"{node_label(n)}: the scale must be a constant")
                if z is not None and np.any(z != 0):
                    raise ConvertError(f"{node_label(n)}: non-zero weight zero point (asymmetric weights): ccq's "
                                       f"weights are symmetric, zero point 0")
                if x.dtype == np.int8:
                    if np.any(x == -128):
                        raise ConvertError(f"{node_label(n)}: level -128: ccq's levels are within +-127")
                    self.weights[n.output[0]] = (x, s.astype(np.float32), axis, self.docs.get(n.input[0], ""), n)
                elif x.dtype == np.int32:
                    self.biases[n.output[0]] = (x, s.astype(np.float32), n)
                else:
                    raise ConvertError(f"{node_label(n)}: {x.dtype} constant: ccq reads int8 weights and int32 biases")
                shape = [1] * x.ndim
                if s.size > 1:
                    ax = axis + x.ndim if axis < 0 else axis
                    shape[ax] = s.size
                v = (x.astype(np.float64) * s.astype(np.float64).reshape(shape)).astype(np.float32)
                inits.append(nh.from_array(v, n.output[0]))
                continue
            if n.op_type == "QuantizeLinear":
                sz = self.per_tensor(n)
                setq(n.input[0], sz, n)
                src[n.output[0]] = (n.input[0], sz)
                continue
            if n.op_type == "DequantizeLinear":
                if n.input[0] not in src:
                    raise ConvertError(f"{node_label(n)}: dequantizes '{n.input[0]}', which is not a uint8 activation "
                                       f"(QuantizeLinear output, uint8 input or act table)")
                f, sz0 = src[n.input[0]]
                sz = self.per_tensor(n)
                if sz0 is not None and sz0 != sz:
                    raise ConvertError(f"{node_label(n)}: dequantizes at {sz} what was quantized at {sz0}: ccq keeps one "
                                       f"scale per tensor")
                setq(f, sz, n)
                nodes.append(helper.make_node("Identity", [f], [n.output[0]], name=n.name))
                continue
            if n.op_type == "Cast" and n.input[0] in src:
                to = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "to"), None)
                pr = self.match_prune(n, to, src, used_by)
                if pr:
                    group, where, t = pr
                    f, sz = src[n.input[0]]
                    if f in self.thresh:
                        raise ConvertError(f"{node_label(where)}: '{f}' pruned twice")
                    self.thresh[f] = t
                    skip.update(id(g) for g in group)
                    src[where.output[0]] = (f, sz)
                    continue
                g = used_by.get(n.output[0], [])
                tab = self.arg(g[0], 0) if len(g) == 1 and g[0].op_type == "Gather" else None
                gax = next((helper.get_attribute_value(a) for a in g[0].attribute if a.name == "axis"), 0) if g else 0
                if to not in (self.onnx.TensorProto.INT32, self.onnx.TensorProto.INT64) or tab is None or \
                        tab.dtype != np.uint8 or tab.shape != (256,) or g[0].input[1] != n.output[0] or gax != 0:
                    raise ConvertError(f"{node_label(n)}: a uint8 activation cast is only read as the index of a "
                                       f"256-entry uint8 table (Gather): ccq's act")
                gn = g[0]
                skip.add(id(gn))
                out_f = gn.output[0] + ":f"
                self.tables[gn.output[0]] = (tab, gn.doc_string, gn)
                src[gn.output[0]] = (out_f, None)
                doc = next((x.split() for x in gn.doc_string.split("\n") if x.startswith("ccq:act ")), [])
                if len(doc) == 6:  # ccq's export: the table's output quantization, for an act only acts read
                    setq(out_f, (np.float32(doc[4]), int(doc[5])), gn)
                nodes.append(helper.make_node("CcqAct", [src[n.input[0]][0]], [out_f], name=gn.name or gn.output[0],
                                              doc_string=gn.doc_string))
                continue
            for i in n.input:
                if i in src:
                    raise ConvertError(f"{node_label(n)}: reads the uint8 tensor '{i}' directly: only the QDQ form "
                                       f"(a DequantizeLinear before every op) is supported")
            nodes.append(n)
        for o in self.g.output:
            if o.name in src:
                raise ConvertError(f"output '{o.name}' is a uint8 tensor: ccq's logits are the float output of the "
                                   f"last linear or conv layer")
        g = helper.make_graph(nodes, self.g.name or "qdq", new_inputs, list(self.g.output), inits)
        m = helper.make_model(g, opset_imports=list(self.model.opset_import))
        m.ir_version = self.model.ir_version
        return m

    # ---- the integer network on the converted nodes --------------------------------------------
    def assemble(self, conv, nodes, in_name):
        """Quantize the converter's nodes with what strip() read: fuse ReLU/Clip (and refuse a
        BatchNorm) that follow a layer with no quantization of its own, then give every node its
        output scale, every layer its levels, scales, bias and width, every act its table.
        Returns (nodes, input scale, input zero point)."""
        n_nodes = len(nodes)
        tensors = {}
        for t, ref in conv.env.items():
            if ref[0] == "node" and ref[1] in conv.remap:
                tensors.setdefault(conv.remap[ref[1]], []).append(t)
        own = []
        for k, nd in enumerate(nodes):
            th = {self.thresh[t] for t in tensors.get(k, []) if t in self.thresh}
            if th:
                nd["act_thresh"] = th.pop()
            qs = {self.quant[t] for t in tensors.get(k, []) if t in self.quant}
            if len(qs) > 1:
                raise ConvertError(f"node '{nd['name']}' ({nd['op']}): its output is quantized at {sorted(qs)}: "
                                   f"ccq keeps one scale per tensor")
            own.append(qs.pop() if qs else None)
        if in_name not in self.quant:
            raise ConvertError(f"input '{in_name}' is not quantized (no DequantizeLinear of the uint8 image nor "
                               f"QuantizeLinear of the float input)")
        in_q = self.quant[in_name]
        uses = [0] * n_nodes
        for nd in nodes:
            for j in nd["inputs"]:
                if j >= 0:
                    uses[j] += 1
        out_idx = n_nodes - 1
        uses[out_idx] += 1
        # fusion, as ccq's quant_fold: a ReLU or Clip alone reading an unquantized fusing op
        keep, mp = [], {}
        for k, nd in enumerate(nodes):
            ins = [mp[j] if j >= 0 else -1 for j in nd["inputs"]]
            p = ins[0] if ins else -1
            prod = keep[p] if p >= 0 else None
            if prod is not None and own[nd["inputs"][0]] is None and nd["inputs"][0] != out_idx:
                pk = nd["inputs"][0]
                if nd["op"] in ("relu", "clip") and prod["op"] in FUSES and uses[pk] == 1 and not prod.get("relu") \
                        and "clip" not in prod["attrs"]:
                    if nd["op"] == "relu":
                        prod["relu"] = 1
                    else:
                        prod["attrs"]["clip"] = [np.float32(nd["attrs"]["min"]), np.float32(nd["attrs"]["max"])]
                    prod["q"] = own[k]
                    prod["name_out"] = nd["name"]
                    if nd.get("act_thresh"):
                        prod["act_thresh"] = nd["act_thresh"]
                    mp[k] = p
                    continue
                if nd["op"] == "batchnorm" and prod["op"] in ("conv2d", "linear"):
                    raise ConvertError(f"node '{nd['name']}' (batchnorm): follows '{prod['name']}' with no "
                                       f"quantization between: fold BatchNorm into the layer before quantizing")
            nd = dict(nd, inputs=ins, q=own[k], attrs=dict(nd["attrs"]), k=k)
            mp[k] = len(keep)
            keep.append(nd)
        out_idx = mp[out_idx]
        scale = lambda j: in_q if j < 0 else (keep[j]["act_scale"], keep[j]["act_zp"])  # noqa: E731
        for k, nd in enumerate(keep):
            lab = f"node '{nd['name']}' ({nd['op']})"
            s_in, z_in = scale(nd["inputs"][0]) if nd["inputs"] else in_q
            if nd["op"] in ("conv2d", "linear"):
                self.layer(nd, s_in, lab, conv)
            if k == out_idx:
                if nd["op"] not in ("conv2d", "linear") or nd.get("relu") or "clip" in nd["attrs"]:
                    raise ConvertError(f"{lab}: the logits must come from a linear or conv2d layer without "
                                       f"ReLU or Clip")
                nd["act_scale"] = np.float32(max(float(s_in) * float(w) for w in nd["qdata"]["wscale"]))
                nd["act_zp"] = 0
                continue
            if nd["op"] in CALIBRATED:
                if nd["q"] is None:
                    raise ConvertError(f"{lab}: its output is not quantized (no QuantizeLinear after it)")
                nd["act_scale"], nd["act_zp"] = nd["q"]
            else:
                if nd["q"] is not None and tuple(nd["q"]) != (s_in, z_in):
                    raise ConvertError(f"{lab}: output quantized at {nd['q']}, input at {(s_in, z_in)}: ccq's "
                                       f"{nd['op']} keeps its input's scale")
                nd["act_scale"], nd["act_zp"] = s_in, z_in
            if nd["op"] == "act":
                if "table" in nd:
                    nd["qdata"] = {"table": nd.pop("table")}
                else:
                    a = nd["attrs"]
                    nd["qdata"] = {"table": act_table(a["fn"], a["alpha"], a["beta"], s_in, z_in, nd["act_scale"],
                                                      nd["act_zp"])}
        return keep, in_q

    def layer(self, nd, s_in, lab, conv):
        """Levels, wscale, width, float weight and bias of a conv2d/linear node from its QDQ constants."""
        n = nd["src"]
        w_name = n.input[1]
        if w_name not in self.weights:
            raise ConvertError(f"{lab}: its weight is not a DequantizeLinear of int8 levels")
        lev, s, axis, doc, dq = self.weights[w_name]
        oc_axis = 0
        if n.op_type == "MatMul" or (n.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in n.attribute)):
            oc_axis = 1
        if n.op_type == "Gemm" and any(a.name in ("alpha", "beta") and a.f != 1.0 for a in n.attribute):
            raise ConvertError(f"{lab}: Gemm alpha/beta other than 1 on quantized weights")
        ax = axis + lev.ndim if axis < 0 else axis
        if s.size > 1 and ax != oc_axis:
            raise ConvertError(f"{node_label(dq)}: weight scales along axis {axis}: ccq's are per output channel")
        levels = np.ascontiguousarray(lev if oc_axis == 0 else lev.T)
        oc = levels.shape[0]
        wscale = np.broadcast_to(s.reshape(-1), (oc,)).astype(np.float32).copy()
        if not np.all(wscale > 0) or not np.all(np.isfinite(wscale)):
            raise ConvertError(f"{node_label(dq)}: weight scales must be finite and positive")
        want = (levels.astype(np.float64) * wscale.astype(np.float64).reshape((oc,) + (1,) * (levels.ndim - 1)))
        if nd["data"]["weight"].shape != levels.shape or \
                not np.array_equal(nd["data"]["weight"], want.astype(np.float32)):
            raise ConvertError(f"{lab}: its weights are not the dequantized levels (a constant scaling folded "
                               f"into a quantized layer)")
        m = next((x for x in doc.split("\n") if x.startswith("ccq:bits ")), None)
        cbl = next((x for x in doc.split("\n") if x.startswith("ccq:codebook")), None)
        mx = int(np.abs(levels).max()) if levels.size else 0
        bits = int(m.split()[1]) if m else max(2, next(b for b in range(2, 9) if qmax(b) >= mx))
        nd["qdata"] = {"levels": levels, "wscale": wscale}
        if cbl is not None:  # learned levels (ccq's export): a codebook row of 2^bits values per channel
            vals = [int(v) for v in cbl.split()[1:]]
            if not 2 <= bits <= 4 or len(vals) != oc << bits:
                raise ConvertError(f"{node_label(dq)}: its codebook has {len(vals)} values, {oc} channels of "
                                   f"2^{bits} expected")
            book = np.array(vals, np.int8).reshape(oc, 1 << bits)
            flat = levels.reshape(oc, -1)
            if not all(np.isin(flat[o], book[o]).all() for o in range(oc)):
                raise ConvertError(f"{node_label(dq)}: a level is not in its channel's codebook")
            nd["qdata"]["codebook"] = book
        elif not 2 <= bits <= 8 or qmax(bits) < mx:
            raise ConvertError(f"{node_label(dq)}: levels up to {mx} do not fit the {bits} bits stated")
        nd["bits"] = bits
        nd["data"]["weight"] = want.astype(np.float32)
        b = None
        cands = [n.input[2]] if len(n.input) > 2 and n.input[2] else []
        if n.op_type == "MatMul":
            cands = [i for c in conv.consumers.get(n.output[0], []) if c.op_type == "Add" for i in c.input]
        b = next((self.biases[c] for c in cands if c in self.biases), None)
        if b is None:
            return  # no bias, or a float one: ccq rounds it to the accumulator's scale as always
        bq, bs, bdq = b
        bq = bq.reshape(-1)
        acc = float(s_in) * wscale.astype(np.float64)
        bs = np.broadcast_to(bs.reshape(-1), (oc,)).astype(np.float64)
        if bq.shape != (oc,) or np.any(np.abs(bs / acc - 1) > 2.0 ** -20):
            raise ConvertError(f"{node_label(bdq)}: the bias scale must be s_in * s_w per output channel (the "
                               f"accumulator's), as ccq's integer engine adds it")
        bias = (bq.astype(np.float64) * acc).astype(np.float32)
        back = np.array([llround(v) for v in bias.astype(np.float64) / acc])
        if not np.array_equal(back, bq):
            raise ConvertError(f"{node_label(bdq)}: int32 bias too large to store exactly as ccq's float bias")
        nd["data"]["bias"] = bias


class QDQConverter(Converter):
    """The converter with ccq's act tables (CcqAct, from QDQ.strip) and each node's ONNX source."""

    def __init__(self, model, qdq):
        super().__init__(model)
        self.qdq = qdq

    def emit(self, n, op, inputs, shape, attrs=None, data=None):
        ref = super().emit(n, op, inputs, shape, attrs, data)
        self.nodes[-1]["src"] = n
        return ref

    def op_CcqAct(self, n):
        doc = next((x for x in n.doc_string.split("\n") if x.startswith("ccq:act ")), None)
        if doc is None:
            raise ConvertError(f"node '{n.name}' (Gather): an act table without its function (doc_string "
                               f"'ccq:act FN ALPHA BETA', as ccq export writes)")
        p = doc.split()
        if len(p) not in (4, 6) or p[1] not in [v[0] for v in ACTS.values()] + ["gelu", "gelu_tanh"]:
            raise ConvertError(f"node '{n.name}' (Gather): cannot read '{doc}'")
        self.emit(n, "act", [self.tensor(n, n.input[0])], self.shape[n.input[0]],
                  {"fn": p[1], "alpha": np.float32(p[2]), "beta": np.float32(p[3])})
        self.nodes[-1]["table"] = self.qdq.tables[n.output[0][:-2]][0].copy()


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


def write(path, name, in_shape, mean, std, nodes, quant=None):
    """The model file (README, "Model file"), atomically. quant = (input scale, input zero point)
    writes a quantized model file: nodes then carry act_scale, act_zp, relu, bits and qdata
    (levels int8, wscale float32, table uint8) as QDQ.assemble leaves them."""
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
            if quant is not None:
                f.attrs["quantized"] = np.int32(1)
                f.attrs["abits"] = np.int32(8)
                gi.attrs["act_scale"] = np.float32(quant[0])
                gi.attrs["act_zp"] = np.int32(quant[1])
            gn = f.create_group("nodes")
            gn.attrs["count"] = np.int32(len(nodes))
            for i, nd in enumerate(nodes):
                g = gn.create_group(f"{i:04d}")
                g.attrs["op"] = np.bytes_(nd["op"])
                g.attrs["name"] = np.bytes_(nd["name"])
                g.attrs["inputs"] = np.array(nd["inputs"], dtype=np.int32)
                g.attrs["shape"] = np.array(nd["shape"], dtype=np.int32)
                for k, v in nd["attrs"].items():
                    if isinstance(v, str):
                        g.attrs[k] = np.bytes_(v)
                    elif isinstance(v, (np.floating, float)) or k == "clip":
                        g.attrs[k] = np.asarray(v, dtype=np.float32)
                    else:
                        g.attrs[k] = np.array(v, dtype=np.int32)
                for k, v in nd["data"].items():
                    g.create_dataset(k, data=np.ascontiguousarray(v, dtype=np.float32))
                if quant is None:
                    continue
                if nd.get("relu"):
                    g.attrs["relu"] = np.int32(1)
                g.attrs["act_scale"] = np.float32(nd["act_scale"])
                g.attrs["act_zp"] = np.int32(nd["act_zp"])
                if nd.get("act_thresh"):
                    g.attrs["act_thresh"] = np.int32(nd["act_thresh"])
                if "bits" in nd:
                    g.attrs["bits"] = np.int32(nd["bits"])
                for k, v in nd.get("qdata", {}).items():
                    g.create_dataset(k, data=np.ascontiguousarray(v))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert an ONNX image classifier (float, or quantized in QDQ form) "
                                             "into a ccq model file.")
    ap.add_argument("onnx_in", metavar="IN.onnx")
    ap.add_argument("out", metavar="OUT.h5")
    ap.add_argument("--name", help="model name stored in the file (default: the input file's stem, or the "
                                   "name a ccq export recorded)")
    ap.add_argument("--mean", default=None, help="input mean per channel, pixel/255 units (default 0; QDQ: what a "
                                                 "ccq export recorded, else the input zero point / 255)")
    ap.add_argument("--std", default=None, help="input std per channel, pixel/255 units (default 1; QDQ: what a "
                                                "ccq export recorded, else 1 / (255 x the input scale))")
    a = ap.parse_args(argv)
    quant = None
    try:
        if os.path.exists(a.out) and os.path.exists(a.onnx_in) and os.path.samefile(a.out, a.onnx_in):
            raise ConvertError(f"OUT.h5 {a.out} is the input file")
        if os.path.isdir(a.out):
            raise ConvertError(f"OUT.h5 {a.out} is a directory")
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
        meta = {}
        if QDQ.present(model):
            qdq = QDQ(model)
            conv = QDQConverter(qdq.strip(), qdq)
            nodes = conv.run()
            in_name = [i.name for i in conv.g.input if i.name not in conv.consts][0]
            nodes, quant = qdq.assemble(conv, nodes, in_name)
            meta = qdq.meta
        else:
            conv = Converter(model)
            nodes = conv.run()
        c = conv.in_shape[0]
        if quant is not None:
            derived = (f"{quant[1] / 255.0!r}", f"{1.0 / (255.0 * float(quant[0]))!r}")
            mean = parse_floats(a.mean or meta.get("ccq.mean") or derived[0], "mean", c)
            std = parse_floats(a.std or meta.get("ccq.std") or derived[1], "std", c)
        else:
            mean = parse_floats(a.mean or "0", "mean", c)
            std = parse_floats(a.std or "1", "std", c)
        name = a.name or meta.get("ccq.name") or os.path.splitext(os.path.basename(a.onnx_in))[0]
        write(a.out, name, conv.in_shape, mean, std, nodes, quant)
    except ConvertError as e:
        print(f"onnx2ccq: {a.onnx_in}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"onnx2ccq: {e.filename or a.onnx_in}: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # a graph the checks above did not foresee: one line, never a traceback
        print(f"onnx2ccq: {a.onnx_in}: cannot convert ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    kind = f"quantized (QDQ), input scale {quant[0]!r} zero point {quant[1]}" if quant else "float"
    print(f"onnx2ccq: wrote {a.out}: {len(nodes)} nodes, input {conv.in_shape}, {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
