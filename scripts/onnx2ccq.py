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
                    if isinstance(v, str):
                        g.attrs[k] = np.bytes_(v)
                    elif isinstance(v, (np.floating, float)):
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
