#!/usr/bin/env python3
"""test_gptq.py DATA.h5 MODEL.h5: scripts/gptq.py does what GPTQ promises.

On the reference model quantized at 3 bits, with float layer inputs: every
layer's reconstruction error on the calibration inputs,
tr((W - sQ) H (W - sQ)^T), is no larger with GPTQ's levels than with
round-to-nearest; the levels stay on the b-bit grid; with --scale-search
every output channel's error is no larger than with the file's scales, the
scales chosen are fractions of the file's from the documented grid (and the
logits' scale follows the last layer's), and `ccq eval` runs the outputs of
every mode (valid quantized model files)."""
import os
import sys
import tempfile

import h5py
import numpy as np
import torch

from ccqtest import Checks, ccq_binary, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import gptq  # noqa: E402

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("gptq")
with tempfile.TemporaryDirectory() as d:
    rtn, out = os.path.join(d, "rtn.h5"), os.path.join(d, "gptq.h5")
    rc, so, se = run([ccq, "quantize", model, "--data", data, "--wbits", "3", "-o", rtn])
    t.check("quantize", rc == 0, se)
    script = os.path.join(os.path.dirname(gptq.__file__), "gptq.py")
    # --float-inputs: every layer's Hessian is the float model's, which this test recomputes
    rc, so, se = run([sys.executable, script, rtn, data, out, "--calib", "256", "--float-inputs"])
    t.check("gptq.py runs", rc == 0, se)
    ss = os.path.join(d, "ss.h5")
    rc, so, se = run([sys.executable, script, rtn, data, ss, "--calib", "256", "--float-inputs", "--scale-search"])
    t.check("gptq.py --scale-search runs", rc == 0, se)
    rc, so, se = run([ccq, "eval", ss, "--data", data, "--limit", "500"])
    t.check("ccq eval runs the scale-searched GPTQ model", rc == 0, se)
    seq = os.path.join(d, "seq.h5")
    rc, so, se = run([sys.executable, script, rtn, data, seq, "--calib", "256"])
    t.check("gptq.py (sequential, the default) runs", rc == 0, se)
    rc, so, se = run([ccq, "eval", seq, "--data", data, "--limit", "500"])
    t.check("ccq eval runs the sequential GPTQ model", rc == 0, se)
    net = gptq.load(rtn)
    with h5py.File(data, "r") as f:
        x = f["train/images"][:256]
    H = {}

    def capture(i, inp):
        X = gptq.rows(net["nodes"][i], inp)
        H[i] = H.get(i, 0) + X.T @ X

    gptq.float_forward(net, x, capture)
    with h5py.File(out, "r") as fo, h5py.File(ss, "r") as fs:
        for i, nd in enumerate(net["nodes"]):
            if nd["op"] not in ("conv2d", "linear"):
                continue
            W = nd["weight"].reshape(nd["weight"].shape[0], -1)
            s = nd["wscale"].view(-1, 1)
            q_rtn = nd["levels"].reshape(W.shape)
            q_g = torch.from_numpy(fo[f"nodes/{nd['key']}/levels"][...].astype(np.float64)).reshape(W.shape)
            err = lambda q: float(torch.trace((W - s * q) @ H[i] @ (W - s * q).T))  # noqa: E731
            t.check(f"node {i}: GPTQ error <= RTN error", err(q_g) <= err(q_rtn) * (1 + 1e-9),
                    f"{err(q_g):.4g} vs {err(q_rtn):.4g}")
            t.check(f"node {i}: levels on the 3-bit grid", float(q_g.abs().max()) <= 3)
            # scale search: per channel, never worse than the file's scales (1.0 is in the grid)
            s_s = torch.from_numpy(fs[f"nodes/{nd['key']}/wscale"][...].astype(np.float64)).view(-1, 1)
            q_s = torch.from_numpy(fs[f"nodes/{nd['key']}/levels"][...].astype(np.float64)).reshape(W.shape)
            e_s = gptq.row_error(W, q_s, s_s.view(-1), H[i])
            e_g = gptq.row_error(W, q_g, s.view(-1), H[i])
            t.check(f"node {i}: scale search no worse per channel",
                    bool((e_s <= e_g * (1 + 1e-9) + 1e-12).all()), f"{float((e_s - e_g).max()):.3g}")
            frac = (s_s / s).view(-1).numpy()
            t.check(f"node {i}: scales are grid fractions of the file's",
                    all(any(abs(v - f) < 1e-5 for f in gptq.SCALE_FACTORS) for v in frac), str(frac[:4]))
            t.check(f"node {i}: some scale moved", bool((frac < 1 - 1e-6).any()), str(frac[:4]))
            if i == net["output"]:
                s_in = float(net["nodes"][int(nd["inputs"][0])]["act_scale"])
                got = float(np.asarray(fs[f"nodes/{nd['key']}"].attrs["act_scale"]).reshape(-1)[0])
                t.check("logits scale = input scale x largest weight scale",
                        abs(got - s_in * float(s_s.max())) <= 1e-6 * got, f"{got} vs {s_in * float(s_s.max())}")
    rc, so, se = run([ccq, "eval", out, "--data", data, "--limit", "500"])
    t.check("ccq eval runs the GPTQ model", rc == 0, se)
t.finish()
