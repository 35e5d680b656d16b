#!/usr/bin/env python3
"""ste_finetune.py QUANT.h5 DATA.h5 OUT.h5 [--epochs E] [--steps N] [--batch B]
[--lr LR] [--radius R] [--init float|center] [--val-images V]
[--eval-every K] [--seed S] [--threads T]: a short straight-through-estimator (STE) fine-tune of the
weight levels of a quantized ccq model file, in PyTorch: the gradient-based
baseline a user would otherwise pick, to compare with ccq's gradient-free
search on the same model, bits, data and labels.

Every conv2d/linear node gets a latent float tensor v in units of its
per-channel scale (w = s * v) which starts inside the bin of the file's level
(so the first forward is exactly the input file's network): by default
(--init float) at the file's float weight / s, clipped into the start
level's bin [start - 0.499, start + 0.499] (for a round-to-nearest file that
is the float weight itself, QAT's usual start); --init center puts it at the
level itself (levels * wscale), where Adam, whose first steps move every
coordinate by about lr whatever its gradient, flips whole blocks of levels in
the same step and wrecks a 2-bit network. The forward
is the integer network's, as scripts/ccq_sim.py simulates it (ccq_sim.run
with the weights replaced and float32 arithmetic): levels
q = clamp(round(v), lo, hi), rounding half away from zero, with [lo, hi] the
b-bit symmetric grid [-qmax, qmax] (qmax = 2^(b-1) - 1) intersected with
[start - R, start + R] (as ccq's search.radius; R = 0: the whole grid); every
requantizing activation rounded onto its uint8 grid with the file's scales
and zero points; the file's biases (int32 at the accumulator's scale),
weight scales and activation scales fixed. Gradients pass straight through
every rounding (identity), are cut by the activations' clamps, and v is
clipped after each step to [lo - 0.5, hi + 0.5], so it never drifts beyond
the levels it can reach. Loss: cross-entropy with the labels, Adam on v
(its learning rate is in levels per step, the same for every layer whatever
its scale).

The LAST --val-images images of the train split are held out (not trained
on); the fine-tune trains on the rest, in a seeded random order, and
evaluates the validation cross-entropy of the quantized forward at the start,
every --eval-every steps (default: each epoch's end) and at the last step;
the levels of the checkpoint with the lowest validation cross-entropy (the
start included, so the output is never worse there) are written: OUT.h5 is a
copy of QUANT.h5 with new levels, written atomically (OUT.h5.tmp, then
renamed). One summary line reports the steps, the wall-clock seconds of the
fine-tune (training and validation passes, not loading or writing), the
chosen checkpoint's validation figures and how many levels changed.
"""
import argparse
import math
import os
import shutil
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccq_sim  # noqa: E402


def die(msg):
    print(f"ste_finetune: {msg}", file=sys.stderr)
    sys.exit(1)


def load(path):
    if not os.path.isfile(path):
        die(f"{path}: no such file")
    try:
        return ccq_sim.load(path)
    except ValueError:
        die(f"{path}: not a quantized ccq model (make one with ccq quantize)")
    except (OSError, KeyError) as e:
        die(f"{path}: cannot read a quantized ccq model ({e.__class__.__name__}: {e})")


def load_data(path):
    if not os.path.isfile(path):
        die(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            return f["train/images"][...], f["train/labels"][...].astype(np.int64)
    except (OSError, KeyError) as e:
        die(f"{path}: cannot read train/images and train/labels ({e.__class__.__name__}: {e})")


def ste_round(v):
    """Half away from zero forward, identity backward."""
    return v + (ccq_sim._round(v) - v).detach()


class Latent:
    """The trainable weights of one conv2d/linear node, in levels."""

    def __init__(self, nd, radius, init="float"):
        self.key = nd["key"]
        start = nd["levels"].to(torch.float32)
        qmax = (1 << (int(nd["bits"]) - 1)) - 1
        self.lo = torch.full_like(start, -qmax)
        self.hi = torch.full_like(start, qmax)
        if radius > 0:
            self.lo = torch.maximum(self.lo, start - radius)
            self.hi = torch.minimum(self.hi, start + radius)
        self.start = start
        self.s = nd["wscale"].to(torch.float32).view(-1, *([1] * (start.dim() - 1)))
        if init == "float" and "weight" in nd:
            # the float weight's place, clipped into the start level's bin: round(v) == start
            v = torch.clamp(nd["weight"].to(torch.float32) / self.s, start - 0.499, start + 0.499)
        else:
            v = start.clone()
        self.v = v.requires_grad_(True)

    def levels(self):
        return torch.clamp(ccq_sim._round(self.v.detach()), self.lo, self.hi)

    def weight(self, ste=True):
        q = torch.clamp(ste_round(self.v), self.lo, self.hi) if ste else self.levels()
        return q * self.s

    def clip(self):
        with torch.no_grad():
            self.v.copy_(torch.clamp(self.v, self.lo - 0.5, self.hi + 0.5))


def forward(net, lat, x, train):
    w = {i: L.weight(ste=train) for i, L in lat.items()}
    return ccq_sim.run(net, x, weights=w, rnd=ste_round if train else ccq_sim._round,
                       dtype=torch.float32, tensor=True)


def evaluate(net, lat, x, y, batch=500):
    """Mean cross-entropy and accuracy (%) of the quantized forward."""
    loss, correct = 0.0, 0
    with torch.no_grad():
        for j in range(0, len(x), batch):
            logits = forward(net, lat, x[j:j + batch], train=False)
            t = torch.from_numpy(y[j:j + batch])
            loss += float(F.cross_entropy(logits, t, reduction="sum"))
            correct += int((logits.argmax(1) == t).sum())
    return loss / len(x), 100.0 * correct / len(x)


def main():
    ap = argparse.ArgumentParser(description="STE fine-tune of the levels of a quantized ccq model file.")
    ap.add_argument("qmodel")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the training images (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps; overrides --epochs (0: copy)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01,
                    help="Adam learning rate, in levels (latent weights / their scale) per step; default 0.01")
    ap.add_argument("--radius", type=int, default=1,
                    help="each level stays within +-R of its start (clipped to the grid); 0: the whole grid")
    ap.add_argument("--init", choices=("float", "center"), default="float",
                    help="latent start: the float weight clipped into the start level's bin (default) or the "
                         "level itself")
    ap.add_argument("--val-images", type=int, default=5000,
                    help="the last V images of the train split, held out to choose the checkpoint (0: none, "
                         "the last step's levels are kept)")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="validation every K steps (default 0: at the end of each epoch); always at the last step")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (default 0: all cores)")
    a = ap.parse_args()
    if a.batch < 1 or a.radius < 0 or a.val_images < 0 or (a.steps is not None and a.steps < 0) or a.epochs < 0:
        die("--batch must be >= 1; --radius, --val-images, --steps and --epochs >= 0")
    torch.set_num_threads(a.threads if a.threads > 0 else max(1, os.cpu_count() or 1))
    torch.manual_seed(a.seed)
    net = load(a.qmodel)
    x, y = load_data(a.data)
    if a.val_images >= len(x):
        die(f"{a.data}: --val-images {a.val_images} leaves no training images of {len(x)}")
    ntr = len(x) - a.val_images
    xv, yv = x[ntr:], y[ntr:]
    per_epoch = math.ceil(ntr / a.batch)
    steps = a.steps if a.steps is not None else int(round(a.epochs * per_epoch))
    every = a.eval_every if a.eval_every > 0 else per_epoch

    lat = {i: Latent(nd, a.radius, a.init) for i, nd in enumerate(net["nodes"]) if nd["op"] in ("conv2d", "linear")}
    opt = torch.optim.Adam([L.v for L in lat.values()], lr=a.lr)
    rng = np.random.default_rng(a.seed)

    t0 = time.perf_counter()
    best = None  # (val loss, val acc, step, {node: levels})
    start_val = None

    def checkpoint(step):
        nonlocal best, start_val
        if a.val_images == 0:
            if step == steps:
                best = (float("nan"), float("nan"), step, {i: L.levels() for i, L in lat.items()})
            return
        vl, va = evaluate(net, lat, xv, yv)
        if start_val is None:
            start_val = (vl, va)
        if best is None or vl < best[0]:
            best = (vl, va, step, {i: L.levels() for i, L in lat.items()})

    checkpoint(0)
    order, pos = rng.permutation(ntr), 0
    for step in range(1, steps + 1):
        if pos >= ntr:
            order, pos = rng.permutation(ntr), 0
        idx = np.sort(order[pos:pos + a.batch])  # sorted: cheaper gathers, same batch
        pos += a.batch
        logits = forward(net, lat, x[idx], train=True)
        loss = F.cross_entropy(logits, torch.from_numpy(y[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for L in lat.values():
            L.clip()
        if step % every == 0 or step == steps:
            checkpoint(step)
    secs = time.perf_counter() - t0

    tmp = a.out + ".tmp"
    changed = total = 0
    try:
        shutil.copy(a.qmodel, tmp)
        with h5py.File(tmp, "r+") as f:
            for i, L in lat.items():
                d = f[f"nodes/{L.key}/levels"]
                old = d[...]
                new = best[3][i].numpy().astype(np.int8).reshape(old.shape)
                changed += int((new != old).sum())
                total += new.size
                d[...] = new
        os.replace(tmp, a.out)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            die(f"{a.out}: cannot write ({e})")
        raise
    if a.val_images:
        val = (f"val ({a.val_images} held-out train images) CE {best[0]:.4f} acc {best[1]:.2f}% at step {best[2]} "
               f"(start CE {start_val[0]:.4f} acc {start_val[1]:.2f}%)")
    else:
        val = "no validation (last step kept)"
    print(f"ste_finetune: wrote {a.out}: {steps} steps (batch {a.batch}, lr {a.lr:g}, radius {a.radius}, "
          f"init {a.init}) in {secs:.1f} s; {val}; {changed} of {total} levels changed")


if __name__ == "__main__":
    sys.exit(main())
