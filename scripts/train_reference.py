#!/usr/bin/env python3
"""train_reference.py: train ccq's reference float models on Fashion-MNIST.

  train_reference.py ARCH --data DATA.h5 --out MODEL.h5 [--epochs E] [--seed S]

Trains ARCH (lenet | resnet20, defined in ccq_torch.py) with a fixed seed and
a fixed recipe (SGD + Nesterov momentum 0.9, weight decay 5e-4, batch 128,
cosine learning rate from 0.1, random 2-pixel-shift crops and horizontal flips),
exports it through ONNX into a ccq model file, and writes a golden fixture
(PyTorch logits of the first 1,000 test images and predictions on the whole
test split) that the C tests compare against. The recipe and the measured test
accuracy go to stdout as one JSON line for results/reference_models.md.

It uses the CPU only, one process, no data-loader workers, so a run is
reproducible on the same machine and library versions.
"""
import argparse
import json
import os
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccq_torch as ct  # noqa: E402


def augment(x, gen):
    """Random shift by up to 2 pixels (zero padding, as a padded random crop) and horizontal flip."""
    n, _, h, w = x.shape
    xp = F.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (n,), generator=gen)
    dx = torch.randint(0, 5, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        t = xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = torch.flip(t, (2,)) if flip[i] else t
    return out


@torch.no_grad()
def predict(model, x, bs=1000):
    model.eval()
    return torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=sorted(ct.ARCHS))
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="ccq model file to write")
    ap.add_argument("--golden", required=True, help="golden fixture file to write")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--state", help="torch state_dict path: written after training; with --reuse-state, read instead of training")
    ap.add_argument("--reuse-state", action="store_true")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(a.seed)

    xtr_u8, ytr = ct.load_split(a.data, "train")
    xte_u8, yte = ct.load_split(a.data, "test")
    xtr = ct.normalise(xtr_u8, ct.FMNIST_MEAN, ct.FMNIST_STD)
    xte = ct.normalise(xte_u8, ct.FMNIST_MEAN, ct.FMNIST_STD)
    ytr, yte = torch.as_tensor(ytr), torch.as_tensor(yte)

    model = ct.ARCHS[a.arch]()
    params = sum(p.numel() for p in model.parameters())
    bs, lr, wd = 128, 0.1, 5e-4
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    steps = a.epochs * ((len(xtr) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15,
                                                anneal_strategy="cos", div_factor=10, final_div_factor=100)
    t0 = time.time()
    if a.reuse_state:
        model.load_state_dict(torch.load(a.state))
    for ep in range(0 if a.reuse_state else a.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot = 0.0
        for i in range(0, len(xtr), bs):
            idx = perm[i:i + bs]
            xb = augment(xtr[idx], gen)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            if (i // bs) % 100 == 99:
                print(f"{a.arch} epoch {ep + 1} step {i // bs + 1} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
        acc = (predict(model, xte).argmax(1) == yte).float().mean().item() * 100
        print(f"{a.arch} epoch {ep + 1}/{a.epochs} loss {tot / len(xtr):.4f} test {acc:.2f}% "
              f"({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)

    if a.state and not a.reuse_state:
        torch.save(model.state_dict(), a.state)
    model.eval()
    logits = predict(model, xte)
    pred = logits.argmax(1)
    acc = (pred == yte).float().mean().item() * 100
    ct.export_ccq(model, xte.shape[1:], a.out, ct.FMNIST_MEAN, ct.FMNIST_STD, a.arch)
    with h5py.File(a.golden, "w") as f:
        f.attrs["model"] = np.bytes_(a.arch)
        f.attrs["accuracy"] = np.float64(acc)
        f.create_dataset("logits", data=logits[:1000].numpy().astype(np.float32))
        f.create_dataset("predictions", data=pred.numpy().astype(np.int32))
    print(json.dumps({"arch": a.arch, "params": params, "epochs": a.epochs, "seed": a.seed,
                      "batch": bs, "optimizer": "SGD nesterov momentum 0.9", "weight_decay": wd,
                      "lr": "one-cycle cosine, peak 0.1, 15% warm-up", "augment": "shift<=2px + hflip",
                      "test_accuracy": round(acc, 2), "train_seconds": round(time.time() - t0, 1),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
