#!/usr/bin/env python3
"""ste_finetune.py QUANT.h5 DATA.h5 OUT.h5 [--epochs E] [--steps N] [--batch B]
[--lr LR] [--schedule cosine|constant] [--warmup W] [--radius R]
[--init float|center] [--val-images V] [--eval-every K] [--seed S]
[--threads T] [--curve CURVE.json]: a short straight-through-estimator (STE)
fine-tune of the weight levels of a quantized ccq model file, in PyTorch: the
gradient-based baseline a user would otherwise pick, to compare with ccq's
gradient-free search on the same model, bits, data and labels
(scripts/ste_sweep.py runs it over a grid of learning rates and epochs).

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
and zero points (in the training forward half to even, torch.round, for
speed: it differs only on exact .5 ties; validation, the checkpoint's choice
and every reported figure use the exact simulation, half away from zero);
the file's biases (int32 at the accumulator's scale),
weight scales and activation scales fixed. Gradients pass straight through
every rounding (identity), are cut by the activations' clamps, and v is
clipped after each step to [lo - 0.5, hi + 0.5], so it never drifts beyond
the levels it can reach. Loss: cross-entropy with the labels, Adam on v
(its learning rate is in levels per step, the same for every layer whatever
its scale). The rate follows --schedule over the run's T steps (see lr_at):
cosine (default) lr_t = lr * 0.5 * (1 + cos(pi * t / T)) for the 0-based
step t, constant lr_t = lr; --warmup W replaces the first W steps' rates by
a linear ramp lr * (t + 1) / W, and the cosine then spans the other T - W.

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

--curve CURVE.json records the run for accuracy-against-time plots: the
settings and, at the start and at every validation point, a record
{step, epoch, seconds, lr, val_xent, val_acc, best_step, best_val_xent,
test_acc}: epoch = step / steps per epoch; seconds = the fine-tune's
wall-clock so far (training and validation passes only, as in the summary);
lr = the schedule's rate for the next step; val_xent and val_acc (a fraction)
of the current levels; best_step and best_val_xent of the checkpoint chosen
so far (the one OUT.h5 would hold if the run stopped here); test_acc (a
fraction) = the TEST split accuracy of that chosen checkpoint, measured by the
real engine: its levels written to a temporary model file by the same writer
as OUT.h5 and run by `ccq eval TMP.h5 --data DATA.h5 --json` (the binary:
$CCQ_BIN, else ROOT/build/ccq), re-measured only when the choice changed. The test
evaluations and the curve's writing are excluded from `seconds` and never
influence a choice (validation alone chooses). With --val-images 0 the
chosen checkpoint is the current levels and the val fields are null. The
file is rewritten atomically (CURVE.json.tmp, then renamed) at every record
and ends with "done": true.
"""
import argparse
import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
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


def keep_freed_memory():
    """glibc only (elsewhere a no-op): keep freed heap memory for reuse rather
    than hand it back to the kernel. Every step allocates and frees the same
    tens of MB of activations (the CPU tensors are not cached); glibc's
    defaults return them (large blocks are mmap'ed, the heap's top is
    trimmed), so each step page-faults them back in, a large share of a
    step's and of a validation pass's time. Sizes up to 32 MB (glibc's
    maximum) then come from the heap, whose top is never trimmed."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    mallopt(-1, 2 ** 31 - 1)  # M_TRIM_THRESHOLD: (almost) never


def lr_at(t, total, lr, schedule="cosine", warmup=0):
    """The learning rate of 0-based step t of a run of `total` steps: a linear
    warm-up lr * (t + 1) / warmup over the first `warmup` steps, then lr
    (constant) or lr * 0.5 * (1 + cos(pi * u)), u = (t - warmup) / (total -
    warmup) clipped to [0, 1] (cosine: lr at t = 0, lr / 2 half-way, 0 at
    t = total)."""
    if warmup > 0 and t < warmup:
        return lr * (t + 1) / warmup
    if schedule == "constant":
        return lr
    span = total - warmup
    u = 1.0 if span <= 0 else min(max((t - warmup) / span, 0.0), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * u))


def ccq_binary():
    """The ccq binary for test evaluations: $CCQ_BIN, else ROOT/build/ccq."""
    b = os.environ.get("CCQ_BIN") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "build", "ccq")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        die(f"{b}: no ccq binary (set CCQ_BIN or build ROOT/build/ccq); --curve needs it")
    return b


def write_levels(src, dst, lat, levels):
    """dst = a copy of the model file src with each latent node's levels
    replaced by levels[i], written atomically (dst.tmp, then renamed).
    Returns (levels changed, levels in total) against src. OSError on failure
    (no dst.tmp left)."""
    tmp = dst + ".tmp"
    changed = total = 0
    try:
        shutil.copy(src, tmp)
        with h5py.File(tmp, "r+") as f:
            for i, L in lat.items():
                d = f[f"nodes/{L.key}/levels"]
                old = d[...]
                new = levels[i].numpy().astype(np.int8).reshape(old.shape)
                changed += int((new != old).sum())
                total += new.size
                d[...] = new
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return changed, total


def write_json(path, obj):
    """Atomically: path.tmp, then renamed."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def test_accuracy(ccq, model, data):
    """The engine's accuracy (a fraction) on the test split."""
    p = subprocess.run([ccq, "eval", model, "--data", data, "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines()
        die(f"{ccq} eval {model}: failed ({lines[-1] if lines else f'exit {p.returncode}'})")
    r = json.loads(p.stdout)
    return r["correct"] / r["images"]


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


class SteRequant(torch.autograd.Function):
    """The training forward's requantization s * clamp(round(y / s), lo, hi)
    (ccq_sim.run's fq), on two temporaries. It rounds half to even
    (torch.round), unlike the engine's half away from zero only on exact .5
    ties: the training forward only, never validation or a reported figure.
    Backward: straight through the rounding, cut by the clamp (gradient *
    [lo <= round(y / s) <= hi], inclusive, as torch.clamp's); only that mask
    is saved, as float32 (a boolean one costs more than it saves: converting
    it and torch.where are slow on the CPU)."""

    @staticmethod
    def forward(ctx, y, s, lo, hi):
        t = torch.div(y, s)
        t.round_()
        c = t.clamp(lo, hi)
        ctx.save_for_backward(torch.eq(c, t, out=t))  # the mask, 1.0 or 0.0, over t
        return c.mul_(s)

    @staticmethod
    def backward(ctx, g):
        m, = ctx.saved_tensors
        return g * m, None, None, None


class SteWeight(torch.autograd.Function):
    """A latent's weight s * clamp(round(v), lo, hi), rounding half away from
    zero (exactly the levels written); backward straight through the rounding,
    cut by the clamp: where(lo <= round(v) <= hi, gradient * s, 0)."""

    @staticmethod
    def forward(ctx, v, lo, hi, s):
        r = ccq_sim._round(v)
        m = r.ge(lo)
        m.logical_and_(r.le(hi))
        ctx.save_for_backward(m, s)
        return torch.clamp(r, lo, hi).mul_(s)

    @staticmethod
    def backward(ctx, g):
        m, s = ctx.saved_tensors
        return torch.where(m, g * s, 0.0), None, None, None


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
        self.vlo, self.vhi = self.lo - 0.5, self.hi + 0.5  # clip()'s bounds

    def levels(self):
        return torch.clamp(ccq_sim._round(self.v.detach()), self.lo, self.hi)

    def weight(self, ste=True):
        return SteWeight.apply(self.v, self.lo, self.hi, self.s) if ste else self.levels() * self.s

    def clip(self):
        with torch.no_grad():
            self.v.clamp_(self.vlo, self.vhi)


def _cache(net, train):
    """ccq_sim.run's cache of the net's constant tensors, kept in the net,
    apart for training and for validation (whose are made in inference mode,
    which autograd cannot save)."""
    return net.setdefault("ste_cache_train" if train else "ste_cache_eval", {})


def forward(net, lat, x, train, weights=None):
    """The quantized forward of uint8 images x in float32: train=True the
    straight-through one (SteWeight, SteRequant: torch.round, implicit conv
    padding), else the exact simulation (ccq_sim.run's, the levels'
    weights; weights, if given, are those)."""
    if train:
        w = {i: L.weight() for i, L in lat.items()}
        return ccq_sim.run(net, x, weights=w, fq=SteRequant.apply, dtype=torch.float32, tensor=True,
                           cache=_cache(net, True))
    w = weights if weights is not None else {i: L.weight(ste=False) for i, L in lat.items()}
    return ccq_sim.run(net, x, weights=w, dtype=torch.float32, tensor=True, cache=_cache(net, False))


def train_step(net, lat, opt, x, y, lr):
    """One optimizer step on uint8 images x with labels y (int64 numpy) at
    learning rate lr; v clipped after it."""
    logits = forward(net, lat, x, train=True)
    loss = F.cross_entropy(logits, torch.from_numpy(y))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    for L in lat.values():
        L.clip()


def evaluate(net, lat, x, y, batch=500):
    """Mean cross-entropy and accuracy (%) of the quantized forward."""
    loss, correct = 0.0, 0
    with torch.inference_mode():
        w = {i: L.weight(ste=False) for i, L in lat.items()}
        for j in range(0, len(x), batch):
            logits = forward(net, lat, x[j:j + batch], train=False, weights=w)
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
                    help="Adam's peak learning rate, in levels (latent weights / their scale) per step; "
                         "default 0.01")
    ap.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                    help="learning rate over the run's steps: cosine from lr to 0 (default) or constant")
    ap.add_argument("--warmup", type=int, default=0,
                    help="linear warm-up steps before the schedule (default 0)")
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
    ap.add_argument("--curve", default=None,
                    help="write a JSON curve: validation and the chosen checkpoint's test accuracy "
                         "(ccq eval) against wall-clock")
    a = ap.parse_args()
    if (a.batch < 1 or a.radius < 0 or a.val_images < 0 or (a.steps is not None and a.steps < 0) or a.epochs < 0
            or a.warmup < 0 or a.lr < 0):
        die("--batch must be >= 1; --radius, --val-images, --steps, --epochs, --warmup and --lr >= 0")
    ccq = ccq_binary() if a.curve else None
    keep_freed_memory()
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
    opt = torch.optim.Adam([L.v for L in lat.values()], lr=lr_at(0, steps, a.lr, a.schedule, a.warmup))
    rng = np.random.default_rng(a.seed)

    best = None  # (val loss, val acc, step, {node: levels})
    start_val = None
    curve = None
    if a.curve:
        curve = {"start": a.qmodel, "data": a.data, "out": a.out, "steps": steps, "steps_per_epoch": per_epoch,
                 "epochs": steps / per_epoch, "batch": a.batch, "lr": a.lr, "schedule": a.schedule,
                 "warmup": a.warmup, "radius": a.radius, "init": a.init, "val_images": a.val_images,
                 "train_images": ntr, "seed": a.seed, "threads": torch.get_num_threads(), "ccq": ccq,
                 "done": False, "records": []}
        tmpdir = tempfile.TemporaryDirectory(prefix="ste_curve_")
        tmp_model = os.path.join(tmpdir.name, "chosen.h5")
    test = {"step": None, "acc": None}  # the chosen checkpoint's last measured test accuracy

    def record(step, vl, va, secs):
        """One curve record; its cost is excluded from the clock by the caller."""
        if best[2] != test["step"]:
            try:
                write_levels(a.qmodel, tmp_model, lat, best[3])
            except OSError as e:
                die(f"{tmp_model}: cannot write ({e})")
            test["step"], test["acc"] = best[2], test_accuracy(ccq, tmp_model, a.data)
        nan = lambda v: None if v is None or math.isnan(v) else v  # noqa: E731  (JSON has no NaN)
        curve["records"].append({
            "step": step, "epoch": step / per_epoch, "seconds": secs,
            "lr": lr_at(step, steps, a.lr, a.schedule, a.warmup),
            "val_xent": nan(vl), "val_acc": None if va is None else round(va / 100.0, 10),
            "best_step": best[2], "best_val_xent": nan(best[0]), "test_acc": test["acc"]})
        try:
            write_json(a.curve, curve)
        except OSError as e:
            die(f"{a.curve}: cannot write ({e})")

    clock = {"secs": 0.0, "since": time.perf_counter()}  # the fine-tune's own time, bookkeeping excluded

    def checkpoint(step):
        nonlocal best, start_val
        vl = va = None
        if a.val_images == 0:
            # no validation: the current levels are the choice (the last step's, in the end)
            if step == steps or curve is not None:
                best = (float("nan"), float("nan"), step, {i: L.levels() for i, L in lat.items()})
        else:
            vl, va = evaluate(net, lat, xv, yv)
            if start_val is None:
                start_val = (vl, va)
            if best is None or vl < best[0]:
                best = (vl, va, step, {i: L.levels() for i, L in lat.items()})
        if curve is not None:
            now = time.perf_counter()
            clock["secs"] += now - clock["since"]
            record(step, vl, va, clock["secs"])
            clock["since"] = time.perf_counter()

    checkpoint(0)
    order, pos = rng.permutation(ntr), 0
    for step in range(1, steps + 1):
        if pos >= ntr:
            order, pos = rng.permutation(ntr), 0
        idx = np.sort(order[pos:pos + a.batch])  # sorted: cheaper gathers, same batch
        pos += a.batch
        train_step(net, lat, opt, x[idx], y[idx], lr_at(step - 1, steps, a.lr, a.schedule, a.warmup))
        if step % every == 0 or step == steps:
            checkpoint(step)
    secs = clock["secs"] + time.perf_counter() - clock["since"]

    try:
        changed, total = write_levels(a.qmodel, a.out, lat, best[3])
    except OSError as e:
        die(f"{a.out}: cannot write ({e})")
    if curve is not None:
        curve["done"] = True
        curve["seconds"] = secs
        curve["levels_changed"], curve["levels"] = changed, total
        try:
            write_json(a.curve, curve)
        except OSError as e:
            die(f"{a.curve}: cannot write ({e})")
        tmpdir.cleanup()
    if a.val_images:
        val = (f"val ({a.val_images} held-out train images) CE {best[0]:.4f} acc {best[1]:.2f}% at step {best[2]} "
               f"(start CE {start_val[0]:.4f} acc {start_val[1]:.2f}%)")
    else:
        val = "no validation (last step kept)"
    test_s = f"; test acc (ccq eval) {100 * test['acc']:.2f}%" if curve is not None else ""
    print(f"ste_finetune: wrote {a.out}: {steps} steps (batch {a.batch}, lr {a.lr:g} {a.schedule}"
          f"{f', warmup {a.warmup}' if a.warmup else ''}, radius {a.radius}, init {a.init}) in {secs:.1f} s; "
          f"{val}; {changed} of {total} levels changed{test_s}")


if __name__ == "__main__":
    sys.exit(main())
